"""Trainer glue shared by the pipeline stages: metrics, best-state selection, stage bookkeeping."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..metrics import METRIC_NAMES, classification_scores, load_classification_metric
from .runtime import agree, atomic_write_text, is_main_process, to_device, wait_for_everyone

logger = logging.getLogger("mmoe")

STAGE_DONE = "stage_complete.json"


def first_array(predictions: Any) -> np.ndarray:
    """The Trainer hands over a tuple when the model returns several tensors; the first one is ``logits``."""
    return predictions[0] if isinstance(predictions, (tuple, list)) else predictions


def make_compute_metrics(num_labels: int, average: str | None = None) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for the Trainer: accuracy/precision/recall/F1, ``balanced_accuracy``, ``macro_f1`` and
    ``predicted_classes``.

    ``predicted_classes`` (how many distinct classes were predicted) flags a degenerate model that always
    answers the same class, which scores a high binary F1 on a positive-heavy split (DESIGN, section 6).
    """
    metric = load_classification_metric()

    def compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = first_array(eval_prediction.predictions)
        labels = first_array(eval_prediction.label_ids)
        predictions = logits.argmax(-1)
        scores = metric.compute(
            predictions=predictions.tolist(), references=labels.tolist(), num_labels=num_labels, average=average
        )
        scores["predicted_classes"] = float(len(np.unique(predictions)))
        return scores

    return compute_metrics


class KeepBestStateCallback(TrainerCallback):
    """Keep the best weights of the trained part in memory and restore them when training ends.

    The Trainer's own ``load_best_model_at_end`` needs a full checkpoint per evaluation (the whole backbone);
    a stage only trains one adapter and head (or the router), so a copy of those few tensors is enough.

    Args:
        get_state: returns the trained tensors (e.g. ``model.expert_state_dict(name)``).
        set_state: loads them back.
        metric_name: metric to maximise, without the ``eval_`` prefix.
    """

    def __init__(
        self,
        get_state: Callable[[], dict[str, torch.Tensor]],
        set_state: Callable[[dict[str, torch.Tensor]], None],
        metric_name: str,
    ) -> None:
        self.get_state, self.set_state, self.metric_name = get_state, set_state, metric_name
        self.best_metric: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: float | None = None

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        value = (metrics or {}).get(f"eval_{self.metric_name}")
        if value is None:
            return
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_epoch = float(value), state.epoch
            self.best_metrics = {k.removeprefix("eval_"): float(v) for k, v in metrics.items()}
            self.best_state = {k: v.detach().clone() for k, v in to_device(self.get_state(), "cpu").items()}

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.best_state is not None:
            self.set_state(self.best_state)


def stage_arguments(base: TrainingArguments, output_dir: Path, **overrides: Any) -> TrainingArguments:
    """A copy of the user's ``TrainingArguments`` for one stage: its own folder, no checkpoints, no Hub pushes.

    Device, mixed precision (``--bf16``/``--fp16``), gradient checkpointing and the process group stay the
    user's. Gradient checkpointing defaults to the non-reentrant variant, which works with frozen embeddings
    under LoRA.
    """
    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "push_to_hub": False,
        "remove_unused_columns": False,  # rows stay raw; the collator encodes them
        "report_to": base.report_to or "none",
    }
    if _checkpointing(base) and not getattr(base, "gradient_checkpointing_kwargs", None):
        values["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("gradient_checkpointing") is False:  # the same switch under its newer name
        values.update({name: False for name in _CHECKPOINTING_FLAGS if hasattr(base, name)})
    return dataclasses.replace(base, **values)


# transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` and keeps the old name as an alias.
_CHECKPOINTING_FLAGS = ("gradient_checkpointing", "activation_checkpointing")


def _checkpointing(args: TrainingArguments) -> bool:
    return any(bool(getattr(args, name, False)) for name in _CHECKPOINTING_FLAGS)


# ------------------------------------------------------------------------------------------- stage bookkeeping
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
        atomic_write_text(stage_dir / STAGE_DONE, json.dumps(record, indent=2, default=float))
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


def scores(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """Metric block ``{"accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_f1"}`` (empty input
    gives zeros)."""
    if len(references) == 0:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    return classification_scores(predictions, references, num_labels)
