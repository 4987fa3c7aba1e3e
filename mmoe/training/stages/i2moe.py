"""The i2moe stage (``method="i2moe"``): every expert starts from the baseline's adapter and head (as MMoE's do),
then all experts and the reweighting model train jointly on every training row; the loss (task loss + λ · I2MoE's
interaction losses) is the model's own ``forward``."""

from __future__ import annotations

import torch
from datasets import DatasetDict

from ...modeling_i2moe import I2MoEForSequenceClassification
from ..records import mark_stage_done, stage_is_done
from .common import load_trained, save_weights, selection_metric, train_stage, trainable_state
from .context import I2MOE, StageContext


def run_i2moe(
    ctx: StageContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor]
) -> I2MoEForSequenceClassification:
    """Train (or reload) I2MoE; returns the model on the run's device, in eval mode."""
    stage_dir = ctx.run_dir / I2MOE
    weights = stage_dir / "i2moe.safetensors"
    inputs = ctx.stage_inputs(I2MOE, "baseline", modalities=ctx.modalities)
    model = ctx.new_i2moe_model()
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        for expert in model.experts:
            model.load_expert_state_dict(baseline_state, expert)
        model.train_mixture()
        validation = dataset["validation"]
        summary = train_stage(
            ctx, model, I2MOE, dataset["train"], validation, stage_dir,
            epochs=ctx.args.i2moe_num_train_epochs, collator=ctx.modality_collator(),
            get_state=lambda: trainable_state(model),
            set_state=lambda state: model.load_state_dict(state, strict=False),
            metric=selection_metric(ctx, I2MOE, validation), num_classes=ctx.num_labels, label_names=["labels"],
        )
        save_weights(trainable_state(model.train_mixture()), weights, "the I2MoE model's weights")
        mark_stage_done(stage_dir, inputs, summary)
    return load_trained(ctx, model, weights, "the I2MoE model")
