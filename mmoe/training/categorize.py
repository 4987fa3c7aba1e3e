"""MMoE step 1: split a labelled multimodal dataset into redundancy / uniqueness / synergy subsets.

The rule is the paper's Algorithm 1. With the gold label ``y`` and two unimodal predictions
``y_text`` and ``y_vision``, the discrepancy ``Δ = [y_text ≠ y] + [y_vision ≠ y]`` gives

* ``Δ = 0`` → ``"redundancy"`` (each modality alone is right),
* ``Δ = 1`` → ``"uniqueness"`` (exactly one modality is right),
* ``Δ = 2`` → ``"synergy"`` (neither is right; with more than two classes this holds whether or not the
  two wrong predictions agree).

Two optional refinements, both off unless asked for, and meant for **training data only**
(:func:`categorize_splits` applies them to the training split and leaves evaluation splits whole):

* confidence filtering: drop rows whose unimodal confidence ``|p(yes) - p(no)|`` is below δ
  (paper: δ = 0.1) in either modality;
* rebalancing: inside each interaction subset, drop the least confident rows of the majority gold
  label until the minority gold label makes up at least a given fraction of the subset (paper: 20 %).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from ..configuration_mmoe import DEFAULT_EXPERTS

logger = logging.getLogger(__name__)

REDUNDANCY, UNIQUENESS, SYNERGY = DEFAULT_EXPERTS
INTERACTION_COLUMN = "interaction"


def _require_columns(dataset: Dataset, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} not found; the dataset has {dataset.column_names}. "
            "Add the unimodal predictions first (see mmoe.training.unimodal) or pass the right column names."
        )


def _int_column(dataset: Dataset, column: str, what: str) -> np.ndarray:
    """Return ``dataset[column]`` as an int64 array ``[N]``; raise if a value is missing or not an integer."""
    values = dataset[column]
    bad = [i for i, v in enumerate(values) if isinstance(v, float) or not isinstance(v, (int, np.integer))]
    if bad:
        raise ValueError(
            f"{what}: column {column!r} must hold integer label ids, but row {bad[0]} holds "
            f"{values[bad[0]]!r} ({len(bad)} such rows). Map label names to ids first."
        )
    return np.asarray(values, dtype=np.int64)


def _label_set(dataset: Dataset, label_column: str, labels: np.ndarray, num_labels: int | None) -> int:
    """Number of classes: ``num_labels`` if given, else the ``ClassLabel`` size, else ``max(label) + 1``."""
    if num_labels is None:
        feature = dataset.features[label_column]
        num_labels = feature.num_classes if isinstance(feature, ClassLabel) else int(labels.max()) + 1
    if num_labels < 2:
        raise ValueError(f"categorize_interactions: need at least 2 classes, got num_labels={num_labels}.")
    return num_labels


def _check_in_label_set(values: np.ndarray, column: str, num_labels: int) -> None:
    outside = np.flatnonzero((values < 0) | (values >= num_labels))
    if outside.size:
        raise ValueError(
            f"categorize_interactions: column {column!r} holds {values[outside[0]]} at row {outside[0]} "
            f"({outside.size} rows outside the label set 0..{num_labels - 1}). Fix the labels/predictions or "
            "pass the right `num_labels`."
        )


def interaction_labels(labels: np.ndarray, text_predictions: np.ndarray, vision_predictions: np.ndarray) -> list[str]:
    """Algorithm 1 on arrays of label ids ``[N]``: ``Δ = [y_text≠y] + [y_vision≠y]`` → interaction names."""
    delta = (text_predictions != labels).astype(int) + (vision_predictions != labels).astype(int)
    names = (REDUNDANCY, UNIQUENESS, SYNERGY)
    return [names[d] for d in delta]


def interaction_counts(dataset: Dataset, column: str = INTERACTION_COLUMN) -> dict[str, int]:
    """Rows per interaction, ``{"redundancy": n, "uniqueness": n, "synergy": n}`` (zeros included)."""
    _require_columns(dataset, [column], "interaction_counts")
    counts = Counter(dataset[column])
    return {name: counts.get(name, 0) for name in DEFAULT_EXPERTS} | {
        name: n for name, n in counts.items() if name not in DEFAULT_EXPERTS
    }


def _row_confidence(dataset: Dataset, confidence_columns: Sequence[str]) -> np.ndarray | None:
    """Per-row confidence ``[N]``: the smaller of the unimodal confidences (``None`` without columns)."""
    if not confidence_columns:
        return None
    stacked = np.stack([np.asarray(dataset[c], dtype=np.float64) for c in confidence_columns])
    if np.isnan(stacked).any():
        raise ValueError(f"categorize_interactions: confidence columns {list(confidence_columns)} contain NaN.")
    return stacked.min(axis=0)


def filter_by_confidence(dataset: Dataset, confidence_columns: Sequence[str], min_confidence: float) -> Dataset:
    """Keep rows whose confidence is at least ``min_confidence`` in **every** column of ``confidence_columns``."""
    if not confidence_columns:
        raise ValueError(
            "confidence filtering needs confidence columns: pass `text_confidence_column` and/or "
            "`vision_confidence_column` (|p(yes) - p(no)| of each unimodal prediction)."
        )
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"`min_confidence` must be in [0, 1], got {min_confidence}.")
    _require_columns(dataset, confidence_columns, "filter_by_confidence")
    keep = np.flatnonzero(_row_confidence(dataset, confidence_columns) >= min_confidence)
    logger.info("Confidence filter (δ=%s) keeps %d of %d rows.", min_confidence, keep.size, len(dataset))
    return dataset.select(keep)


def _rebalance_indices(labels: np.ndarray, confidence: np.ndarray, min_fraction: float) -> np.ndarray:
    """Row positions to keep so that the rarest present class is at least ``min_fraction`` of the rows.

    Repeatedly drops the least confident row of the largest class. ``labels`` and ``confidence`` are ``[N]``;
    ties in confidence drop the later row first, so the result is deterministic.
    """
    classes = np.unique(labels)
    if classes.size < 2:
        return np.arange(labels.size)
    # Per class, rows ordered from most to least confident (stable: earlier rows first on ties).
    order = {c: [i for i in np.argsort(-confidence, kind="stable") if labels[i] == c] for c in classes}
    counts = {c: len(rows) for c, rows in order.items()}
    while min(counts.values()) < min_fraction * sum(counts.values()):
        largest = max(counts, key=lambda c: (counts[c], -c))
        if counts[largest] == min(counts.values()):
            break  # all classes equal: the best any undersampling can do
        counts[largest] -= 1
    return np.sort(np.concatenate([np.asarray(order[c][: counts[c]], dtype=np.int64) for c in classes]))


def rebalance_interactions(
    dataset: Dataset,
    label_column: str,
    min_minority_fraction: float,
    confidence_columns: Sequence[str] = (),
    interaction_column: str = INTERACTION_COLUMN,
    seed: int = 0,
) -> Dataset:
    """Undersample the majority gold label inside each interaction subset, least confident rows first.

    After this, in every subset that holds at least two gold labels, the rarest label is at least
    ``min_minority_fraction`` of the subset (for ``k`` classes, at most ``1/k`` is reachable; the subset is
    then left balanced). Without confidence columns the rows to drop are chosen at random with ``seed``.
    A subset with a single gold label cannot be rebalanced by undersampling and is kept as is (logged).
    Row order is preserved.
    """
    if not 0.0 < min_minority_fraction <= 0.5:
        raise ValueError(f"`min_minority_fraction` must be in (0, 0.5], got {min_minority_fraction}.")
    _require_columns(dataset, [label_column, interaction_column, *confidence_columns], "rebalance_interactions")
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    interactions = np.asarray(dataset[interaction_column])
    confidence = _row_confidence(dataset, confidence_columns)
    if confidence is None:
        confidence = np.random.default_rng(seed).random(len(dataset))
    keep: list[np.ndarray] = []
    for name in np.unique(interactions):
        rows = np.flatnonzero(interactions == name)
        if np.unique(labels[rows]).size < 2:
            logger.warning("Rebalancing: the %r subset holds a single gold label; kept unchanged.", name)
        keep.append(rows[_rebalance_indices(labels[rows], confidence[rows], min_minority_fraction)])
    kept = np.sort(np.concatenate(keep)) if keep else np.arange(0)
    logger.info("Rebalancing (minority ≥ %s) keeps %d of %d rows.", min_minority_fraction, kept.size, len(dataset))
    return dataset.select(kept)


def categorize_interactions(
    dataset: Dataset,
    label_column: str = "label",
    text_prediction_column: str = "text_prediction",
    vision_prediction_column: str = "vision_prediction",
    *,
    num_labels: int | None = None,
    text_confidence_column: str | None = None,
    vision_confidence_column: str | None = None,
    min_confidence: float | None = None,
    min_minority_fraction: float | None = None,
    interaction_column: str = INTERACTION_COLUMN,
    seed: int = 0,
) -> Dataset:
    """Add an ``interaction`` column (``"redundancy" | "uniqueness" | "synergy"``) following Algorithm 1.

    Args:
        dataset: one split with integer gold labels and integer unimodal predictions.
        label_column, text_prediction_column, vision_prediction_column: the three label-id columns.
        num_labels: size of the label set; defaults to the ``ClassLabel`` size or ``max(label) + 1``.
            Labels or predictions outside ``0..num_labels-1`` raise ``ValueError``.
        text_confidence_column, vision_confidence_column: unimodal confidences ``|p(yes) - p(no)|``
            (top-1 minus top-2 probability for more classes); used by the two refinements below.
        min_confidence: if set (paper: 0.1), drop rows whose confidence is below it in either modality.
        min_minority_fraction: if set (paper: 0.2), rebalance each interaction subset so its rarest gold label
            is at least this fraction, dropping the least confident majority rows (the smaller of the two
            confidences ranks a row; random with ``seed`` when no confidence column is given).
        interaction_column: name of the added column.
        seed: only used by rebalancing without confidence columns.

    The refinements are meant for training data only: call this without them on evaluation splits, or use
    :func:`categorize_splits`, which does exactly that. Counts per category are logged at INFO level;
    :func:`interaction_counts` returns them.

    Returns:
        The dataset (rows possibly filtered, order kept) with the ``interaction`` column added or replaced.
    """
    what = "categorize_interactions"
    if len(dataset) == 0:
        raise ValueError(f"{what}: the dataset is empty; nothing to categorize.")
    prediction_columns = [text_prediction_column, vision_prediction_column]
    _require_columns(dataset, [label_column, *prediction_columns], what)
    confidence_columns = [c for c in (text_confidence_column, vision_confidence_column) if c]
    _require_columns(dataset, confidence_columns, what)

    labels = _int_column(dataset, label_column, what)
    num_labels = _label_set(dataset, label_column, labels, num_labels)
    _check_in_label_set(labels, label_column, num_labels)
    predictions = [_int_column(dataset, c, what) for c in prediction_columns]
    for column, values in zip(prediction_columns, predictions):
        _check_in_label_set(values, column, num_labels)

    if interaction_column in dataset.column_names:
        dataset = dataset.remove_columns(interaction_column)
    dataset = dataset.add_column(interaction_column, interaction_labels(labels, *predictions))
    if min_confidence is not None:
        dataset = filter_by_confidence(dataset, confidence_columns, min_confidence)
    if min_minority_fraction is not None:
        dataset = rebalance_interactions(
            dataset, label_column, min_minority_fraction, confidence_columns, interaction_column, seed
        )
    logger.info("Interaction counts: %s", interaction_counts(dataset, interaction_column))
    return dataset


def categorize_splits(
    dataset_dict: DatasetDict,
    train_split: str | None = "train",
    *,
    min_confidence: float | None = None,
    min_minority_fraction: float | None = None,
    **kwargs,
) -> DatasetDict:
    """Categorize every split; confidence filtering and rebalancing touch only ``train_split``.

    Evaluation splits keep every row, so that per-interaction scores are measured on the full data.
    ``kwargs`` go to :func:`categorize_interactions` (column names, ``num_labels``, ``seed``, ...).
    """
    if len(dataset_dict) == 0:
        raise ValueError("categorize_splits: the DatasetDict has no splits.")
    refining = min_confidence is not None or min_minority_fraction is not None
    if refining and train_split not in dataset_dict:
        raise ValueError(
            f"categorize_splits: train split {train_split!r} not found; the splits are {list(dataset_dict)}. "
            "Filtering and rebalancing apply to the training split only: pass `train_split`."
        )
    result = {}
    for name, split in dataset_dict.items():
        refine = {}
        if name == train_split:
            refine = {"min_confidence": min_confidence, "min_minority_fraction": min_minority_fraction}
        result[name] = categorize_interactions(split, **kwargs, **refine)
        logger.info(
            "Split %r: %s", name, interaction_counts(result[name], kwargs.get("interaction_column", "interaction"))
        )
    return DatasetDict(result)
