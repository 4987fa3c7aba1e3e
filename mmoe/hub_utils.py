"""What travels with MMoE weights to the Hub, and the one commit that every way of publishing ends in.

- :data:`COMPANION_FILES`: the files of an ``mmoe-train`` output folder that belong with the weights (model card,
  plots, reports, tokenizer/processor). ``model.push_to_hub`` of a model loaded from such a folder adds them to
  what it saves (:func:`copy_companion_files`); ``save_pretrained`` alone does not, so a model trained further
  never carries results that are not its own; :data:`mmoe.hub_cards.publish.UPLOAD_ALLOWLIST` is built from this tuple.
- :func:`upload_files`: exactly the files an upload of a folder sends: the names the model, its tokenizer or
  processor and the run wrote (no globs), the remote code derived from the package's relative imports
  (:func:`package_remote_code_files`), never a symlink. ``mmoe-train --push_to_hub``, ``mmoe-card --push_to_hub``
  and ``model.push_to_hub`` all select their files with it.
- :func:`commit_folder`: one ``HfApi.create_commit`` of a folder's files, the ``tags`` added to the metadata of the
  uploaded ``README.md``. ``model.push_to_hub`` (through :func:`push_to_hub`) and
  :func:`mmoe.hub_cards.push_output_dir` (``mmoe-train --push_to_hub``, ``mmoe-card --push_to_hub``) both end here.
- :func:`push_to_hub`: what ``model.push_to_hub`` runs when ``mmoe`` is installed. ``mmoe/__init__.py`` registers it
  as ``MMoEPreTrainedModel.hub_publisher``.

This module is not remote code: ``modeling_mmoe.py`` never imports it (remote code imports only torch,
transformers, peft and its siblings, and holds no publishing logic). It uses ``huggingface_hub``'s public API only.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, metadata_load, metadata_save

from .configuration_mmoe import ROUTER_ADAPTER

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
"""The run's results; a folder holding it is an ``mmoe-train`` output folder (the pipeline writes it last)."""
RUN_FILE = "mmoe_run.json"
TRAINING_LOGS_FILE = "mmoe_training_logs.json"
CONFIG_FILE = "config.json"
DEFAULT_COMMIT_MESSAGE = "Upload MMoE model"

TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "spm.model", "chat_template.jinja", "chat_template.json",
)
"""The exact names transformers' tokenizers write (``vocab_files_names`` of the fast and slow tokenizers of the
supported backbones: BERT/MiniLM, RoBERTa/GPT-2/Qwen2, T5, XLM-R, Llama/Gemma, DeBERTa-v2/v3) and their chat
templates. Exact names, never globs: a glob such as ``tokenizer*`` also matches ``tokenizer_credentials.env``."""

PROCESSOR_FILES: tuple[str, ...] = (
    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
)
"""The exact names transformers' image/video processors and processors write."""

PLOT_FILES: tuple[str, ...] = ("interaction_f1.png", "router_weights.png", "expert_weights.png")
"""The PNGs the model card embeds: the same names as :data:`mmoe.hub_cards.plots.PLOT_FILES` (repeated here
because this core module may not import ``hub_cards/``; a test checks that the two agree)."""

COMPANION_FILES: tuple[str, ...] = (
    *TOKENIZER_FILES, *PROCESSOR_FILES,
    # model card, plots and the run's reports
    CARD_FILE, *PLOT_FILES, EVAL_RESULTS_FILE, RUN_FILE, TRAINING_LOGS_FILE,
)
"""Exact names of the root files of an ``mmoe-train`` output folder that go with the weights: what
``model.push_to_hub`` adds from the folder a model was loaded from, and part of the upload allowlist."""

MODEL_FILES: tuple[str, ...] = (
    CONFIG_FILE, "model.safetensors", "model.safetensors.index.json", "generation_config.json",
)
"""Exact names of the model's own root files; the shards named by ``model.safetensors.index.json`` and the
adapter folders are added per folder (:func:`upload_files`)."""

ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors")
"""What peft writes into each expert's (and the router's) adapter folder."""

DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (".*", "*.tmp", "*.lock", "*.pyc")
"""Root files skipped silently (hidden and temporary files); any other root file that is not uploaded is named in
a warning."""


# ------------------------------------------------------------------------------------------ remote code
def relative_imports(path: str | os.PathLike) -> list[str]:
    """Sibling modules that the Python file ``path`` imports relatively, found with ``ast`` (imports inside
    functions and ``try`` blocks too): ``from .fusion import fuse`` → ``fusion``; ``from . import losses`` →
    ``losses``. Imports of a sub-package (``from .a.b import c``) give ``a``."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.append(node.module.split(".")[0])
            else:
                found += [alias.name for alias in node.names]
    return sorted(set(found))


def module_closure(folder: str | os.PathLike, modules: Iterable[str]) -> list[str]:
    """Sorted ``.py`` file names of ``modules`` (names without ``.py``) and, transitively, of every sibling module
    they import relatively, among the plain files of ``folder``."""
    folder = Path(folder)
    pending, found = list(modules), set()
    while pending:
        name = f"{pending.pop()}.py"
        path = folder / name
        if name in found or "/" in name or not _is_plain_file(folder, name):
            continue
        found.add(name)
        pending += relative_imports(path)
    return sorted(found)


def _registers_auto_class(path: Path) -> bool:
    """Whether the module calls ``<Class>.register_for_auto_class(...)``: a module whose classes
    ``save_pretrained`` copies into the folder as remote code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register_for_auto_class"
        for node in ast.walk(tree)
    )


