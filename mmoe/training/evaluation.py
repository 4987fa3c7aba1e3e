"""Stage 5: baseline vs MMoE on the evaluation split, every fusion rule, per interaction, CE_moe.

The schema of the returned dict (written to ``eval_results.json``) is documented in the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from transformers import Trainer, TrainingArguments

from ..configuration_mmoe import FUSION_METHODS
from ..fusion import fuse
from .categorize import interaction_counts
from .trainer_utils import scores, stage_arguments

OUTPUT_FIELDS = ("logits", "expert_logits", "router_weights", "router_logits")
"""The tensors of an MMoE output in the order ``ModelOutput.to_tuple`` gives them (``None`` fields are dropped,
and those are always trailing: a one-expert forward returns only ``logits``)."""


class InputsOnly:
    """Wrap a collator so that batches carry only model inputs: without ``labels`` the model computes no loss,
    and ``Trainer.predict`` returns exactly the output tensors."""

    def __init__(self, collator: Any, drop: tuple[str, ...] = ("labels", "interaction_labels")) -> None:
        self.collator, self.drop = collator, drop

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: v for k, v in self.collator(rows).items() if k not in self.drop}


def predict(
    model: torch.nn.Module,
    split: Dataset,
    collator: Any,
    training_args: TrainingArguments,
    output_dir: Path,
    fields: tuple[str, ...] = OUTPUT_FIELDS,
) -> dict[str, np.ndarray]:
    """Every output tensor of ``model`` over ``split``, through ``Trainer.predict``.

    The Trainer places the model on ``training_args.device``, applies the run's mixed precision and, under a
    multi-process launcher, shards the rows and gathers them back in order with duplicates removed, so every
    process gets each row exactly once.

    Returns:
        ``{field: array [N, ...]}`` for the first ``len(outputs)`` names of ``fields`` (bf16 comes back as fp32).
    """
    args = stage_arguments(training_args, output_dir, label_names=[], eval_strategy="no")
    trainer = Trainer(model=model, args=args, data_collator=InputsOnly(collator))
    predictions = trainer.predict(split).predictions
    if not isinstance(predictions, (tuple, list)):
        predictions = (predictions,)
    out = {name: np.asarray(value, dtype=np.float32) for name, value in zip(fields, predictions)}
    rows = {name: len(value) for name, value in out.items()}
    if any(n != len(split) for n in rows.values()):
        raise RuntimeError(f"predict: expected {len(split)} rows per output, got {rows}.")
    return out


def _cross_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -log_probs[np.arange(len(labels)), labels]


def evaluate_mixture(
    mix_out: dict[str, np.ndarray],
    base_out: dict[str, np.ndarray],
    dataset: DatasetDict,
    split_name: str,
    label_column: str,
    experts: list[str],
    prior_weights: list[float] | None,
    num_labels: int,
) -> dict[str, Any]:
    """Scores of the baseline and the mixture on ``split_name`` (see the README for the schema).

    Args:
        mix_out: :func:`predict` of the mixture on the split (``expert_logits`` ``[N, E, C]``,
            ``router_weights`` ``[N, E]``).
        base_out: :func:`predict` of the baseline (``logits`` ``[N, C]``).
    """
    split = dataset[split_name]
    labels = np.asarray(split[label_column])
    interactions = np.asarray(split["interaction"])
    expert_logits = torch.from_numpy(mix_out["expert_logits"])
    router_weights = torch.from_numpy(mix_out["router_weights"])
    gold_experts = torch.tensor([experts.index(i) for i in interactions])
    prior = torch.tensor(prior_weights or [1.0] * len(experts))
    weights = {"router": router_weights, "prior": prior, "oracle": gold_experts}
    fused = {m: fuse(expert_logits, m, weights.get(m)).numpy() for m in FUSION_METHODS}

    base_pred = base_out["logits"].argmax(-1)
    mmoe_pred = fused["router"].argmax(-1)
    results: dict[str, Any] = {
        "split": split_name,
        "baseline": scores(base_pred, labels, num_labels),
        "mmoe": scores(mmoe_pred, labels, num_labels),
        "fusion": {m: scores(p.argmax(-1), labels, num_labels) for m, p in fused.items()},
        "by_interaction": {"baseline": {}, "mmoe": {}},
        "interaction_counts": {name: interaction_counts(s) for name, s in dataset.items()},
        "router_weights_by_interaction": {},
        # A system that answers one class on the whole split (DESIGN, section 6): its F1 is not evidence of skill.
        "degenerate": {"baseline": bool(len(np.unique(base_pred)) <= 1), "mmoe": bool(len(np.unique(mmoe_pred)) <= 1)},
        "predicted_classes": {"baseline": np.unique(base_pred).tolist(), "mmoe": np.unique(mmoe_pred).tolist()},
    }
    for interaction in experts:
        rows = interactions == interaction
        if rows.any():
            results["by_interaction"]["baseline"][interaction] = scores(base_pred[rows], labels[rows], num_labels)
            results["by_interaction"]["mmoe"][interaction] = scores(mmoe_pred[rows], labels[rows], num_labels)
            mean_weights = router_weights[torch.from_numpy(rows)].mean(0).tolist()
            results["router_weights_by_interaction"][interaction] = dict(zip(experts, mean_weights))

    # CE_moe (paper, section 4): the cross-entropy of the best expert for each example, averaged.
    expert_log_probs = torch.log_softmax(expert_logits, dim=-1).numpy()
    per_expert_ce = np.stack([_cross_entropy(expert_log_probs[:, i], labels) for i in range(len(experts))], axis=1)
    base_log_probs = torch.log_softmax(torch.from_numpy(base_out["logits"]), dim=-1).numpy()
    results["ce_moe"] = float(per_expert_ce.min(axis=1).mean())
    results["ce_baseline"] = float(_cross_entropy(base_log_probs, labels).mean())
    results["router_interaction_accuracy"] = float((router_weights.argmax(-1) == gold_experts).float().mean())

    if "gold_interaction" in split.column_names:
        results["categorization"] = categorization_report(interactions, np.asarray(split["gold_interaction"]))
        gold = np.asarray(split["gold_interaction"])
        results["by_gold_interaction"] = {
            "baseline": {g: scores(base_pred[gold == g], labels[gold == g], num_labels) for g in experts
                         if (gold == g).any()},
            "mmoe": {g: scores(mmoe_pred[gold == g], labels[gold == g], num_labels) for g in experts
                     if (gold == g).any()},
        }
    return results


def categorization_report(predicted: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """Agreement of inferred interaction categories with gold ones: accuracy and ``{gold: {predicted: n}}``."""
    names = sorted(set(gold) | set(predicted))
    confusion = {g: {p: int(np.sum((gold == g) & (predicted == p))) for p in names} for g in sorted(set(gold))}
    return {"accuracy": float(np.mean(predicted == gold)), "confusion": confusion}
