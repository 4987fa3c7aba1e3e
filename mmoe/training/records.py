"""Stage records: what each stage depended on (its fingerprint) and what it reported, so that a rerun skips a stage
whose inputs are unchanged and redoes a stage, and every stage after it, whose inputs changed.

A stage's inputs are the options whose ``stage`` metadata names it or every stage
(:func:`mmoe.training.arguments.stage_options`), the seed, the stage's code version, the previous stage's fingerprint,
the identity of the data (:func:`dataset_fingerprint`) and the content of a backbone given as a folder
(:func:`folder_fingerprint`).

Content hashes of files (backbone weights, image files behind a paths column) are cached by absolute path, size and
modification time (ns), in the process and in ``$XDG_CACHE_HOME/mmoe/fingerprints.json`` (default
``~/.cache/mmoe``), so that a large backbone is read once, not at every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from .runtime import agree, atomic_write_json, is_main_process, wait_for_everyone

logger = logging.getLogger("mmoe")

STAGE_DONE = "stage_complete.json"

STAGE_VERSIONS = {"categorize": 2, "baseline": 3, "experts": 3, "router": 2, "i2moe": 2}
"""Bump a stage's version when its code changes what it produces: finished stages of older runs are then redone."""


HASH_CHUNK = 1 << 20
"""Files are hashed in chunks of 1 MiB."""

_CACHE_VERSION = 1
_RACY_NS = 2_000_000_000
"""A file modified less than 2 s before it is hashed is not cached: a later in-place write within the file system's
timestamp granularity could leave its size and mtime unchanged (git's "racily clean" entries)."""

_memory_hashes: dict[tuple[str, int, int], str] = {}
"""In-process cache: (absolute path, size, mtime_ns) -> sha256 of the file's content."""


def fingerprint_cache_path() -> Path:
    """The on-disk cache of file hashes: ``$XDG_CACHE_HOME/mmoe/fingerprints.json`` (default ``~/.cache``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "mmoe" / "fingerprints.json"


def _hash_file(path: Path) -> str:
    """sha256 of a file's content, read in chunks of :data:`HASH_CHUNK`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_disk_cache() -> dict[str, list[Any]]:
    """The on-disk cache's entries, ``{path: [size, mtime_ns, sha256]}``; empty when it is missing or corrupt."""
    try:
        data = json.loads(fingerprint_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else None
    if not isinstance(files, dict):
        return {}
    return {path: entry for path, entry in files.items()
            if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)}


def _write_disk_cache(new: dict[str, list[Any]]) -> None:
    """Merge ``new`` into the on-disk cache (entries of files that no longer exist are dropped), atomically. A cache
    that cannot be written is only logged: the hashes are then recomputed by the next process."""
    from .runtime import atomic_write_json

    files = {path: entry for path, entry in _read_disk_cache().items() if os.path.exists(path)}
    files.update(new)
    try:
        atomic_write_json(fingerprint_cache_path(), {"version": _CACHE_VERSION, "files": files})
    except OSError as error:
        logger.debug("Could not write the fingerprint cache %s: %s", fingerprint_cache_path(), error)


def file_hashes(paths: Iterable[str | os.PathLike]) -> dict[str, str | None]:
    """sha256 of each file's content (symlinks followed), keyed by its absolute path; ``None`` for a path that is
    not a readable regular file. Cached by (absolute path, size, mtime_ns) in the process and on disk
    (:func:`fingerprint_cache_path`), so that an unchanged file is read once."""
    hashes: dict[str, str | None] = {}
    disk: dict[str, list[Any]] | None = None
    new: dict[str, list[Any]] = {}
    for path in paths:
        absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if absolute in hashes:
            continue
        try:
            stat = os.stat(absolute)  # follows symlinks: the content is what counts
        except OSError:
            hashes[absolute] = None
            continue
        if not os.path.isfile(absolute):
            hashes[absolute] = None
            continue
        key = (absolute, stat.st_size, stat.st_mtime_ns)
        if key in _memory_hashes:
            hashes[absolute] = _memory_hashes[key]
            continue
        if disk is None:
            disk = _read_disk_cache()
        entry = disk.get(absolute)
        if entry is not None and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            hashes[absolute] = _memory_hashes[key] = entry[2]
            continue
        try:
            digest = _hash_file(Path(absolute))
        except OSError:
            hashes[absolute] = None
            continue
        hashes[absolute] = digest
        if time.time_ns() - stat.st_mtime_ns >= _RACY_NS:
            _memory_hashes[key] = digest
            new[absolute] = [stat.st_size, stat.st_mtime_ns, digest]
    if new:
        _write_disk_cache(new)
    return hashes


