"""Say it when a system answers one class.

On a positive-heavy split a model that always answers "positive" scores a high binary F1 (MUStARD: F1 0.60 at
accuracy 0.43). The pipeline records ``eval_results["degenerate"]`` (``{"baseline": bool, "mmoe": bool}``, from
the predictions on the evaluation split) and ``eval_results["predicted_classes"]``; :func:`degenerate_warnings`
turns them into the warning lines that ``mmoe-train``'s summary and the model card show. Plain mappings only: no
torch, so the card can use it without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SYSTEM_NAMES: dict[str, str] = {"baseline": "the baseline", "mmoe": "MMoE (router fusion)"}
MIXTURE_NAMES: dict[str, str] = {"mmoe": "MMoE (router fusion)", "i2moe": "I2MoE (reweighted experts)"}
"""What the ``mmoe`` block of ``eval_results.json`` is, by the run's ``method``."""


def mixture_name(results: Mapping[str, Any]) -> str:
    """The display name of the run's mixture: MMoE, or I2MoE when ``results["method"] == "i2moe"``."""
    return MIXTURE_NAMES.get(str(results.get("method") or "mmoe"), MIXTURE_NAMES["mmoe"])


def degenerate_warnings(results: Mapping[str, Any], id2label: Mapping[Any, Any] | None = None) -> list[str]:
    """One sentence per system flagged in ``results["degenerate"]``, e.g. ``"the baseline predicts a single class
    (label 1) on the test split: its F1 is not evidence of skill; compare balanced accuracy."``

    Args:
        results: ``eval_results.json`` (single seed or the mean over seeds, which lists ``degenerate_seeds``).
        id2label: class names (keys as ints or strings), shown beside the label index when given.
    """
    flags = results.get("degenerate")
    if not isinstance(flags, Mapping):
        return []
    split = results.get("split") or "evaluation"
    classes = results.get("predicted_classes") if isinstance(results.get("predicted_classes"), Mapping) else {}
    seeds_of = results.get("degenerate_seeds") if isinstance(results.get("degenerate_seeds"), Mapping) else {}
    notes = []
    names = {**SYSTEM_NAMES, "mmoe": mixture_name(results)}
    for key, name in names.items():
        if flags.get(key) is not True:
            continue
        predicted = classes.get(key) or []
        label = ""
        if len(predicted) == 1:
            names = {str(k): v for k, v in (id2label or {}).items()}
            label = f" (label {predicted[0]}" + (f": {names[str(predicted[0])]}" if str(predicted[0]) in names else "")
            label += ")"
        seeds = seeds_of.get(key) or []
        where = f" in seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds else ""
        notes.append(
            f"{name} predicts a single class{label} on the {split} split{where}: its F1 is not evidence of skill; "
            "compare balanced accuracy."
        )
    return notes
