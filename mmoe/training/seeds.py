"""Several training seeds: mean ± std of every score, and the seed whose weights represent the run."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..metrics import METRIC_NAMES
from .degenerate import mixture_name

I2MOE = "i2moe"


def choose_root_seed(seeds: list[int], per_seed: list[dict[str, Any]], metric: str) -> tuple[int, str]:
    """The seed whose weights the output folder holds: the best validation ``metric`` (``--selection_metric``) of
    the mixture with router fusion, ``results["validation"]["mmoe"]``; ties go to the lowest seed.

    The validation split, never the evaluation split: choosing by test scores would bias the reported numbers.
    Returns ``(seed, reason)``, the reason being one sentence for ``eval_results.json`` and the model card.
    """
    values = {seed: float(run["validation"]["mmoe"][metric]) for seed, run in zip(seeds, per_seed)}
    best = min(values, key=lambda seed: (-values[seed], seed))
    listed = ", ".join(f"seed {seed}: {value:.4f}" for seed, value in sorted(values.items()))
    system = mixture_name(per_seed[0]) if per_seed[0].get("method") == I2MOE else "the mixture (router fusion)"
    reason = (
        f"highest validation {metric} of {system} on the validation split ({listed}); ties go to the lowest seed"
    )
    return best, reason


_METRICS = METRIC_NAMES
_CORE_METRICS = ("accuracy", "precision", "recall", "f1")  # a dict holding these is a metric block
_SPREAD_SCALARS = ("ce_moe", "ce_baseline", "router_interaction_accuracy")


def aggregate_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every number; metric blocks (and CE_moe, CE_baseline, router accuracy) also get a
    ``<name>_std`` beside each value (population std). Counts and other numbers are averaged without a spread."""

    def combine(values: list[Any]) -> Any:
        if any(value is None for value in values):  # e.g. no row where I2MoE's experts disagree in some seed
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return float(np.mean(numbers)) if numbers else None
        first = values[0]
        if all(isinstance(value, bool) for value in values):
            return all(values)  # a flag holds over the seeds when it holds in every one
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
            out = {k: combine([v[k] for v in values]) for k in keys}
            if set(_CORE_METRICS) <= set(first):
                out.update({f"{k}_std": float(np.std([v[k] for v in values])) for k in _METRICS if k in out})
            return out
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            mean = float(np.mean(values))
            return int(mean) if all(isinstance(v, int) for v in values) and mean.is_integer() else mean
        return first

    combined = combine(per_seed)
    for key in _SPREAD_SCALARS:
        if all(key in run for run in per_seed):
            combined[f"{key}_std"] = float(np.std([run[key] for run in per_seed]))
    return combined


__all__ = ["aggregate_seeds", "choose_root_seed"]