def folder_fingerprint(path: str | os.PathLike | None) -> str | None:
    """A short hash of the content of every regular file directly in the folder ``path`` (weights, configs,
    tokenizer files; symlinks followed, sorted by name), or ``None`` when ``path`` is not a local folder.

    A Hub id gives ``None``: it is identified by its name alone, so a Hub repository that changes upstream is not
    noticed; download it to a folder (``huggingface-cli download --local-dir``) to have its content fingerprinted.
    File hashes are cached (:func:`file_hashes`), so a large backbone is read once."""
    if path is None or not os.path.isdir(path):
        return None
    folder = Path(path)
    files = sorted(child for child in folder.iterdir() if child.is_file())
    hashes = file_hashes(files)
    digest = hashlib.sha256()
    for child in files:
        digest.update(f"{child.name}\0{hashes[os.path.abspath(child)]}\n".encode())
    return digest.hexdigest()[:16]


def _image_paths(split: Dataset, image_column: str) -> list[str]:
    """The image files that ``image_column`` of ``split`` refers to by path: every cell of a string column, and the
    cells of a ``datasets.Image`` column that hold a path without embedded bytes. Relative paths are resolved
    against the working directory, as the collators do."""
    import pyarrow as pa

    if image_column not in split.column_names:
        return []
    paths: set[str] = set()
    for chunk in split.data.column(image_column).chunks:
        if pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type):
            values = chunk.to_pylist()
        elif pa.types.is_struct(chunk.type) and chunk.type.get_field_index("path") >= 0:
            has_bytes = chunk.type.get_field_index("bytes") >= 0
            blobs = chunk.field("bytes").is_null().to_pylist() if has_bytes else [True] * len(chunk)
            values = [value for value, no_bytes in zip(chunk.field("path").to_pylist(), blobs) if no_bytes]
        else:
            return []
        paths.update(value for value in values if value)
    return sorted(paths)


def dataset_fingerprint(
    dataset: Dataset | DatasetDict, image_column: str | None = None, identity: str | None = None
) -> str:
    """The identity of an in-memory or loaded dataset: ``datasets``' own fingerprint of each split (it changes with
    the data and every ``map``/``filter`` applied to it), with the split names; or ``identity``, the caller's own
    (e.g. ``mmoe-train``'s hash of the dataset's files), when given.

    ``datasets`` fingerprints a column of image paths by the paths alone; with ``image_column``, the content of the
    files it refers to (a string column, or a ``datasets.Image`` column without embedded bytes) is added
    (:func:`file_hashes`, cached by size and mtime), so that an image changed in place changes the fingerprint.
    Without such files the result is what it was without ``image_column``."""
    splits = dataset.items() if isinstance(dataset, DatasetDict) else [("data", dataset)]
    images: dict[str, str] = {}
    if image_column:
        for name, split in splits:
            paths = _image_paths(split, image_column)
            if paths:
                hashes = file_hashes(paths)
                digest = hashlib.sha256()
                for path in paths:
                    digest.update(f"{path}\0{hashes[os.path.abspath(os.path.expanduser(path))]}\n".encode())
                images[name] = digest.hexdigest()[:16]
    if identity:
        return identity if not images else json.dumps({"data": identity, "image_files": images}, sort_keys=True)
    fingerprints: dict[str, Any] = {name: split._fingerprint for name, split in splits}
    if images:
        fingerprints["image_files"] = images
    return stage_fingerprint(fingerprints)


