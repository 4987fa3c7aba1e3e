"""Upload a finished MMoE output folder to the Hugging Face Hub in one commit.

Only the folder's root files travel: weights, ``config.json``, the remote code (``configuration_mmoe.py``,
``modeling_mmoe.py``, ...), tokenizer/processor files, ``README.md``, the PNG plots and the run's JSON reports.
Sub-folders stay local: the pipeline's stage folders (``baseline/``, ``experts/``, ``router/``, ``categorize/``),
per-seed runs (``seed-*/``), ``checkpoint-*/`` and ``runs/``.

The commit goes through :meth:`huggingface_hub.HfApi.create_commit` with the full operation list, so it is one
commit whatever uploader ``huggingface_hub`` picks (its ``upload_folder`` may split large folders into several
commits when ``hf_xet`` is installed).
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

from .card_data import CONFIG_FILE, MMoEModelCardData
from .model_card import CARD_FILE, is_generated_card, write_model_card

DEFAULT_COMMIT_MESSAGE = "Upload MMoE model"
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (".*", "*.tmp", "*.lock", "*.pyc")
"""Root files never uploaded (hidden and temporary files). Sub-folders are never uploaded at all: the pipeline's
stage folders (``baseline/``, ``experts/``, ``router/``, ``categorize/``), per-seed runs (``seed-*/``),
``checkpoint-*/`` and ``runs/`` are intermediate outputs."""


def files_to_upload(output_dir: str | Path, ignore_patterns: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Sorted names of the root files of ``output_dir`` that :func:`push_output_dir` sends.

    Args:
        output_dir: the folder to publish.
        ignore_patterns: extra ``fnmatch`` patterns to leave out (added to :data:`DEFAULT_IGNORE_PATTERNS`).
    """
    patterns = list(DEFAULT_IGNORE_PATTERNS) + list(ignore_patterns or [])
    return sorted(
        path.name
        for path in Path(output_dir).iterdir()
        if path.is_file() and not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
    )


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
) -> CommitInfo:
    """Create ``repo_id`` if needed and upload the root files of ``output_dir`` as a single commit.

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
        card_data: extra card data (e.g. tags) for the regenerated card; the folder's files fill the rest.

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
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(output_dir / name))
        for name in files_to_upload(output_dir, ignore_patterns)
    ]
    return api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        commit_description=commit_description,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
    )


def push_model(
    model: Any,
    repo_id: str,
    processor: Any | None = None,
    output_dir: str | Path | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
) -> CommitInfo:
    """Save ``model`` (and its tokenizer/processor) and push it with its model card in one commit.

    The keyword arguments mirror ``PreTrainedModel.push_to_hub``, so a model class can delegate its
    ``push_to_hub`` here. The root files of ``output_dir`` (card, plots, ``eval_results.json``, tokenizer, ...)
    travel with the freshly saved model; ``output_dir`` defaults to ``model.name_or_path`` when that is a local
    folder (a model loaded from a pipeline output folder). The card is (re)generated for ``repo_id`` unless the
    folder holds a hand-written one; without any folder it is rendered from the model's config alone.

    Args:
        model: an :class:`~mmoe.MMoEForSequenceClassification` (anything with ``save_pretrained``).
        repo_id: target repository.
        processor: tokenizer or processor to save next to the model.
        output_dir: folder whose card, plots, reports and tokenizer files to include.
        private, token, commit_message, commit_description, revision, create_pr: as in :func:`push_output_dir`.
        max_shard_size: forwarded to ``save_pretrained``.
        tags: extra Hub tags for the card.
    """
    if output_dir is None:
        name_or_path = getattr(model, "name_or_path", None)
        if name_or_path and Path(name_or_path).is_dir():
            output_dir = name_or_path
    with tempfile.TemporaryDirectory(prefix="mmoe-push-") as tmp:
        staging = Path(tmp)
        if output_dir is not None:
            for name in files_to_upload(output_dir):
                shutil.copy2(Path(output_dir) / name, staging / name)
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        if processor is not None:
            processor.save_pretrained(staging)
        return push_output_dir(
            staging,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            card_data=MMoEModelCardData(tags=list(tags or [])),
        )
