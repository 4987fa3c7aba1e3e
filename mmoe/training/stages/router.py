"""Stage 4 (MMoE): the router, trained with the experts frozen, by the model's own router objective
(``config.router_objective``: the fused prediction's likelihood, or the paper's interaction focal loss).

The frozen experts' logits are computed once (``Trainer.predict``) and cached with the rows. A router without an
adapter of its own reads frozen features too, so those are cached as well and each step trains only the head on a
matrix; a router with its own adapter (``router_input="adapter"``) runs the backbone once per step, through that
adapter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import default_data_collator

from ...modeling_mmoe import MMoEForSequenceClassification
from ..categorize import interaction_counts
from ..evaluation import predict
from ..records import mark_stage_done, stage_is_done
from .common import load_trained, save_weights, train_stage
from .context import StageContext

ROUTER = "router"
ROUTER_LOGITS_INDEX = 3
"""Position of ``router_logits`` among the output's tensors (``logits``, ``expert_logits``, ``router_weights``,
``router_logits``), which the Trainer hands to ``compute_metrics`` in field order."""


def run_router(
    ctx: StageContext, dataset: DatasetDict, expert_states: dict[str, dict[str, torch.Tensor]]
) -> MMoEForSequenceClassification:
    """Train (or reload) the router; returns the assembled mixture on the run's device, in eval mode."""
    stage_dir = ctx.run_dir / ROUTER
    model = ctx.new_model(ctx.experts, with_router=True)
    for expert, state in expert_states.items():
        model.load_expert_state_dict(state, expert)
    counts = interaction_counts(dataset["train"])
    total = sum(counts.values())
    model.config.prior_weights = [counts.get(e, 0) / total for e in ctx.experts]
    weights = stage_dir / "router.safetensors"
    inputs = ctx.stage_inputs(ROUTER, "experts")
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        summary = _train_router(ctx, model, dataset, stage_dir)
        names = set(model.router_parameter_names())  # the head, and the router's own adapter if any
        save_weights({k: v for k, v in model.state_dict().items() if k in names}, weights, "the router's weights")
        mark_stage_done(stage_dir, inputs, summary)
    return load_trained(ctx, model, weights, "the assembled mixture")


def _train_router(
    ctx: StageContext, model: MMoEForSequenceClassification, dataset: DatasetDict, stage_path: Any
) -> dict[str, Any]:
    own_adapter = bool(model.mmoe.router_adapter)
    train, validation = (_cached_rows(ctx, model, dataset[name], stage_path, with_features=not own_adapter)
                         for name in ("train", "validation"))
    interaction = model.config.router_objective == "interaction"
    collator = WithExpertLogits(ctx.collator(interactions=True)) if own_adapter else default_data_collator
    router_names = set(model.train_router().router_parameter_names())
    return train_stage(
        ctx, model, ROUTER, train, validation, stage_path,
        epochs=ctx.args.router_num_train_epochs, collator=collator,
        get_state=lambda: {k: v for k, v in model.state_dict().items() if k in router_names},
        set_state=lambda state: model.load_state_dict(state, strict=False),
        # macro-F1 over interactions (paper, appendix H), or over the classes of the fused prediction
        metric="macro_f1", average="macro",
        num_classes=len(ctx.experts) if interaction else ctx.num_labels,
        label_names=["interaction_labels"] if interaction else ["labels"],
        prediction_index=ROUTER_LOGITS_INDEX if interaction else 0,
        learning_rate=ctx.args.router_learning_rate,
        # The router's step holds one adapter's activations at most, as an expert's does: nothing to checkpoint.
        gradient_checkpointing=False,
    )


class RouterCacheModule(nn.Module):
    """``forward(**inputs) -> {"expert_logits": [B, E, C], "router_inputs": [B, D]}`` of a frozen mixture (the router
    inputs only with ``with_features``), so that ``Trainer.predict`` computes what the router stage caches with the
    run's device, precision and processes. Output order: ``expert_logits`` first."""

    def __init__(self, model: MMoEForSequenceClassification, with_features: bool) -> None:
        super().__init__()
        self.model, self.with_features = model, with_features

    @torch.no_grad()
    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        reads_experts = self.model.config.router_input == "experts"
        own_pass = self.with_features and not reads_experts
        states = self.model.mmoe(**inputs, output_pooled_output=own_pass, return_dict=True)
        out = {"expert_logits": self.model.expert_logits_from(states)}
        if self.with_features:
            out["router_inputs"] = self.model.router_inputs(states)
        return out


def _cached_rows(
    ctx: StageContext, model: MMoEForSequenceClassification, split: Dataset, stage_path: Any, with_features: bool
) -> Dataset:
    """``split`` with the frozen experts' logits ``expert_logits`` ``[E, C]`` per row; with ``with_features``, rows
    of cached tensors only: ``router_inputs`` ``[D]``, ``expert_logits``, ``labels`` and ``interaction_labels``."""
    model.train_mixture().eval()
    fields = ("expert_logits", "router_inputs") if with_features else ("expert_logits",)
    out = predict(RouterCacheModule(model, with_features), split, ctx.collator(), ctx.args, stage_path / "features",
                  fields=fields)
    if not with_features:
        return split.add_column("expert_logits", out["expert_logits"].tolist())
    columns = {
        "router_inputs": out["router_inputs"],
        "expert_logits": out["expert_logits"],
        "labels": np.asarray(split[ctx.args.label_column]),
        "interaction_labels": np.asarray([ctx.experts.index(i) for i in split["interaction"]]),
    }
    return Dataset.from_dict(columns).with_format("torch")


class WithExpertLogits:
    """A collator for rows that carry cached ``expert_logits`` ``[E, C]``: ``collator`` encodes the rest, and the
    logits come out stacked ``[B, E, C]`` beside its batch."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator([{k: v for k, v in row.items() if k != "expert_logits"} for row in rows])
        if "expert_logits" in rows[0]:
            batch["expert_logits"] = torch.tensor([row["expert_logits"] for row in rows], dtype=torch.float32)
        return batch
