"""Trainer glue shared by the stages: metrics, best-state selection, a stage's copy of the arguments."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..metrics import METRIC_NAMES, classification_scores, load_classification_metric
from .runtime import to_device

logger = logging.getLogger("mmoe")

def first_array(predictions: Any) -> np.ndarray:
    """The Trainer hands over a tuple when the model returns several tensors; the first one is ``logits``."""
    return predictions[0] if isinstance(predictions, (tuple, list)) else predictions


def make_compute_metrics(num_labels: int, average: str | None = None) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` for the Trainer: accuracy/precision/recall/F1, ``balanced_accuracy``, ``macro_f1`` and
    ``predicted_classes``.

    ``predicted_classes`` (how many distinct classes were predicted) flags a degenerate model that always
    answers the same class, which scores a high binary F1 on a positive-heavy split .
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


def stage_log_dir(run_dir: Path, stage: str) -> Path:
    """Where a stage's Trainer logs (``--report_to tensorboard`` event files): ``<run_dir>/runs/<stage>``, with
    ``experts/<expert>`` flattened to ``experts-<expert>``."""
    return Path(run_dir) / "runs" / stage.replace("/", "-")


def stage_run_name(base: TrainingArguments, log_dir: Path) -> str:
    """The run name a stage reports to wandb, trackio or mlflow: ``--run_name`` (else the ``--output_dir`` folder's
    name) suffixed with the stage's log folder relative to ``--output_dir``, ``runs`` left out: ``demo-baseline``,
    ``demo-experts-synergy``, or ``demo-seed-1-router`` with several seeds."""
    root = Path(base.output_dir).resolve()
    log_dir = Path(log_dir).resolve()
    try:
        parts = [part for part in log_dir.relative_to(root).parts if part != "runs"]
    except ValueError:
        parts = [log_dir.name]
    return "-".join([base.run_name or root.name, *parts])


def route_logs(trainer: Any, log_dir: Path | str) -> None:
    """Send ``trainer``'s logs where its stage's logs belong.

    - ``--report_to tensorboard`` writes its event files straight into ``log_dir`` (transformers would add a
      ``runs/<date>_<host>`` level), or into ``$TENSORBOARD_LOGGING_DIR/<log_dir name>`` when that is set, so that
      stages never share one folder;
    - with ``--disable_tqdm`` the Trainer prints every log dict to stdout (``PrinterCallback``); they go to the
      ``mmoe`` logger at INFO instead, so that ``--log_level`` decides whether they show.
    """
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import PrinterCallback

    for callback in list(trainer.callback_handler.callbacks):
        if isinstance(callback, TensorBoardCallback) and callback.tb_writer is None:
            shared = os.environ.get("TENSORBOARD_LOGGING_DIR")
            folder = Path(os.path.expanduser(shared)) / Path(log_dir).name if shared else Path(log_dir)
            callback.logging_dir = str(folder)
        elif isinstance(callback, PrinterCallback):
            trainer.remove_callback(callback)
            trainer.add_callback(LogToLoggerCallback())


class LogToLoggerCallback(TrainerCallback):
    """The Trainer's log dicts (loss, learning rate, evaluation metrics) as INFO lines of the ``mmoe`` logger."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items() if k != "total_flos"}
            logger.info("%s", shown)


def prune_empty_dirs(folder: Path | str, stop: Path | str | None = None) -> None:
    """Remove ``folder`` if it is empty, then each empty parent up to (not including) ``stop``: a Trainer creates
    its output folder even when nothing is logged into it (``--report_to none``)."""
    folder = Path(folder)
    stop = Path(stop).resolve() if stop is not None else None
    while folder.is_dir() and not any(folder.iterdir()) and (stop is None or folder.resolve() != stop):
        folder.rmdir()
        if stop is None:
            return
        folder = folder.parent


def configure_logging(args: TrainingArguments) -> None:
    """``--log_level`` and ``--disable_tqdm`` for the whole run, as transformers' example scripts set them.

    The ``mmoe`` logger (and Python's root logger) follow ``args.get_process_log_level()``, INFO when the level
    is ``passive`` (the default: stage banners and summaries show); transformers, datasets and Python's warnings
    (as ``py.warnings`` records) follow an explicit ``--log_level``. ``--disable_tqdm`` turns off the progress
    bars of datasets (``map``, ``filter``) and of Hub downloads as well as the Trainer's.
    """
    import datasets
    import transformers

    explicit = args.log_level != "passive" or (not args.should_log and args.log_level_replica != "passive")
    level = args.get_process_log_level() if explicit else logging.INFO
    logging.getLogger().setLevel(level)
    logger.setLevel(level)
    if explicit:
        transformers.utils.logging.set_verbosity(level)
        datasets.utils.logging.set_verbosity(level)
        logging.captureWarnings(True)  # Python warnings become WARNING records of `py.warnings`, under the level
    if args.disable_tqdm:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


# transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` and keeps the old name as an alias.
_CHECKPOINTING_FLAGS = ("gradient_checkpointing", "activation_checkpointing")


def _checkpointing(args: TrainingArguments) -> bool:
    return any(bool(getattr(args, name, False)) for name in _CHECKPOINTING_FLAGS)


def scores(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> dict[str, float]:
    """Metric block ``{"accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_f1"}`` (empty input
    gives zeros)."""
    if len(references) == 0:
        return dict.fromkeys(METRIC_NAMES, 0.0)
    return classification_scores(predictions, references, num_labels)
