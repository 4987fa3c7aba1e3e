"""Shared fixtures: tiny backbones written to disk once per test session (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmoe.testing import save_tiny_backbone

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2")


@pytest.fixture(scope="session")
def tiny_backbone_dirs(tiny_bert_dir: Path, tiny_qwen2_dir: Path) -> dict[str, Path]:
    return {"bert": tiny_bert_dir, "qwen2": tiny_qwen2_dir}