def stage_fingerprint(inputs: dict[str, Any]) -> str:
    """A short hash of everything a stage depends on (JSON of ``inputs`` with sorted keys)."""
    blob = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def read_stage_record(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's record, or ``None`` when it is missing, truncated or not a record (all mean "not done")."""
    path = stage_dir / STAGE_DONE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("Stage %s: its record %s is unreadable (%s); redoing the stage.", stage_dir.name, path, error)
        return None
    if not isinstance(record, dict) or not {"fingerprint", "inputs", "summary"} <= set(record):
        logger.warning("Stage %s: %s is not a stage record of this mmoe version; redoing the stage.",
                       stage_dir.name, path)
        return None
    return record


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the inputs whose values differ (nested dicts are compared key by key, as ``a.b``)."""
    names = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            names += [f"{key}.{inner}" for inner in changed_inputs(before, after)]
        elif json.dumps(before, sort_keys=True, default=str) != json.dumps(after, sort_keys=True, default=str):
            names.append(key)
    return names


def stage_is_done(stage_dir: Path, inputs: dict[str, Any], overwrite: bool, required: tuple[str, ...] = ()) -> bool:
    """True when ``stage_dir`` holds a finished stage whose inputs equal ``inputs`` and the user did not ask
    to redo it. Decided by the main process and shared with every process.

    A stage whose inputs changed is redone (its fingerprint changes, and since each stage's inputs hold the
    fingerprint of the stage before it, every later stage is redone too), with one log line naming the changes.
    A missing, truncated or foreign record, or a missing file among ``required``, counts as not done; so does a
    ``required`` ``.safetensors`` file whose header cannot be read (a truncated or corrupt weights file), with a
    warning naming it.
    """

    def unreadable_weights() -> list[str]:
        from safetensors import safe_open

        broken = []
        for name in required:
            if not name.endswith(".safetensors"):
                continue
            try:
                with safe_open(str(stage_dir / name), framework="pt") as weights:
                    weights.keys()
            except Exception as error:  # SafetensorError (truncated header or data), OSError
                broken.append(f"{stage_dir / name} ({type(error).__name__}: {error})")
        return broken

    def decide() -> bool:
        if overwrite:
            return False
        record = read_stage_record(stage_dir)
        if record is None:
            return False
        if record["fingerprint"] != stage_fingerprint(inputs):
            logger.warning(
                "Stage %s: its inputs changed since it ran (%s); redoing it and every stage after it.",
                stage_dir.name,
                ", ".join("an earlier stage" if name == "previous" else name
                          for name in changed_inputs(record["inputs"], inputs)) or "code version",
            )
            return False
        missing = [name for name in required if not (stage_dir / name).exists()]
        if missing:
            logger.warning("Stage %s: its record exists but %s are missing; redoing the stage.", stage_dir.name,
                           missing)
            return False
        broken = unreadable_weights()
        if broken:
            logger.warning("Stage %s: its record exists but its weights file %s cannot be read; redoing the stage.",
                           stage_dir.name, "; ".join(broken))
            return False
        logger.info("Stage %s already finished with the same inputs; skipping it (--overwrite_output_dir redoes it).",
                    stage_dir.name)
        return True

    return agree(decide() if is_main_process() else None)


def mark_stage_done(stage_dir: Path, inputs: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write the stage's record (fingerprint, inputs, summary) atomically, from the main process only; then
    every process waits until it is written."""
    if is_main_process():
        record = {"fingerprint": stage_fingerprint(inputs), "inputs": inputs, "summary": summary}
        atomic_write_json(stage_dir / STAGE_DONE, record, default=float)
    wait_for_everyone()


def read_stage_summary(stage_dir: Path) -> dict[str, Any]:
    """The summary a finished stage recorded."""
    record = read_stage_record(stage_dir)
    if record is None:
        raise FileNotFoundError(
            f"{stage_dir / STAGE_DONE} is missing or unreadable; rerun mmoe-train with the same --output_dir "
            "to redo that stage."
        )
    return record["summary"]
