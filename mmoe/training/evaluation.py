"""Stage 5: baseline vs MMoE (or I2MoE) on the evaluation split, every fusion rule, per interaction, CE_moe; for I2MoE
the interpretation of its expert weights.

The schema of the returned dict (written to ``eval_results.json``) is documented in the README.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from transformers import Trainer, TrainingArguments

from ..configuration_mmoe import DEFAULT_EXPERTS, FUSION_METHODS
from ..fusion import fuse
from .categorize import interaction_counts
from .trainer_utils import prune_empty_dirs, scores, stage_arguments

OUTPUT_FIELDS = ("logits", "expert_logits", "router_weights", "router_logits")
"""The tensors of an MMoE output in the order ``ModelOutput.to_tuple`` gives them (``None`` fields are dropped,
and those are always trailing: a one-expert forward returns only ``logits``)."""

I2MOE_OUTPUT_FIELDS = ("logits", "expert_logits", "expert_weights")
"""The tensors of an I2MoE output at inference, in ``to_tuple`` order."""


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
    # A prediction pass logs nothing (no run of its own in --report_to); its empty output folder is removed.
    args = stage_arguments(training_args, output_dir, label_names=[], eval_strategy="no", report_to="none")
    trainer = Trainer(model=model, args=args, data_collator=InputsOnly(collator))
    predictions = trainer.predict(split).predictions
    if trainer.is_world_process_zero():
        prune_empty_dirs(output_dir)
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
    predictions = {"baseline": base_pred, "mmoe": mmoe_pred}
    results: dict[str, Any] = {
        "split": split_name,
        "baseline": scores(base_pred, labels, num_labels),
        "mmoe": scores(mmoe_pred, labels, num_labels),
        "fusion": {m: scores(p.argmax(-1), labels, num_labels) for m, p in fused.items()},
        "by_interaction": _blocks_by_group(predictions, labels, interactions, experts, num_labels),
        "interaction_counts": {name: interaction_counts(s) for name, s in dataset.items()},
        "router_weights_by_interaction": _mean_weights_by_group(router_weights.numpy(), interactions, experts,
                                                                experts),
        **_class_coverage(predictions),
    }

    # CE_moe (paper, section 4): the cross-entropy of the best expert for each example, averaged.
    expert_log_probs = torch.log_softmax(expert_logits, dim=-1).numpy()
    per_expert_ce = np.stack([_cross_entropy(expert_log_probs[:, i], labels) for i in range(len(experts))], axis=1)
    results["ce_moe"] = float(per_expert_ce.min(axis=1).mean())
    results["ce_baseline"] = _mean_cross_entropy(base_out["logits"], labels)
    results["router_interaction_accuracy"] = float((router_weights.argmax(-1) == gold_experts).float().mean())

    if "gold_interaction" in split.column_names:
        results["categorization"] = categorization_report(interactions, np.asarray(split["gold_interaction"]))
        gold = np.asarray(split["gold_interaction"])
        # The oracle routes by the categorization; scored by gold type, it shows what the experts can do there.
        results["by_gold_interaction"] = _blocks_by_group(
            {**predictions, "oracle": fused["oracle"].argmax(-1)}, labels, gold, experts, num_labels
        )
        expert_predictions = {e: mix_out["expert_logits"][:, i].argmax(-1) for i, e in enumerate(experts)}
        results["experts_by_gold_interaction"] = _blocks_by_group(expert_predictions, labels, gold, experts, num_labels)
    return results


def _class_coverage(predictions: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``degenerate`` (a system answers one class on the whole split: its F1 is not evidence of skill)
    and ``predicted_classes`` of each system's predictions ``[N]``."""
    return {
        "degenerate": {system: bool(len(np.unique(pred)) <= 1) for system, pred in predictions.items()},
        "predicted_classes": {system: np.unique(pred).tolist() for system, pred in predictions.items()},
    }


