"""Stage 3: one expert per interaction, each starting from the baseline (paper, appendix G) and trained on the
training rows of its interaction."""

from __future__ import annotations

import logging
import math

import torch
from datasets import DatasetDict
from safetensors.torch import load_file

from ..records import mark_stage_done, stage_is_done
from .common import save_weights, selection_metric, train_stage
from .context import StageContext

logger = logging.getLogger("mmoe")


def run_experts(
    ctx: StageContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """Train (or reload) every expert; returns ``{expert: weights}``."""
    stage_dir = ctx.run_dir / "experts"
    files = tuple(f"{expert}.safetensors" for expert in ctx.experts)
    inputs = ctx.stage_inputs("experts", "baseline")
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=files):
        model = ctx.new_model(ctx.experts)
        summaries = {}
        expert_rows = dataset["train"].filter(lambda r: r["expert_train"])
        for expert in ctx.experts:
            model.load_expert_state_dict(baseline_state, expert)
            train = expert_rows.filter(lambda r, e=expert: r["interaction"] == e)
            validation = dataset["validation"].filter(lambda r, e=expert: r["interaction"] == e)
            if len(train) < ctx.args.min_expert_examples:
                logger.warning(
                    "Only %d training rows of %s (< --min_expert_examples %d): this expert keeps the baseline's "
                    "weights.", len(train), expert, ctx.args.min_expert_examples,
                )
                summaries[expert] = {"fallback": "baseline", "train_rows": len(train)}
            else:
                if len(validation) == 0:
                    logger.warning("No validation rows of %s: selecting its epoch on the whole validation set.",
                                   expert)
                    validation = dataset["validation"]
                model.train_expert(expert)
                summaries[expert] = train_stage(
                    ctx, model, f"experts/{expert}", train, validation, stage_dir / expert,
                    epochs=expert_epochs(ctx, len(train)), collator=ctx.collator(),
                    get_state=lambda e=expert: model.expert_state_dict(e),
                    set_state=lambda state, e=expert: model.load_expert_state_dict(state, e),
                    metric=selection_metric(ctx, expert, validation), num_classes=ctx.num_labels,
                    label_names=["labels"],
                )
            save_weights(model.expert_state_dict(expert), stage_dir / f"{expert}.safetensors",
                         f"expert {expert}'s weights")
        mark_stage_done(stage_dir, inputs, summaries)
    return {expert: load_file(str(stage_dir / name)) for expert, name in zip(ctx.experts, files)}


def expert_epochs(ctx: StageContext, rows: int) -> float:
    """The expert's epochs (``expert_num_train_epochs``, else ``num_train_epochs``), raised to whole epochs until
    the expert takes ``expert_min_steps`` optimizer steps on its ``rows`` training rows."""
    args = ctx.args
    epochs = args.expert_num_train_epochs if args.expert_num_train_epochs is not None else args.num_train_epochs
    batch = args.per_device_train_batch_size * max(args.world_size, 1) * args.gradient_accumulation_steps
    steps_per_epoch = max(math.ceil(rows / batch), 1)
    if args.expert_min_steps > 0 and epochs * steps_per_epoch < args.expert_min_steps:
        epochs = float(math.ceil(args.expert_min_steps / steps_per_epoch))
    return epochs
