"""One stage's training run: a ``transformers.Trainer`` over a model whose ``forward`` computes the stage's loss,
keeping the best epoch's weights in memory (:class:`~mmoe.training.trainer_utils.KeepBestStateCallback`)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer, TrainerCallback

from ..callbacks import ModelCardCallback
from ..nonfinite import NonFiniteLossCallback, assert_finite_state
from ..runtime import atomic_save_tensors, check_on_device, is_main_process, to_device
from ..trainer_utils import (
    KeepBestStateCallback,
    make_compute_metrics,
    prune_empty_dirs,
    route_logs,
    stage_arguments,
    stage_log_dir,
    stage_run_name,
)
from .context import StageContext

logger = logging.getLogger("mmoe")

_POSITIVE_CLASS_METRICS = ("f1", "precision", "recall")


def train_stage(
    ctx: StageContext,
    model: nn.Module,
    name: str,
    train: Dataset,
    evaluation: Dataset | None,
    stage_dir: Path,
    *,
    epochs: float | None,
    collator: Any,
    get_state: Callable[[], dict[str, torch.Tensor]],
    set_state: Callable[[dict[str, torch.Tensor]], None],
    metric: str,
    num_classes: int,
    label_names: list[str],
    prediction_index: int = 0,
    average: str | None = None,
    learning_rate: float | None = None,
    gradient_checkpointing: bool | None = None,
) -> dict[str, Any]:
    """Train ``model`` (already set to the stage's target: ``train_expert``, ``train_router``, ``train_mixture``) on
    ``train``, evaluating every epoch on ``evaluation``; restore the best epoch by ``metric``.

    Args:
        name: the stage's name in logs and on the card (``baseline``, ``experts/<expert>``, ``router``, ``i2moe``).
            Its Trainer logs (``--report_to``) to ``<run_dir>/runs/<name>`` (``experts-<expert>``) under the run
            name ``<run_name or output_dir name>-<name>``; the stage announces its start (rows) and end (time,
            selected epoch) on the ``mmoe`` logger.
        stage_dir: the stage's folder (its results; nothing of the Trainer's is written there).
        get_state / set_state: copy and restore the trained tensors.
        num_classes: classes of the selection metric (labels, or interactions for the router's interaction
            objective); ``label_names`` names the batch field that holds them.
        prediction_index: which output field the metric reads (0: ``logits``; 3: ``router_logits``).
        average: ``"macro"`` scores precision/recall/F1 over every class (the router's selection).

    Returns:
        The stage summary: ``selected_epoch``, ``selection_metric``, ``validation`` (the best epoch's metrics),
        ``train_rows``, and ``predicts_one_class`` when the selected model answers a single class.
    """
    keep_best = KeepBestStateCallback(get_state, set_state, metric)
    # The stage's Trainer writes nothing but its logs (no checkpoints), so its output folder is the log folder.
    log_dir = stage_log_dir(ctx.run_dir, name)
    if is_main_process():
        shutil.rmtree(log_dir, ignore_errors=True)  # a redone stage's logs replace the old ones
    args = stage_arguments(
        ctx.args,
        log_dir,
        run_name=stage_run_name(ctx.args, log_dir),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        label_names=label_names,
        eval_strategy="epoch" if evaluation is not None else "no",
        seed=ctx.seed,
        gradient_checkpointing=gradient_checkpointing,
    )
    compute = make_compute_metrics(num_classes, average=average)
    callbacks: list[TrainerCallback] = [
        keep_best, NonFiniteLossCallback(name), ModelCardCallback(stage=name, output_dir=ctx.run_dir),
        *ctx.callbacks,
    ]
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        compute_metrics=lambda prediction: compute(_pick(prediction, prediction_index)),
        callbacks=callbacks,
    )
    route_logs(trainer, log_dir)
    logger.info("Stage %s: training on %d rows", name, len(train))
    started = time.perf_counter()
    trainer.train()
    check_on_device(model, args.device, f"stage {name}")
    if is_main_process():
        prune_empty_dirs(log_dir, stop=ctx.run_dir)  # nothing logged (--report_to none): no folder left behind
    summary = {
        "selected_epoch": keep_best.best_epoch,
        "selection_metric": metric,
        "validation": keep_best.best_metrics,
        "train_rows": len(train),
    }
    logger.info("Stage %s: done in %.0f s (%s)", name, time.perf_counter() - started, _selection(summary))
    if keep_best.best_metrics.get("predicted_classes", 2) <= 1:
        logger.warning("%s predicts a single class on validation: its F1 is not evidence of skill.", name)
        summary["predicts_one_class"] = True
    return summary


def _selection(summary: dict[str, Any]) -> str:
    """``best epoch 2, macro_f1 0.781``, or ``no evaluation`` when no epoch was scored."""
    value = summary["validation"].get(summary["selection_metric"])
    if summary["selected_epoch"] is None or value is None:
        return "no evaluation"
    return f"best epoch {round(summary['selected_epoch'], 2):g}, {summary['selection_metric']} {value:.3f}"


def _pick(prediction: Any, index: int) -> Any:
    """The EvalPrediction with ``predictions`` reduced to output field ``index`` (the Trainer hands a tuple of
    every output tensor, ``loss`` excluded, in the output's field order)."""
    from transformers import EvalPrediction

    predictions = prediction.predictions
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[index]
    return EvalPrediction(predictions=predictions, label_ids=prediction.label_ids)


def selection_metric(ctx: StageContext, name: str, evaluation: Dataset | None) -> str:
    """``selection_metric``, except on a validation subset with one class only, where precision, recall and F1 of
    the positive class are constant and could only ever select the first epoch: those fall back to accuracy.
    ``macro_f1`` and ``balanced_accuracy`` stay (on one class they rank epochs as accuracy does)."""
    metric = ctx.args.selection_metric
    if (evaluation is not None and metric in _POSITIVE_CLASS_METRICS
            and len(set(evaluation[ctx.args.label_column])) < 2):
        logger.warning("The validation rows of %s hold a single class: selecting its epoch by accuracy.", name)
        return "accuracy"
    return metric


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors of ``model``."""
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    return {name: value.detach().clone() for name, value in model.state_dict().items() if name in trainable}


def save_weights(state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Write a stage's trained tensors (main process only), refusing non-finite ones: a NaN model is never saved
    as a result."""
    if is_main_process():
        assert_finite_state(state, what)
        atomic_save_tensors(state, path)


def load_trained(ctx: StageContext, model: nn.Module, weights: Path, what: str) -> nn.Module:
    """``model`` with a stage's saved tensors loaded over it, as the full mixture, in eval mode, on the run's device."""
    model.load_state_dict(load_file(str(weights)), strict=False)
    model = to_device(model.train_mixture().eval(), ctx.device)
    check_on_device(model, ctx.device, what)
    return model
