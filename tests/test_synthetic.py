"""Tests of ``mmoe.data.synthetic``: determinism, proportions, columns, and that each interaction type really has
the unimodal signal it claims (bag-of-words / pixel-statistics probes trained on one modality only)."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from datasets import DatasetDict
from datasets import Image as ImageFeature

from mmoe.configuration_mmoe import DEFAULT_EXPERTS
from mmoe.data.synthetic import (
    ID2LABEL,
    LABEL_NAMES,
    SyntheticConfig,
    make_synthetic_dataset,
    synthetic_features,
)

sklearn = pytest.importorskip("sklearn", reason="scikit-learn (a dev extra) runs the unimodal probes")
from sklearn.feature_extraction.text import CountVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

SMALL = {"num_train": 40, "num_validation": 12, "num_test": 12}
# Probe data: more synergy than the default so the chance-level checks have ~300 test rows.
PROBE_PROPORTIONS = {"redundancy": 0.4, "uniqueness": 0.3, "synergy": 0.3}
CHANCE_TOLERANCE = 0.12  # 4 standard deviations of a coin flip over 300 rows


def _image_bytes(split):
    return [row["bytes"] for row in split.cast_column("image", ImageFeature(decode=False))["image"]]


# ----------------------------------------------------------------------------------------------------------------
# Determinism, columns, proportions
# ----------------------------------------------------------------------------------------------------------------


def test_deterministic_per_seed():
    first = make_synthetic_dataset(seed=3, **SMALL)
    second = make_synthetic_dataset(seed=3, **SMALL)
    other = make_synthetic_dataset(seed=4, **SMALL)
    for split in ("train", "validation", "test"):
        for column in ("id", "text", "caption", "label", "gold_interaction", "gold_cue_modality"):
            assert first[split][column] == second[split][column], (split, column)
        assert _image_bytes(first[split]) == _image_bytes(second[split])
        assert first[split]["text"] != other[split]["text"]
        assert first[split]["caption"] != other[split]["caption"]
        assert _image_bytes(first[split]) != _image_bytes(other[split])
    # Splits are drawn from different streams.
    assert first["validation"]["text"] != first["test"]["text"]


def test_columns_and_features():
    ds = make_synthetic_dataset(seed=0, image_size=48, **SMALL)
    assert isinstance(ds, DatasetDict)
    assert list(ds) == ["train", "validation", "test"]
    assert {name: len(split) for name, split in ds.items()} == {"train": 40, "validation": 12, "test": 12}
    features = synthetic_features()
    for name, split in ds.items():
        assert split.features == features
        assert split.column_names == [
            "id",
            "text",
            "caption",
            "image",
            "label",
            "gold_interaction",
            "gold_cue_modality",
        ]
        assert len(set(split["id"])) == len(split)
        assert all(i.startswith(f"synthetic-{name}-") for i in split["id"])
        options = json.loads(split.info.description.split("options: ", 1)[1])
        assert options["seed"] == 0 and options["image_size"] == 48
    assert features["label"].names == list(LABEL_NAMES) == ["not_sarcastic", "sarcastic"]
    assert ID2LABEL == {0: "not_sarcastic", 1: "sarcastic"}
    row = ds["train"][0]
    assert row["image"].size == (48, 48) and row["image"].mode == "RGB"
    assert set(ds["train"]["gold_interaction"]) == set(DEFAULT_EXPERTS)
    pairs = set(zip(ds["train"]["gold_interaction"], ds["train"]["gold_cue_modality"]))
    assert pairs == {("redundancy", "both"), ("uniqueness", "text"), ("uniqueness", "image"), ("synergy", "relation")}


@pytest.mark.parametrize(
    ("sizes", "proportions"),
    [
        ((200, 37, 11), None),
        ((101, 7, 3), {"redundancy": 0.2, "uniqueness": 0.2, "synergy": 0.6}),
        ((50, 5, 1), {"redundancy": 1.0}),
        ((60, 9, 2), {"uniqueness": 0.5, "synergy": 0.5, "redundancy": 0.0}),
    ],
)
def test_proportions_honoured_per_split(sizes, proportions):
    options = dict(zip(("num_train", "num_validation", "num_test"), sizes))
    if proportions is not None:
        options["proportions"] = proportions
    ds = make_synthetic_dataset(seed=1, **options)
    expected = SyntheticConfig(**options).proportions
    for split, size in zip(ds.values(), sizes):
        counts = Counter(split["gold_interaction"])
        assert sum(counts.values()) == size
        for name in DEFAULT_EXPERTS:
            assert abs(counts.get(name, 0) - expected[name] * size) < 1.0, (name, counts, size)
        # Uniqueness rows split half text / half image; labels balanced in every cell.
        cues = Counter(split["gold_cue_modality"])
        assert abs(cues.get("text", 0) - cues.get("image", 0)) <= 1
        cells = Counter(zip(split["gold_cue_modality"], split["label"]))
        for cue in set(split["gold_cue_modality"]):
            assert abs(cells[(cue, 0)] - cells[(cue, 1)]) <= 1, (cue, cells)


def test_default_proportions_make_synergy_rare():
    config = SyntheticConfig()
    assert config.proportions["synergy"] < config.proportions["uniqueness"] < config.proportions["redundancy"]
    assert math.isclose(sum(config.proportions.values()), 1.0)


def test_markers_only_where_the_interaction_says_and_captions_never_name_the_label():
    ds = make_synthetic_dataset(seed=2, num_train=200, num_validation=1, num_test=1)["train"]
    for row in ds:
        caption = row["caption"]
        assert not any(word in caption for word in ("sarcas", "sincer", "ironic", "label"))
        has_image_marker = " red " in caption or " purple " in caption
        assert has_image_marker == (row["gold_cue_modality"] in ("both", "image")), caption
        if has_image_marker:
            implied = 1 if " red " in caption else 0
            assert implied == row["label"]


def test_label_noise_flips_labels_not_content():
    options = dict(num_train=300, num_validation=20, num_test=20, seed=5)
    clean = make_synthetic_dataset(**options)
    noisy = make_synthetic_dataset(label_noise=0.2, **options)
    for split in ("train", "validation", "test"):
        for column in ("id", "text", "caption", "gold_interaction", "gold_cue_modality"):
            assert clean[split][column] == noisy[split][column]
        assert _image_bytes(clean[split]) == _image_bytes(noisy[split])
        cue_counts = Counter(clean[split]["gold_cue_modality"])
        flipped = Counter(
            cue
            for cue, a, b in zip(clean[split]["gold_cue_modality"], clean[split]["label"], noisy[split]["label"])
            if a != b
        )
        for cue, count in cue_counts.items():
            assert flipped.get(cue, 0) == round(0.2 * count), (split, cue)


def test_config_object_and_overrides():
    config = SyntheticConfig(num_train=10, num_validation=4, num_test=4, seed=9)
    ds = make_synthetic_dataset(config, seed=10)
    again = make_synthetic_dataset(num_train=10, num_validation=4, num_test=4, seed=10)
    assert ds["train"]["text"] == again["train"]["text"]
    assert config.seed == 9  # the passed config is not mutated


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"proportions": {"redundancy": 0.5, "uniqueness": 0.3, "synergy": 0.3}}, "sum to 1"),
        ({"proportions": {"redundancy": 1.2, "uniqueness": -0.2}}, "non-negative"),
        ({"proportions": {"redundancy": 0.5, "sarcasm": 0.5}}, "Unknown interaction"),
        ({"proportions": [0.5, 0.35, 0.15]}, "dict"),
        ({"proportions": {}}, "dict"),
        ({"num_train": 0}, "num_train"),
        ({"num_validation": -3}, "num_validation"),
        ({"num_test": 2.5}, "num_test"),
        ({"num_train": True}, "num_train"),
        ({"label_noise": -0.1}, "label_noise"),
        ({"label_noise": 0.6}, "label_noise"),
        ({"label_noise": float("nan")}, "label_noise"),
        ({"image_size": 8}, "image_size"),
        ({"image_size": 32.0}, "image_size"),
        ({"pixel_noise": -1.0}, "pixel_noise"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"num_rows": 10}, "Unknown option"),
    ],
)
def test_invalid_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_dataset(**options)


def test_invalid_config_type_raises():
    with pytest.raises(ValueError, match="SyntheticConfig"):
        make_synthetic_dataset({"num_train": 10})


# ----------------------------------------------------------------------------------------------------------------
# Unimodal probes: the signal is where the gold interaction says, and nowhere else
# ----------------------------------------------------------------------------------------------------------------


def _pixel_statistics(images) -> np.ndarray:
    """Per-channel mean / std plus a joint 4x4x4 colour histogram: a classifier that sees only colour."""
    features = []
    for image in images:
        pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
        bins = (pixels // 64).astype(int)
        hist = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64) / len(pixels)
        features.append(np.concatenate([pixels.mean(0) / 255, pixels.std(0) / 255, hist]))
    return np.stack(features)


def _bag_of_words():
    return CountVectorizer(token_pattern=r"[^\s,]+", lowercase=True)


@pytest.fixture(scope="module")
def probe_data():
    ds = make_synthetic_dataset(num_train=1500, num_validation=1, num_test=1000, proportions=PROBE_PROPORTIONS, seed=11)
    train, test = ds["train"], ds["test"]
    return {
        "train": train,
        "test": test,
        "train_pixels": _pixel_statistics(train["image"]),
        "test_pixels": _pixel_statistics(test["image"]),
        "test_cue": np.array(test["gold_cue_modality"]),
        "test_label": np.array(test["label"]),
    }


def _accuracy_per_cue(predictions, data) -> dict[str, float]:
    correct = predictions == data["test_label"]
    return {cue: float(correct[data["test_cue"] == cue].mean()) for cue in ("both", "text", "image", "relation")}


def _fit_text_probe(column, data):
    probe = make_pipeline(_bag_of_words(), LogisticRegression(max_iter=2000))
    probe.fit(data["train"][column], data["train"]["label"])
    return _accuracy_per_cue(probe.predict(data["test"][column]), data)


def _assert_chance(accuracy, what):
    assert abs(accuracy - 0.5) <= CHANCE_TOLERANCE, f"{what}: accuracy {accuracy:.3f} is not near chance"


def test_text_alone_solves_redundancy_and_text_uniqueness_but_not_synergy(probe_data):
    accuracy = _fit_text_probe("text", probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["text"] > 0.9, accuracy
    _assert_chance(accuracy["image"], "text probe on image-unique rows")
    _assert_chance(accuracy["relation"], "text probe on synergy rows")


def test_caption_alone_solves_redundancy_and_image_uniqueness_but_not_synergy(probe_data):
    accuracy = _fit_text_probe("caption", probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["image"] > 0.9, accuracy
    _assert_chance(accuracy["text"], "caption probe on text-unique rows")
    _assert_chance(accuracy["relation"], "caption probe on synergy rows")


def test_pixels_alone_solve_redundancy_and_image_uniqueness_but_not_synergy(probe_data):
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(probe_data["train_pixels"], probe_data["train"]["label"])
    accuracy = _accuracy_per_cue(probe.predict(probe_data["test_pixels"]), probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["image"] > 0.9, accuracy
    _assert_chance(accuracy["text"], "pixel probe on text-unique rows")
    _assert_chance(accuracy["relation"], "pixel probe on synergy rows")


def _crossed_tokens(caption: str, text: str) -> list[str]:
    analyzer = _bag_of_words().build_analyzer()
    return [f"{c}|{t}" for c, t in itertools.product(set(analyzer(caption)), set(analyzer(text)))]


def test_synergy_label_is_a_function_of_caption_and_text_jointly(probe_data):
    """A classifier on (caption word, text word) pairs solves the synergy rows that each modality alone cannot."""

    def synergy_rows(split):
        rows = split.filter(lambda cue: cue == "relation", input_columns="gold_cue_modality")
        return [_crossed_tokens(c, t) for c, t in zip(rows["caption"], rows["text"])], rows["label"]

    train_x, train_y = synergy_rows(probe_data["train"])
    test_x, test_y = synergy_rows(probe_data["test"])
    assert len(test_y) >= 250
    probe = make_pipeline(
        CountVectorizer(analyzer=lambda tokens: tokens, binary=True), LogisticRegression(C=10.0, max_iter=2000)
    )
    probe.fit(train_x, train_y)
    accuracy = float(np.mean(probe.predict(test_x) == np.array(test_y)))
    assert accuracy > 0.95, accuracy


def test_synergy_has_no_additive_signal(probe_data):
    """An additive model of both modalities (bag of words of caption + text, no word pairs) stays at chance on
    synergy rows: the label there is an interaction, not a sum of unimodal cues."""
    joined = {
        split: [f"{c} {t}" for c, t in zip(probe_data[split]["caption"], probe_data[split]["text"])]
        for split in ("train", "test")
    }
    probe = make_pipeline(_bag_of_words(), LogisticRegression(max_iter=2000))
    probe.fit(joined["train"], probe_data["train"]["label"])
    accuracy = _accuracy_per_cue(probe.predict(joined["test"]), probe_data)
    assert min(accuracy["both"], accuracy["text"], accuracy["image"]) > 0.9, accuracy
    _assert_chance(accuracy["relation"], "additive caption + text probe on synergy rows")
