"""What travels with MMoE weights to the Hub, and the one commit that every way of publishing ends in.

- :data:`COMPANION_FILES`: the files of an ``mmoe-train`` output folder that belong with the weights (model card,
  plots, reports, tokenizer/processor). ``model.push_to_hub`` of a model loaded from such a folder adds them to
  what it saves (:func:`copy_companion_files`); ``save_pretrained`` alone does not, so a model trained further
  never carries results that are not its own; :data:`mmoe.hub_cards.publish.UPLOAD_ALLOWLIST` is built from this tuple.
- :func:`commit_folder`: one ``HfApi.create_commit`` of a folder's files, the ``tags`` added to the metadata of the
  uploaded ``README.md``. ``model.push_to_hub`` (through :func:`push_to_hub`) and
  :func:`mmoe.hub_cards.push_output_dir` (``mmoe-train --push_to_hub``, ``mmoe-card --push_to_hub``) both end here.
- :func:`push_to_hub`: what ``model.push_to_hub`` runs when ``mmoe`` is installed. ``mmoe/__init__.py`` registers it
  as ``MMoEPreTrainedModel.hub_publisher``.

This module is not remote code: ``modeling_mmoe.py`` never imports it (remote code imports only torch,
transformers, peft and its siblings, and holds no publishing logic). It uses ``huggingface_hub``'s public API only.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, metadata_load, metadata_save

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
"""The run's results; a folder holding it is an ``mmoe-train`` output folder (the pipeline writes it last)."""
RUN_FILE = "mmoe_run.json"
TRAINING_LOGS_FILE = "mmoe_training_logs.json"
DEFAULT_COMMIT_MESSAGE = "Upload MMoE model"

COMPANION_FILES: tuple[str, ...] = (
    # tokenizer / processor
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "sentencepiece*.model",
    "spiece.model", "*processor_config.json", "preprocessor_config.json", "chat_template*",
    # model card, plots and the run's reports
    CARD_FILE, "*.png", EVAL_RESULTS_FILE, RUN_FILE, TRAINING_LOGS_FILE,
)
"""``glob`` patterns of the root files of an ``mmoe-train`` output folder that go with the weights: what
``model.push_to_hub`` adds from the folder a model was loaded from, and part of the upload allowlist."""


def companion_files(folder: str | os.PathLike | None) -> list[Path]:
    """The :data:`COMPANION_FILES` of ``folder`` when it is an ``mmoe-train`` output folder (it holds
    ``eval_results.json``); otherwise (a Hub id, a plain checkpoint, ``None``) none."""
    if not folder or not (Path(folder) / EVAL_RESULTS_FILE).is_file():
        return []
    return sorted({path for pattern in COMPANION_FILES for path in Path(folder).glob(pattern) if path.is_file()})


def copy_companion_files(source: str | os.PathLike | None, target: str | os.PathLike) -> list[str]:
    """Copy the :func:`companion_files` of ``source`` into ``target`` (unless they are the same folder); return
    their names. A card already in ``target`` (peft writes one for the adapters) is replaced by the run's."""
    files = companion_files(source)
    if not files or Path(source).resolve() == Path(target).resolve():
        return []
    for path in files:
        shutil.copy2(path, Path(target) / path.name)
    return [path.name for path in files]


def _tagged_card(card: Path, tags: list[str], staging: Path) -> Path:
    """A copy of ``card`` in ``staging`` with ``tags`` added to its metadata; the Markdown body is kept as is."""
    metadata = metadata_load(card) or {}
    existing = metadata.get("tags") or []
    metadata["tags"] = list(dict.fromkeys([*([existing] if isinstance(existing, str) else existing), *tags]))
    copy = staging / CARD_FILE
    shutil.copy2(card, copy)
    metadata_save(copy, metadata)
    return copy


def commit_folder(
    folder: str | os.PathLike,
    repo_id: str,
    files: list[str] | None = None,
    *,
    tags: list[str] | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
) -> CommitInfo:
    """Upload ``files`` of ``folder`` (paths relative to it; ``None``: every file under it) to the existing
    repository ``repo_id`` as a single commit, through :meth:`huggingface_hub.HfApi.create_commit`.

    ``tags`` are added to the metadata of the uploaded ``README.md`` (a copy: the folder is not modified), next to
    the tags it already has. ``revision`` is created from the default branch when missing (unless ``create_pr``).
    """
    folder = Path(folder)
    if files is None:
        files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    api = HfApi(token=token)
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    if tags and CARD_FILE not in files:
        logger.warning("Not adding the tags %s: %s has no %s to carry them.", tags, folder, CARD_FILE)
    with tempfile.TemporaryDirectory(prefix="mmoe-card-") as staging:
        operations = []
        for name in files:
            path = folder / name
            if name == CARD_FILE and tags:
                path = _tagged_card(path, list(tags), Path(staging))
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)))
        return api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
            commit_description=commit_description,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
        )


def push_saved_model(
    model: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: bool | str | None = None,
    max_shard_size: int | str | None = "50GB",
    **commit_kwargs: Any,
) -> CommitInfo:
    """Create ``repo_id`` if needed, ``model.save_pretrained`` into a temporary folder and :func:`commit_folder`
    everything it wrote (``commit_kwargs``: ``tags``, ``revision``, ``create_pr``, ``commit_message``,
    ``commit_description``)."""
    repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    with tempfile.TemporaryDirectory(prefix="mmoe-push-") as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        # The run's card, plots and reports travel with the pushed weights; save_pretrained itself never copies them,
        # so a model trained further and saved elsewhere does not carry results that are no longer its own.
        copy_companion_files(model.name_or_path, folder)  # after peft, whose adapter card it replaces
        return commit_folder(folder, repo_id, token=token, **commit_kwargs)


def push_to_hub(model: Any, repo_id: str, *, tags: list[str] | None = None, **push_kwargs: Any) -> Any:
    """``model.push_to_hub`` with ``mmoe`` installed (the ``MMoEPreTrainedModel.hub_publisher``).

    A model loaded from an ``mmoe-train`` output folder whose card is there is pushed by :func:`push_saved_model`:
    weights, adapters, remote code and that folder's card, plots and reports in one commit, ``tags`` (and the
    model's ``model_tags``) added to the card's metadata. Any other model is pushed by transformers'
    ``PreTrainedModel.push_to_hub`` (its card is the repository's or a generic one, with the tags).
    ``push_kwargs``: the other arguments of ``PreTrainedModel.push_to_hub``.
    """
    if not any(path.name == CARD_FILE for path in companion_files(model.name_or_path)):
        from transformers import PreTrainedModel

        return PreTrainedModel.push_to_hub(model, repo_id, tags=tags or [], **push_kwargs)
    tags = list(dict.fromkeys([*(getattr(model, "model_tags", None) or []), *(tags or [])]))
    return push_saved_model(model, repo_id, tags=tags, **push_kwargs)
