"""Metrics shipped with mmoe as local ``evaluate`` modules (nothing is downloaded)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate
import numpy as np

METRIC_NAMES: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_f1")
"""The keys of every metric block, in the order tables show them."""

CLASSIFICATION_METRIC_PATH = str(Path(__file__).with_name("classification.py"))


@lru_cache(maxsize=1)
def load_classification_metric() -> evaluate.EvaluationModule:
    """The accuracy/precision/recall/F1 module (binary for two classes, macro otherwise), plus balanced accuracy
    and macro-F1."""
    return evaluate.load(CLASSIFICATION_METRIC_PATH)


def classification_scores(
    predictions: np.ndarray, references: np.ndarray, num_labels: int, metric: evaluate.EvaluationModule | None = None
) -> dict[str, float]:
    """``{"accuracy", "precision", "recall", "f1", "balanced_accuracy", "macro_f1"}`` of class predictions ``[N]``
    against references ``[N]``."""
    metric = metric or load_classification_metric()
    return metric.compute(
        predictions=np.asarray(predictions).tolist(), references=np.asarray(references).tolist(), num_labels=num_labels
    )
