"""Interaction categorization (MMoE step 1): Algorithm 1, filtering, rebalancing, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from mmoe.configuration_mmoe import DEFAULT_EXPERTS
from mmoe.training.categorize import (
    categorize_interactions,
    categorize_splits,
    interaction_counts,
    rebalance_interactions,
)

MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"


@pytest.fixture(scope="module")
def mustard() -> DatasetDict:
    if not (MUSTARD_DIR / "reference_interactions.json").is_file():
        pytest.skip(f"MUStARD test data not found at {MUSTARD_DIR} (the repository is cloned without ../shared).")
    from mmoe.data.mustard import load_mustard

    return load_mustard(MUSTARD_DIR)


def _toy(labels, text, vision, **extra) -> Dataset:
    return Dataset.from_dict({"label": labels, "text_prediction": text, "vision_prediction": vision, **extra})


def test_algorithm_1_binary() -> None:
    data = _toy([1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 0, 1, 0])
    out = categorize_interactions(data)
    assert out["interaction"] == ["redundancy", "uniqueness", "uniqueness", "synergy", "redundancy"]
    assert interaction_counts(out) == {"redundancy": 2, "uniqueness": 2, "synergy": 1}
    assert list(interaction_counts(out)) == list(DEFAULT_EXPERTS)


def test_algorithm_1_multiclass_two_wrong_predictions_are_synergy_even_if_they_agree() -> None:
    data = _toy([2, 2, 2, 0], [1, 1, 2, 2], [1, 0, 0, 2])
    out = categorize_interactions(data, num_labels=3)
    assert out["interaction"] == ["synergy", "synergy", "uniqueness", "synergy"]


def test_reproduces_reference_interactions(mustard: DatasetDict) -> None:
    reference = json.loads((MUSTARD_DIR / "reference_interactions.json").read_text())
    out = categorize_splits(mustard)
    seen = set()
    for split, data in out.items():
        for utterance_id, interaction in zip(data["id"], data["interaction"]):
            assert reference[utterance_id] == {"split": split, "interaction": interaction}, utterance_id
            seen.add(utterance_id)
    assert seen == set(reference)
    assert interaction_counts(out["train"]) == {"redundancy": 98, "uniqueness": 115, "synergy": 38}


def test_filtering_and_rebalancing_touch_only_the_train_split(mustard: DatasetDict) -> None:
    delta, fraction = 0.15, 0.3
    out = categorize_splits(
        mustard,
        text_confidence_column="text_confidence",
        vision_confidence_column="vision_confidence",
        min_confidence=delta,
        min_minority_fraction=fraction,
    )
    plain = categorize_splits(mustard)
    assert out["validation"]["id"] == plain["validation"]["id"]
    assert out["validation"]["interaction"] == plain["validation"]["interaction"]
    train = out["train"]
    assert 0 < len(train) < len(mustard["train"])
    assert min(train["text_confidence"]) >= delta and min(train["vision_confidence"]) >= delta
    for name in DEFAULT_EXPERTS:
        labels = np.array([y for y, i in zip(train["label"], train["interaction"]) if i == name])
        if np.unique(labels).size == 2:
            assert np.bincount(labels).min() / labels.size >= fraction, name
    # Kept rows keep their interaction and their original order.
    before = dict(zip(plain["train"]["id"], plain["train"]["interaction"]))
    assert all(before[i] == x for i, x in zip(train["id"], train["interaction"]))
    order = {i: n for n, i in enumerate(mustard["train"]["id"])}
    assert [order[i] for i in train["id"]] == sorted(order[i] for i in train["id"])


def test_rebalancing_drops_the_least_confident_majority_rows() -> None:
    # 8 rows of label 0 with confidences 0.1..0.8 and 2 rows of label 1, all redundant.
    labels = [0] * 8 + [1, 1]
    confidence = [0.1 * (k + 1) for k in range(8)] + [0.05, 0.9]
    data = categorize_interactions(
        _toy(labels, labels, labels, text_confidence=confidence, vision_confidence=[1.0] * 10)
    )
    out = rebalance_interactions(data, "label", 0.25, ["text_confidence", "vision_confidence"])
    # 2 minority rows need at most 6 majority rows: drop the two least confident (0.1, 0.2).
    assert list(out["label"]).count(0) == 6 and list(out["label"]).count(1) == 2
    assert sorted(c for c, y in zip(out["text_confidence"], out["label"]) if y == 0)[0] == pytest.approx(0.3)


def test_rebalancing_without_confidence_is_seeded_random_and_single_class_subsets_stay() -> None:
    labels = [0] * 9 + [1] + [0] * 4
    text = labels[:10] + [1] * 4  # last four rows: uniqueness with one gold label only
    data = _toy(labels, text, labels)
    out_a = categorize_interactions(data, min_minority_fraction=0.2, seed=1)
    out_b = categorize_interactions(data, min_minority_fraction=0.2, seed=1)
    assert out_a["label"] == out_b["label"]
    counts = interaction_counts(out_a)
    assert counts["redundancy"] == 5 and counts["uniqueness"] == 4


def test_multiclass_rebalancing_reaches_the_fraction() -> None:
    labels = [0] * 20 + [1] * 5 + [2] * 3
    data = _toy(labels, labels, labels, text_confidence=list(np.linspace(0, 1, 28)), vision_confidence=[1.0] * 28)
    out = categorize_interactions(
        data,
        text_confidence_column="text_confidence",
        vision_confidence_column="vision_confidence",
        min_minority_fraction=0.2,
    )
    counts = np.bincount(out["label"])
    assert counts.min() / counts.sum() >= 0.2 and counts[1] == 5 and counts[2] == 3


def test_class_label_feature_defines_the_label_set() -> None:
    features = Features(
        {
            "label": ClassLabel(names=["a", "b", "c"]),
            "text_prediction": Value("int64"),
            "vision_prediction": Value("int64"),
        }
    )
    data = Dataset.from_dict({"label": [0, 2], "text_prediction": [2, 1], "vision_prediction": [0, 0]}, features)
    assert list(categorize_interactions(data)["interaction"]) == ["uniqueness", "synergy"]


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (Dataset.from_dict({"label": [0], "text_prediction": [0]}), {}, "vision_prediction"),
        (_toy([0, 2], [0, 1], [0, 1]), {"num_labels": 2}, "outside the label set"),
        (_toy([0, 1], [0, 5], [0, 1]), {}, "'text_prediction' holds 5"),
        (_toy([0, 1], [0, -1], [0, 1]), {}, "outside the label set"),
        (_toy(["no", "yes"], [0, 1], [0, 1]), {}, "integer label ids"),
        (_toy([0.0, 1.0], [0, 1], [0, 1]), {}, "integer label ids"),
        (_toy([], [], []), {}, "empty"),
        (_toy([0, 1], [0, 1], [0, 1]), {"min_confidence": 0.1}, "confidence columns"),
        (_toy([0, 1], [0, 1], [0, 1]), {"text_confidence_column": "conf"}, "'conf'"),
        (_toy([0, 1], [0, 1], [0, 1]), {"min_minority_fraction": 0.7}, "min_minority_fraction"),
    ],
)
def test_invalid_inputs_raise_clear_errors(data: Dataset, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        categorize_interactions(data, **kwargs)


def test_unknown_train_split_raises() -> None:
    splits = DatasetDict({"training": _toy([0, 1], [0, 1], [1, 1])})
    with pytest.raises(ValueError, match="train split 'train' not found"):
        categorize_splits(splits, min_minority_fraction=0.2)
    assert categorize_splits(splits)["training"]["interaction"] == ["uniqueness", "redundancy"]