def _mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of ``logits`` ``[N, C]`` at ``labels`` ``[N]``."""
    return float(_cross_entropy(torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy(), labels).mean())


def _blocks_by_group(predictions: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray,
                     names: list[str], num_labels: int) -> dict[str, dict[str, Any]]:
    """``{system: {group: scores}}`` on the rows of each group (interaction type) that has rows."""
    return {
        system: {g: scores(pred[groups == g], labels[groups == g], num_labels) for g in names if (groups == g).any()}
        for system, pred in predictions.items()
    }


def _mean_weights_by_group(weights: np.ndarray, groups: np.ndarray, names: list[str],
                           experts: list[str]) -> dict[str, dict[str, float]]:
    """``{group: {expert: mean weight}}``: the mean of ``weights`` ``[N, E]`` over the rows of each group."""
    return {g: dict(zip(experts, weights[groups == g].mean(0).tolist())) for g in names if (groups == g).any()}


def evaluate_i2moe(
    i2moe_out: dict[str, np.ndarray],
    base_out: dict[str, np.ndarray],
    dataset: DatasetDict,
    split_name: str,
    label_column: str,
    experts: list[str],
    num_labels: int,
) -> dict[str, Any]:
    """Scores of the baseline and I2MoE on ``split_name`` in the MMoE schema (``baseline``, ``mmoe`` = the run's
    mixture, here I2MoE, ``by_interaction`` from the categorization, ``by_gold_interaction`` where gold types
    exist), plus ``interpretation``: the expert weights per dataset, per interaction type and per gold type, the
    pairwise agreement of the experts' predictions, and accuracy on the rows where the experts disagree (I2MoE's
    Table 3).

    Args:
        i2moe_out: :func:`predict` of the I2MoE model (``logits`` ``[N, C]``, ``expert_logits`` ``[N, E, C]``,
            ``expert_weights`` ``[N, E]``).
        base_out: :func:`predict` of the baseline (``logits`` ``[N, C]``).
    """
    split = dataset[split_name]
    labels = np.asarray(split[label_column])
    interactions = np.asarray(split["interaction"])
    categories = list(DEFAULT_EXPERTS)
    base_pred = base_out["logits"].argmax(-1)
    i2moe_pred = i2moe_out["logits"].argmax(-1)
    weights = i2moe_out["expert_weights"]
    predictions = {"baseline": base_pred, "mmoe": i2moe_pred}
    results: dict[str, Any] = {
        "split": split_name,
        "method": "i2moe",
        "baseline": scores(base_pred, labels, num_labels),
        "mmoe": scores(i2moe_pred, labels, num_labels),
        "by_interaction": _blocks_by_group(predictions, labels, interactions, categories, num_labels),
        "interaction_counts": {name: interaction_counts(s) for name, s in dataset.items()},
        **_class_coverage(predictions),
        "experts": list(experts),
        "expert_scores": {
            name: scores(i2moe_out["expert_logits"][:, i].argmax(-1), labels, num_labels)
            for i, name in enumerate(experts)
        },
    }
    results["ce_baseline"] = _mean_cross_entropy(base_out["logits"], labels)
    interpretation: dict[str, Any] = {
        "mean_weights": dict(zip(experts, weights.mean(0).tolist())),
        "weights_by_interaction": _mean_weights_by_group(weights, interactions, categories, experts),
        **expert_agreement(i2moe_out["expert_logits"].argmax(-1), i2moe_pred, labels, experts),
    }
    if "gold_interaction" in split.column_names:
        gold = np.asarray(split["gold_interaction"])
        results["categorization"] = categorization_report(interactions, gold)
        results["by_gold_interaction"] = _blocks_by_group(predictions, labels, gold, categories, num_labels)
        by_gold = _mean_weights_by_group(weights, gold, categories, experts)
        interpretation["weights_by_gold_interaction"] = by_gold
        if "synergy" in by_gold and "synergy" in experts:
            on_synergy = by_gold["synergy"]["synergy"]
            elsewhere = [w["synergy"] for g, w in by_gold.items() if g != "synergy"]
            interpretation["synergy_weight_highest_on_gold_synergy"] = bool(
                not elsewhere or on_synergy > max(elsewhere)
            )
    results["interpretation"] = interpretation
    return results


def expert_agreement(expert_predictions: np.ndarray, predictions: np.ndarray, labels: np.ndarray,
                     experts: list[str]) -> dict[str, Any]:
    """How often the experts' own predictions ``[N, E]`` agree, and how the mixture's ``predictions`` ``[N]`` do
    where they do not (I2MoE, Table 3).

    Returns:
        ``pairwise_agreement`` ``{"a|b": rate}``, ``all_agree_rate``, ``disagreement_rows`` and
        ``accuracy_when_experts_disagree`` (``None`` without such rows).
    """
    pairwise = {
        f"{experts[i]}|{experts[j]}": float(np.mean(expert_predictions[:, i] == expert_predictions[:, j]))
        for i in range(len(experts)) for j in range(i + 1, len(experts))
    }
    agree = (expert_predictions == expert_predictions[:, :1]).all(axis=1)
    disagree = ~agree
    return {
        "pairwise_agreement": pairwise,
        "all_agree_rate": float(agree.mean()),
        "disagreement_rows": int(disagree.sum()),
        "accuracy_when_experts_disagree": (
            float(np.mean(predictions[disagree] == labels[disagree])) if disagree.any() else None
        ),
    }


def categorization_report(predicted: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """Agreement of inferred interaction categories with gold ones: accuracy and ``{gold: {predicted: n}}``."""
    names = sorted(set(gold) | set(predicted))
    confusion = {g: {p: int(np.sum((gold == g) & (predicted == p))) for p in names} for g in sorted(set(gold))}
    return {"accuracy": float(np.mean(predicted == gold)), "confusion": confusion}
