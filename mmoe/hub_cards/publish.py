"""Upload a finished MMoE output folder to the Hugging Face Hub in one commit.

Exactly the files the model, its tokenizer or processor and the run wrote travel, by exact name (no globs, so a
``tokenizer_credentials.env`` or ``private_other_model.safetensors`` stays local): ``config.json``, the weights
(``model.safetensors``, or the index and the shards it names), ``generation_config.json``, the remote code
(derived from the package's relative imports, :func:`mmoe.hub_utils.package_remote_code_files`), the peft adapter
folders of a referenced backbone, the tokenizer/processor files, ``README.md``, the card's plots and the run's
JSON reports. Symlinks never travel, whatever their name. Any other root file (a ``secrets.env``, notes, a stray
script) stays local and is named in a warning. Other sub-folders stay local: the pipeline's stage folders
(``baseline/``, ``experts/``, ``router/``, ``categorize/``), per-seed runs (``seed-*/``), ``checkpoint-*/`` and
``runs/``. The selection is :func:`mmoe.hub_utils.upload_files`, which ``model.push_to_hub`` uses too.

The commit is made by :func:`mmoe.hub_utils.commit_folder`, the function ``model.push_to_hub`` ends in too: one
:meth:`huggingface_hub.HfApi.create_commit` with the full operation list (``upload_folder`` may split large folders
into several commits when ``hf_xet`` is installed), the tags added to the uploaded card's metadata.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi

from ..hub_utils import (
    COMPANION_FILES,
    DEFAULT_COMMIT_MESSAGE,
    DEFAULT_IGNORE_PATTERNS,
    MODEL_FILES,
    adapter_files,
    commit_folder,
    package_remote_code_files,
    remote_code_files,
    upload_files,
)
from .card_data import CONFIG_FILE, MMoEModelCardData
from .model_card import CARD_FILE, is_generated_card, write_model_card

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "UPLOAD_ALLOWLIST",
    "expert_adapter_files",
    "files_to_upload",
    "push_output_dir",
    "remote_code_files",
]

UPLOAD_ALLOWLIST: tuple[str, ...] = (
    # the model's own files, and the remote code derived from the package's relative imports
    *MODEL_FILES, *package_remote_code_files(),
    # tokenizer / processor, model card, plots and the run's reports: what save_pretrained carries along too
    *COMPANION_FILES,
)
"""Exact names (not patterns) of the root files that may be published. Per folder, the shards named by
``model.safetensors.index.json``, the modules named in the folder's ``auto_map`` (and what they import
relatively) and the adapter folders of a referenced backbone are added (:func:`mmoe.hub_utils.upload_files`).
The tokenizer, card, plot and report names are :data:`mmoe.hub_utils.COMPANION_FILES`, the files
``model.push_to_hub`` adds from the folder a model was loaded from: ``model.push_to_hub`` of such a model sends the
same files."""

expert_adapter_files = adapter_files
"""The adapter folders' files of a referenced backbone (:func:`mmoe.hub_utils.adapter_files`)."""


def files_to_upload(output_dir: str | Path, ignore_patterns: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Sorted paths (relative to ``output_dir``) of the files :func:`push_output_dir` sends: exactly those the
    model, its tokenizer or processor and the run wrote (:func:`mmoe.hub_utils.upload_files`), never a symlink.

    Any other root file is left out with a warning naming it (hidden and temporary files, and ``ignore_patterns``,
    silently).

    Args:
        output_dir: the folder to publish.
        ignore_patterns: extra ``fnmatch`` patterns to leave out (added to :data:`DEFAULT_IGNORE_PATTERNS`).
    """
    return upload_files(output_dir, ignore_patterns)


def push_output_dir(
    output_dir: str | Path,
    repo_id: str,
    private: bool | None = False,
    token: str | None = None,
    commit_message: str | None = DEFAULT_COMMIT_MESSAGE,
    revision: str | None = None,
    ignore_patterns: list[str] | None = None,
    update_card: bool = True,
    create_pr: bool = False,
    commit_description: str | None = None,
    card_data: MMoEModelCardData | None = None,
    tags: list[str] | None = None,
) -> CommitInfo:
    """Create ``repo_id`` if needed and upload exactly the files of :func:`files_to_upload` as a single commit.

    Only the files the model, its tokenizer/processor and the run wrote travel, by exact name and never as a
    symlink; other root files are skipped with a warning naming them. ``mmoe-train --push_to_hub`` and
    ``mmoe-card --push_to_hub`` call this; the commit is :func:`mmoe.hub_utils.commit_folder`'s, as for
    ``model.push_to_hub``.

    Args:
        output_dir: a pipeline output folder (``config.json`` + weights at its root).
        repo_id: ``"org/name"`` (or ``"name"`` for the token owner's namespace).
        private: create the repository as private (ignored when it already exists; ``None``: the account's
            default visibility).
        token: a Hub token; ``None`` lets ``huggingface_hub`` use ``HF_TOKEN`` or the ``hf auth login`` token.
        commit_message: message of the commit.
        revision: branch to push to; created from the default branch when missing.
        ignore_patterns: extra ``fnmatch`` patterns of root files to leave out.
        update_card: regenerate ``README.md`` and the plots first, so the usage snippet names ``repo_id``.
            A hand-written README (one without the generator's marker) is never overwritten.
        create_pr: open a pull request instead of committing to the branch.
        commit_description: longer description of the commit.
        card_data: extra card data for the regenerated card; the folder's files fill the rest.
        tags: Hub tags added to the metadata of the uploaded card, next to those it has (the card in the folder
            is not modified).

    Returns:
        The :class:`huggingface_hub.CommitInfo` of the commit.
    """
    output_dir = Path(output_dir)
    if not (output_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"push_output_dir: {output_dir} has no {CONFIG_FILE}; pass the folder the model was saved to "
            "(the pipeline's --output_dir)."
        )
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    card_path = output_dir / CARD_FILE
    if update_card and (not card_path.exists() or is_generated_card(card_path)):
        write_model_card(output_dir, card_data=card_data, model_id=repo_id)
    return commit_folder(
        output_dir,
        repo_id,
        files_to_upload(output_dir, ignore_patterns),
        tags=tags,
        token=token,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        commit_description=commit_description,
    )