@functools.lru_cache(maxsize=1)
def package_remote_code_files() -> tuple[str, ...]:
    """The package's remote code, derived from its source rather than kept by hand: the top-level modules of
    ``mmoe`` that register classes for the Auto classes (``configuration_mmoe.py``, ``modeling_mmoe.py``,
    ``modeling_i2moe.py``) and every module they import relatively, transitively (``fused_lora.py``,
    ``fusion.py``, ...)."""
    package = Path(__file__).resolve().parent
    entry_points = [path.stem for path in sorted(package.glob("*.py")) if _registers_auto_class(path)]
    return tuple(module_closure(package, entry_points))


_AUTO_MAP_FILES = (CONFIG_FILE, "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def remote_code_files(output_dir: str | os.PathLike) -> list[str]:
    """Root ``.py`` files of ``output_dir`` that its remote code needs: the modules named in the ``auto_map`` of
    its configs and the package's remote code (:func:`package_remote_code_files`) present in the folder, and,
    transitively, every module they import relatively (``from .fusion import fuse``), found by parsing them. That
    covers what ``save_pretrained`` copied (transformers copies the ``auto_map`` modules and their relative
    imports), and a module the remote code grows travels too. Symlinks are left out."""
    folder = Path(output_dir)
    modules = [name.removesuffix(".py") for name in package_remote_code_files()]
    for config_name in _AUTO_MAP_FILES:
        if not _is_plain_file(folder, config_name):
            continue
        try:
            auto_map = json.loads((folder / config_name).read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for value in auto_map.values() if isinstance(auto_map, dict) else []:
            for reference in value if isinstance(value, (list, tuple)) else [value]:
                # "module.Class" lives in this folder; "org/repo--module.Class" in another repository
                if isinstance(reference, str) and "--" not in reference and "." in reference:
                    modules.append(reference.rsplit(".", 1)[0])
    return module_closure(folder, modules)


# ------------------------------------------------------------------------------------------ the exact file set
def _is_plain_file(folder: Path, name: str) -> bool:
    """``folder/name`` is a regular file reached without any symlink (neither the file nor a folder on the way),
    so that it cannot resolve outside ``folder``."""
    path = folder / name
    try:
        return path.is_file() and not path.is_symlink() and path.resolve() == folder.resolve() / name
    except OSError:
        return False


def _shard_files(folder: Path) -> list[str]:
    """The shard names listed by ``model.safetensors.index.json`` (sharded weights)."""
    index = "model.safetensors.index.json"
    if not _is_plain_file(folder, index):
        return []
    try:
        weight_map = json.loads((folder / index).read_text(encoding="utf-8")).get("weight_map") or {}
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{folder / index} is not a valid safetensors index: {error}") from error
    shards = sorted({str(shard) for shard in weight_map.values()})
    bad = [shard for shard in shards if "/" in shard or "\\" in shard or not _is_plain_file(folder, shard)]
    if bad:
        raise FileNotFoundError(
            f"{folder / index} lists shard(s) {bad} that are not plain files of {folder}; save the model again."
        )
    return shards


def adapter_files(output_dir: str | os.PathLike) -> list[str]:
    """``<expert>/adapter_config.json`` and ``<expert>/adapter_model.safetensors`` of every expert named in the
    folder's ``config.json`` (and of the router's own adapter, ``router_adapter/``, for an MMoE model with
    ``router_input: "adapter"``), when the model was saved with a referenced backbone (``save_backbone: false``):
    those peft adapter folders hold the LoRA weights, so they travel with the root files.

    Raises:
        FileNotFoundError: an adapter file is missing, or is a symlink (which could point outside the folder).
    """
    folder = Path(output_dir)
    if not _is_plain_file(folder, CONFIG_FILE):
        return []
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(config, dict) or config.get("save_backbone") is not False:
        return []
    adapters = [str(name) for name in config.get("experts") or []]
    if config.get("model_type") == "mmoe" and config.get("router_input") == "adapter":
        adapters.append(ROUTER_ADAPTER)
    files = [f"{adapter}/{name}" for adapter in adapters for name in ADAPTER_FILES]
    missing = [name for name in files if not _is_plain_file(folder, name)]
    if missing:
        raise FileNotFoundError(
            f"{folder} references its backbone (save_backbone: false) but lacks adapter files {missing} (or they are "
            "symlinks, which are never uploaded); save the model again with save_pretrained."
        )
    return files


def upload_files(
    output_dir: str | os.PathLike, ignore_patterns: Iterable[str] | None = None, *, warn: bool = True
) -> list[str]:
    """Sorted paths (relative to ``output_dir``) of exactly the files an upload of ``output_dir`` sends.

    Those are the files the model, its tokenizer or processor and the run wrote, by exact name:
    :data:`MODEL_FILES`, the shards of a sharded checkpoint, the remote code (:func:`remote_code_files`), the
    adapter folders of a referenced backbone (:func:`adapter_files`) and :data:`COMPANION_FILES` (tokenizer,
    processor, card, plots, reports). Symlinks are never sent, whatever their name. Any other root file is named
    in a warning (hidden and temporary files, and ``ignore_patterns``, are left out silently); sub-folders other
    than the adapter folders (stage folders, ``seed-*/``, ``checkpoint-*/``, ``runs/``) stay local.

    Args:
        output_dir: the folder to publish.
        ignore_patterns: ``fnmatch`` patterns of root files to leave out (added to
            :data:`DEFAULT_IGNORE_PATTERNS`).
        warn: log the warning about the root files left out.
    """
    folder = Path(output_dir)
    ignored = [*DEFAULT_IGNORE_PATTERNS, *(ignore_patterns or [])]
    wanted = {*MODEL_FILES, *COMPANION_FILES, *_shard_files(folder), *remote_code_files(folder)}
    selected, skipped, links = [], [], []
    for path in sorted(folder.iterdir()):
        name = path.name
        if path.is_symlink():
            if not any(fnmatch.fnmatch(name, pattern) for pattern in ignored):
                links.append(name)
            continue
        if not path.is_file() or any(fnmatch.fnmatch(name, pattern) for pattern in ignored):
            continue
        if name in wanted and _is_plain_file(folder, name):
            selected.append(name)
        else:
            skipped.append(name)
    selected += adapter_files(folder)
    if warn and (skipped or links):
        logger.warning(
            "Not uploading %d file(s) of %s: %s. Only the files the model, its tokenizer/processor and the run wrote "
            "are published, by exact name (mmoe.hub_utils.upload_files), and never a symlink; upload anything else "
            "yourself if it is meant to be public.",
            len(skipped) + len(links), folder,
            ", ".join([*skipped, *(f"{name} (a symlink)" for name in links)]),
        )
    return sorted(selected)


def companion_files(folder: str | os.PathLike | None) -> list[Path]:
    """The :data:`COMPANION_FILES` of ``folder`` when it is an ``mmoe-train`` output folder (it holds
    ``eval_results.json``); otherwise (a Hub id, a plain checkpoint, ``None``) none. Symlinks are left out."""
    if not folder or not (Path(folder) / EVAL_RESULTS_FILE).is_file():
        return []
    folder = Path(folder)
    return sorted(folder / name for name in COMPANION_FILES if _is_plain_file(folder, name))


def copy_companion_files(source: str | os.PathLike | None, target: str | os.PathLike) -> list[str]:
    """Copy the :func:`companion_files` of ``source`` into ``target`` (unless they are the same folder); return
    their names. A card already in ``target`` (peft writes one for the adapters) is replaced by the run's."""
    files = companion_files(source)
    if not files or Path(source).resolve() == Path(target).resolve():
        return []
    for path in files:
        shutil.copy2(path, Path(target) / path.name, follow_symlinks=False)
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
    """Upload ``files`` of ``folder`` (paths relative to it; ``None``: :func:`upload_files`) to the existing
    repository ``repo_id`` as a single commit, through :meth:`huggingface_hub.HfApi.create_commit`.

    ``tags`` are added to the metadata of the uploaded ``README.md`` (a copy: the folder is not modified), next to
    the tags it already has. ``revision`` is created from the default branch when missing (unless ``create_pr``).
    """
    folder = Path(folder)
    if files is None:
        files = upload_files(folder)
    unsafe = [name for name in files if not _is_plain_file(folder, name)]
    if unsafe:
        raise ValueError(
            f"commit_folder: {unsafe} are not plain files of {folder} (missing, or symlinks); nothing was uploaded."
        )
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
    what it wrote, selected exactly as for an output folder (:func:`upload_files`). ``commit_kwargs``: ``tags``,
    ``revision``, ``create_pr``, ``commit_message``, ``commit_description``."""
    repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    with tempfile.TemporaryDirectory(prefix="mmoe-push-") as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        # The run's card, plots and reports travel with the pushed weights; save_pretrained itself never copies them,
        # so a model trained further and saved elsewhere does not carry results that are no longer its own.
        copy_companion_files(model.name_or_path, folder)  # after peft, whose adapter card it replaces
        return commit_folder(folder, repo_id, upload_files(folder), token=token, **commit_kwargs)


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
