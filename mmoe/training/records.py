"""Stage records: what each stage depended on (its fingerprint) and what it reported, so that a rerun skips a stage
whose inputs are unchanged and redoes a stage, and every stage after it, whose inputs changed.

A stage's inputs are the options whose ``stage`` metadata names it or every stage
(:func:`mmoe.training.arguments.stage_options`), the seed, the stage's code version, the previous stage's fingerprint
and the identity of the data (:func:`dataset_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from .runtime import agree, atomic_write_json, is_main_process, wait_for_everyone

logger = logging.getLogger("mmoe")

STAGE_DONE = "stage_complete.json"

STAGE_VERSIONS = {"categorize": 2, "baseline": 3, "experts": 3, "router": 2, "i2moe": 2}
"""Bump a stage's version when its code changes what it produces: finished stages of older runs are then redone."""


def dataset_fingerprint(dataset: Dataset | DatasetDict) -> str:
    """The identity of an in-memory or loaded dataset: ``datasets``' own fingerprint of each split (it changes with
    the data and every ``map``/``filter`` applied to it), with the split names."""
    splits = dataset.items() if isinstance(dataset, DatasetDict) else [("data", dataset)]
    return stage_fingerprint({name: split._fingerprint for name, split in splits})


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
    A missing, truncated or foreign record, or a missing file among ``required``, counts as not done.
    """

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
