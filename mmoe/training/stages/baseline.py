"""Stage 2: the single-model baseline, one LoRA adapter + head on every training row."""

from __future__ import annotations

import torch
from datasets import DatasetDict
from safetensors.torch import load_file

from ..records import mark_stage_done, stage_is_done
from .common import save_weights, selection_metric, train_stage
from .context import StageContext

BASELINE = "baseline"


def run_baseline(ctx: StageContext, dataset: DatasetDict) -> dict[str, torch.Tensor]:
    """Train (or reload) the baseline; returns its weights
    (:meth:`~mmoe.MMoEForSequenceClassification.expert_state_dict`)."""
    stage_dir = ctx.run_dir / BASELINE
    weights = stage_dir / "baseline.safetensors"
    inputs = ctx.stage_inputs(BASELINE, "categorize")
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        model = ctx.new_model([BASELINE]).train_expert(BASELINE)
        validation = dataset["validation"]
        summary = train_stage(
            ctx, model, BASELINE, dataset["train"], validation, stage_dir,
            epochs=ctx.args.baseline_num_train_epochs, collator=ctx.collator(),
            get_state=lambda: model.expert_state_dict(BASELINE),
            set_state=lambda state: model.load_expert_state_dict(state, BASELINE),
            metric=selection_metric(ctx, BASELINE, validation), num_classes=ctx.num_labels, label_names=["labels"],
        )
        save_weights(model.expert_state_dict(BASELINE), weights, "the baseline's weights")
        mark_stage_done(stage_dir, inputs, summary)
    return load_file(str(weights))
