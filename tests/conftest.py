"""Shared fixtures: tiny backbones written to disk once per test session (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, RepoUrl

from mmoe.testing import save_tiny_backbone

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def private_fingerprint_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stage fingerprints cache file hashes under ``$XDG_CACHE_HOME/mmoe``: the suite keeps its own, never the
    user's ``~/.cache``."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_backbone_dirs(tiny_bert_dir: Path, tiny_qwen2_dir: Path) -> dict[str, Path]:
    return {"bert": tiny_bert_dir, "qwen2": tiny_qwen2_dir}


@pytest.fixture
def captured_hub(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Intercept the Hub API boundary: repo creation, branch creation and commits are recorded, not sent."""
    calls: dict[str, list[dict[str, Any]]] = {"create_repo": [], "create_branch": [], "create_commit": []}

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> RepoUrl:
        calls["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self: HfApi, repo_id: str, **kwargs: Any) -> None:
        calls["create_branch"].append({"repo_id": repo_id, **kwargs})

    def create_commit(self: HfApi, repo_id: str, operations: Any, **kwargs: Any) -> CommitInfo:
        operations = list(operations)
        cards = [Path(op.path_or_fileobj).read_text() for op in operations if op.path_in_repo == "README.md"]
        calls["create_commit"].append({"repo_id": repo_id, "operations": operations, "cards": cards, **kwargs})
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}",
            commit_message=kwargs.get("commit_message", ""),
            commit_description="",
            oid="0" * 40,
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls
