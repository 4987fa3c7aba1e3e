"""Upload a finished MMoE output folder to the Hugging Face Hub in one commit.

Only root files named by one allowlist, :data:`UPLOAD_ALLOWLIST`, travel: weights, ``config.json``, the remote
code (``configuration_mmoe.py``, ``modeling_mmoe.py`` and the modules they import), peft adapter files,
tokenizer/processor files, ``README.md``, the PNG plots and the run's JSON reports. Any other root file (a
``secrets.env``, notes, a stray script) stays local and is named in a warning. Sub-folders stay local: the
pipeline's stage folders (``baseline/``, ``experts/``, ``router/``, ``categorize/``), per-seed runs (``seed-*/``),
``checkpoint-*/`` and ``runs/``.

The commit is made by :func:`mmoe.hub_utils.commit_folder`, the function ``model.push_to_hub`` ends in too: one
:meth:`huggingface_hub.HfApi.create_commit` with the full operation list (``upload_folder`` may split large folders
into several commits when ``hf_xet`` is installed), the tags added to the uploaded card's metadata.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi

from ..configuration_mmoe import ROUTER_ADAPTER
from ..hub_utils import COMPANION_FILES, DEFAULT_COMMIT_MESSAGE, commit_folder
from .card_data import CONFIG_FILE, MMoEModelCardData
from .model_card import CARD_FILE, is_generated_card, write_model_card

logger = logging.getLogger(__name__)

UPLOAD_ALLOWLIST: tuple[str, ...] = (
    # weights and configs
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    # remote code that save_pretrained copies: the auto_map modules and their relative imports
    "configuration_mmoe.py", "modeling_mmoe.py", "backbone_utils.py", "fusion.py", "losses.py",
    # peft adapters
    "adapter_config.json", "adapter_model.safetensors",
    # tokenizer / processor, model card, plots and the run's reports: what save_pretrained carries along too
    *COMPANION_FILES,
)
"""``fnmatch`` patterns of the root files that are published; nothing else is uploaded. The ``.py`` files named
in the ``auto_map`` of the folder's configs (and the modules they import relatively) are added to it per folder
by :func:`remote_code_files`, so remote code that grows a module still travels. The tokenizer, card, plot and
report patterns are :data:`mmoe.hub_utils.COMPANION_FILES`, the files ``model.push_to_hub`` adds from the folder a
model was loaded from: ``model.push_to_hub`` of such a model sends the same files as this allowlist."""

DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (".*", "*.tmp", "*.lock", "*.pyc")
"""Root files skipped silently (hidden and temporary files); any other root file outside
:data:`UPLOAD_ALLOWLIST` is skipped with a warning. Sub-folders are never uploaded at all: the pipeline's stage
folders (``baseline/``, ``experts/``, ``router/``, ``categorize/``), per-seed runs (``seed-*/``), ``checkpoint-*/``
and ``runs/`` are intermediate outputs."""

_AUTO_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def remote_code_files(output_dir: str | Path) -> list[str]:
    """Root ``.py`` files that the folder's remote code needs: the modules named in the ``auto_map`` of its
    configs and, recursively, the modules they import relatively (``from .fusion import fuse``)."""
    from transformers.dynamic_module_utils import get_relative_imports

    folder = Path(output_dir)
    pending: list[str] = []
    for config_name in _AUTO_MAP_FILES:
        try:
            auto_map = json.loads((folder / config_name).read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for value in auto_map.values() if isinstance(auto_map, dict) else []:
            for reference in value if isinstance(value, (list, tuple)) else [value]:
                # "module.Class" lives in this folder; "org/repo--module.Class" in another repository
                if isinstance(reference, str) and "--" not in reference and "." in reference:
                    pending.append(reference.rsplit(".", 1)[0] + ".py")
    found: set[str] = set()
    while pending:
        name = pending.pop()
        if name in found or "/" in name or not (folder / name).is_file():
            continue
        found.add(name)
        pending += [f"{module}.py" for module in get_relative_imports(str(folder / name))]
    return sorted(found)


def files_to_upload(output_dir: str | Path, ignore_patterns: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Sorted names of the root files of ``output_dir`` that :func:`push_output_dir` sends: those matching
    :data:`UPLOAD_ALLOWLIST` or needed by the remote code (:func:`remote_code_files`).

    Any other root file is left out with a warning naming it (hidden and temporary files, and ``ignore_patterns``,
    silently).

    Args:
        output_dir: the folder to publish.
        ignore_patterns: extra ``fnmatch`` patterns to leave out (added to :data:`DEFAULT_IGNORE_PATTERNS`).
    """
    folder = Path(output_dir)
    ignored = list(DEFAULT_IGNORE_PATTERNS) + list(ignore_patterns or [])
    code = set(remote_code_files(folder))
    selected, skipped = [], []
    for path in sorted(folder.iterdir()):
        name = path.name
        if not path.is_file() or any(fnmatch.fnmatch(name, pattern) for pattern in ignored):
            continue
        if name in code or any(fnmatch.fnmatch(name, pattern) for pattern in UPLOAD_ALLOWLIST):
            selected.append(name)
        else:
            skipped.append(name)
    selected += expert_adapter_files(folder)
    if skipped:
        logger.warning(
            "Not uploading %d file(s) of %s outside the upload allowlist: %s. Only model, tokenizer, card, plot "
            "and report files are published (mmoe.hub_cards.publish.UPLOAD_ALLOWLIST); upload anything else "
            "yourself if it is meant to be public.",
            len(skipped), folder, ", ".join(skipped),
        )
    return selected


_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def expert_adapter_files(output_dir: str | Path) -> list[str]:
    """``<expert>/adapter_config.json`` and ``<expert>/adapter_model.safetensors`` of every expert named in the
    folder's ``config.json`` (and of the router's own adapter, ``router_adapter/``, for an MMoE model with
    ``router_input: "adapter"``), when the model was saved with a referenced backbone (``save_backbone: false``):
    those peft adapter folders hold the LoRA weights, so they travel with the root files."""
    folder = Path(output_dir)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if config.get("save_backbone") is not False:
        return []
    adapters = list(config.get("experts") or [])
    if config.get("model_type") == "mmoe" and config.get("router_input") == "adapter":
        adapters.append(ROUTER_ADAPTER)
    files = [f"{adapter}/{name}" for adapter in adapters for name in _ADAPTER_FILES]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} references its backbone (save_backbone: false) but lacks adapter files {missing}; "
            "save the model again with save_pretrained."
        )
    return files


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
    """Create ``repo_id`` if needed and upload the allowlisted root files of ``output_dir`` as a single commit.

    Only the files of :func:`files_to_upload` travel (:data:`UPLOAD_ALLOWLIST`); other root files are skipped
    with a warning naming them. ``mmoe-train --push_to_hub`` and ``mmoe-card --push_to_hub`` call this; the
    commit is :func:`mmoe.hub_utils.commit_folder`'s, as for ``model.push_to_hub``.

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

