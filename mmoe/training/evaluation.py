"""Stage 5: baseline vs MMoE on the evaluation split, every fusion rule, per interaction, CE_moe.

The schema of the returned dict (written to ``eval_results.json``) is documented in the README.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import TrainingArguments

from ..fusion import FUSION_METHODS, fuse
from ..modeling_mmoe import MMoEForSequenceClassification
from .categorize import interaction_counts
from .trainer_utils import scores


@torch.no_grad()
def predict(
    model: MMoEForSequenceClassification, split: Dataset, collator: Any, batch_size: int, desc: str
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``split``; return every output tensor concatenated (``logits`` ``[N, C]``, ...)."""
    model.eval()
    loader = DataLoader(split, batch_size=batch_size, collate_fn=collator)
    collected: dict[str, list[torch.Tensor]] = {}
    for batch in tqdm(loader, desc=desc, unit="batch"):
        batch = {k: v.to(model.device) for k, v in batch.items() if k not in ("labels", "interaction_labels")}
        outputs = model(**batch)
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                collected.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values).numpy() for key, values in collected.items()}


def _cross_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -log_probs[np.arange(len(labels)), labels]


def evaluate_mixture(
    model: MMoEForSequenceClassification,
    baseline: MMoEForSequenceClassification,
    dataset: DatasetDict,
    split_name: str,
    collator: Any,
    training_args: TrainingArguments,
    num_labels: int,
) -> dict[str, Any]:
    """Scores of the baseline and the mixture on ``split_name`` (see the README for the schema)."""
    split = dataset[split_name]
    batch_size = training_args.per_device_eval_batch_size
    labels = np.asarray(split[collator.label_column])
    interactions = np.asarray(split["interaction"])
    experts = list(model.experts)

    base_out = predict(baseline, split, collator, batch_size, "baseline predictions")
    mix_out = predict(model, split, collator, batch_size, "MMoE predictions")
    expert_logits = torch.from_numpy(mix_out["expert_logits"])
    router_weights = torch.from_numpy(mix_out["router_weights"])
    gold_experts = torch.tensor([experts.index(i) for i in interactions])
    prior = torch.tensor(model.config.prior_weights or [1.0] * len(experts))
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
