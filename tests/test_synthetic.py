"""Tests of ``mmoe.data.synthetic``: determinism, proportions, columns, the labelling rule recomputed from the
generated captions and texts, and that each interaction type really has the unimodal signal it claims
(bag-of-words / pixel-statistics probes trained on one modality only: right on redundancy rows and on the
uniqueness rows of their own modality, at chance on the other modality's uniqueness rows, confidently wrong on
synergy rows; an additive model of both modalities is wrong on synergy, a small non-additive one solves it)."""

from __future__ import annotations

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
# Probe data: the default proportions (0.55 / 0.25 / 0.2), so 1000 test rows hold 200 synergy rows and 125
# uniqueness rows of each modality.
WRONG = 0.2  # "confidently wrong": a probe's accuracy on a cell whose label its modality's marker contradicts
CHANCE = (0.3, 0.7)  # a probe's accuracy on 125 balanced rows where its modality carries no marker
# The demo preset's split sizes (mmoe.training.cli.PRESETS["demo"]).
DEMO_SIZES = {"num_train": 1200, "num_validation": 300, "num_test": 600}


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


def test_demo_splits_hold_enough_synergy_rows():
    ds = make_synthetic_dataset(seed=0, **DEMO_SIZES)
    counts = {split: Counter(ds[split]["gold_interaction"])["synergy"] for split in ds}
    assert counts == {"train": 240, "validation": 60, "test": 120}, counts  # synergy 0.2 of every split
    assert min(counts.values()) >= 50


# ----------------------------------------------------------------------------------------------------------------
# The labelling rule, recomputed from what is written in the texts and captions
# ----------------------------------------------------------------------------------------------------------------

# The marker vocabularies, written out here (not imported) so the test checks the generator independently.
TEXT_PREFIXES = {1: ("yeah right,", "#sarcasm"), 0: ("in all sincerity,", "#nofilter")}
TEXT_SUFFIXES = {
    1: ("#sarcasm", "/s", "... not!", "said no one ever"),
    0: ("#sincere", "#nofilter", "and i truly mean it", "no irony, honestly"),
}
NEUTRAL_TAGS = ("#weather", "#outside", "#today", "#mood")
CLAIM_WORDS = {"sun": "sunny", "snow": "snowy", "rain": "rainy", "puddle": "rainy", "night": "night", "star": "night"}
SCENE_WORDS = {"sunny": "sunny", "snow": "snowy", "rain": "rainy", "night": "night"}


def _text_marker(text: str) -> int | None:
    """Direction of the post's marker (one phrase at the start or the end), or None when it has none; an optional
    neutral tag may end the text."""
    words = text.split()
    if words[-1] in NEUTRAL_TAGS:
        words = words[:-1]
    body = " ".join(words)
    found = [
        (d, where)
        for d in (0, 1)
        for where, phrases in (("start", TEXT_PREFIXES[d]), ("end", TEXT_SUFFIXES[d]))
        if any(body.startswith(p + " ") if where == "start" else body.endswith(" " + p) for p in phrases)
    ]
    assert len(found) <= 1, (text, found)  # never two markers in one post
    return found[0][0] if found else None


def _caption_marker(caption: str) -> int | None:
    colours = [c for c in ("red", "purple") if f" {c} " in caption]
    assert len(colours) <= 1, caption
    if not colours:
        assert "corner" not in caption, caption
        return None
    assert "small" in caption and caption.endswith(" corner"), caption
    return 1 if colours[0] == "red" else 0


def _scene(text: str, words: dict[str, str]) -> str:
    scenes = {scene for word, scene in words.items() if word in text}
    assert len(scenes) == 1, (text, scenes)
    return scenes.pop()


def _rule(text: str, caption: str) -> tuple[int, str, str]:
    """(label, gold_interaction, gold_cue_modality) from the content alone: one marker decides; two markers agree,
    and the label is their direction, inverted iff the claim contradicts the pictured scene."""
    text_dir, image_dir = _text_marker(text), _caption_marker(caption)
    assert (text_dir, image_dir) != (None, None), (text, caption)
    if image_dir is None:
        return text_dir, "uniqueness", "text"
    if text_dir is None:
        return image_dir, "uniqueness", "image"
    assert text_dir == image_dir, (text, caption)
    if _scene(text, CLAIM_WORDS) != _scene(caption, SCENE_WORDS):
        return 1 - text_dir, "synergy", "relation"
    return text_dir, "redundancy", "both"


@pytest.mark.parametrize("seed", [2, 7])
def test_label_and_gold_columns_follow_the_rule_written_in_the_content(seed):
    ds = make_synthetic_dataset(seed=seed, num_train=400, num_validation=50, num_test=50)
    for split in ds.values():
        for row in split:
            assert _rule(row["text"], row["caption"]) == (
                row["label"],
                row["gold_interaction"],
                row["gold_cue_modality"],
            ), row
            assert not any(word in row["caption"] for word in ("sarcas", "sincer", "ironic", "label"))


def test_markers_per_cell():
    """Both markers point to the label in redundancy rows and to the other label in synergy rows; a uniqueness row
    has a marker for the label in its own modality and none in the other."""
    ds = make_synthetic_dataset(seed=4, num_train=400, num_validation=1, num_test=1)["train"]
    seen = Counter()
    for row in ds:
        text, image = _text_marker(row["text"]), _caption_marker(row["caption"])
        cue, label = row["gold_cue_modality"], row["label"]
        expected = {
            "both": (label, label),
            "relation": (1 - label, 1 - label),
            "text": (label, None),
            "image": (None, label),
        }[cue]
        assert (text, image) == expected, row
        seen[cue, text is None, image is None] += 1
    assert set(seen) == {
        ("both", False, False),
        ("text", False, True),
        ("image", True, False),
        ("relation", False, False),
    }


def test_no_unimodal_shortcut_in_scene_claim_or_relation():
    """Within every cell: the pictured scene is exactly balanced across labels, the claim nearly so, and whether the
    claim matches the scene is equally frequent for both labels (the relation alone says nothing about the label)."""
    ds = make_synthetic_dataset(seed=6, num_train=1200, num_validation=1, num_test=1)["train"]
    cells: dict[str, list] = {}
    for row in ds:
        scene, claim = _scene(row["caption"], SCENE_WORDS), _scene(row["text"], CLAIM_WORDS)
        cells.setdefault(row["gold_cue_modality"], []).append((row["label"], scene, claim))
    for cue, rows in cells.items():
        per_label = {label: [r for r in rows if r[0] == label] for label in (0, 1)}
        for scene in ("sunny", "snowy", "rainy", "night"):
            counts = [sum(r[1] == scene for r in per_label[label]) for label in (0, 1)]
            assert abs(counts[0] - counts[1]) <= 1, (cue, scene, counts)
            claims = [sum(r[2] == scene for r in per_label[label]) / len(per_label[label]) for label in (0, 1)]
            assert abs(claims[0] - claims[1]) < 0.1, (cue, scene, claims)
        matches = [sum(r[1] == r[2] for r in per_label[label]) for label in (0, 1)]
        assert abs(matches[0] - matches[1]) <= 1, (cue, matches)
        expected = {"both": 1.0, "relation": 0.0}.get(cue, 0.5)
        assert abs(sum(matches) / len(rows) - expected) <= 0.01, (cue, matches)


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
    ds = make_synthetic_dataset(num_train=1500, num_validation=1, num_test=1000, seed=11)
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


def _assert_wrong(accuracy, what):
    """Far below chance: the probe confidently predicts the other label, so it does not predict this one."""
    assert accuracy < WRONG, f"{what}: accuracy {accuracy:.3f} is not far below chance"


def _assert_chance(accuracy, what):
    """About chance: the modality carries no marker on these rows, and the label is independent of the rest."""
    assert CHANCE[0] < accuracy < CHANCE[1], f"{what}: accuracy {accuracy:.3f} is not about chance"


def test_text_alone_solves_redundancy_and_text_uniqueness_and_is_wrong_on_synergy(probe_data):
    accuracy = _fit_text_probe("text", probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["text"] > 0.9, accuracy
    _assert_chance(accuracy["image"], "text probe on image-unique rows")
    _assert_wrong(accuracy["relation"], "text probe on synergy rows")


def test_caption_alone_solves_redundancy_and_image_uniqueness_and_is_wrong_on_synergy(probe_data):
    accuracy = _fit_text_probe("caption", probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["image"] > 0.9, accuracy
    _assert_chance(accuracy["text"], "caption probe on text-unique rows")
    _assert_wrong(accuracy["relation"], "caption probe on synergy rows")


def test_pixels_alone_solve_redundancy_and_image_uniqueness_and_are_wrong_on_synergy(probe_data):
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(probe_data["train_pixels"], probe_data["train"]["label"])
    accuracy = _accuracy_per_cue(probe.predict(probe_data["test_pixels"]), probe_data)
    assert accuracy["both"] > 0.9, accuracy
    assert accuracy["image"] > 0.9, accuracy
    _assert_chance(accuracy["text"], "pixel probe on text-unique rows")
    _assert_wrong(accuracy["relation"], "pixel probe on synergy rows")


def _joined(data, split):
    """Caption and text words as separate vocabularies (a caption word and the same text word are distinct)."""
    return [
        " ".join([f"c:{w}" for w in c.split()] + [f"t:{w}" for w in t.split()])
        for c, t in zip(data[split]["caption"], data[split]["text"])
    ]


def test_synergy_has_no_additive_signal(probe_data):
    """An additive model of both modalities (bag of words of caption + text, no interactions) solves the other
    cells but is confidently wrong on synergy rows: there the label is an interaction, not a sum of cues."""
    probe = make_pipeline(CountVectorizer(token_pattern=r"\S+", lowercase=True), LogisticRegression(max_iter=2000))
    probe.fit(_joined(probe_data, "train"), probe_data["train"]["label"])
    accuracy = _accuracy_per_cue(probe.predict(_joined(probe_data, "test")), probe_data)
    assert min(accuracy["both"], accuracy["text"], accuracy["image"]) > 0.9, accuracy
    _assert_wrong(accuracy["relation"], "additive caption + text probe on synergy rows")


@pytest.mark.xfail(
    strict=True,
    reason="measured: this MLP gets 0.53 on synergy rows (0.86 / 0.89 on text / image uniqueness); the rule is a "
    "three-way interaction (both markers present x marker x claim-scene contradiction) it does not find from 1500 "
    "rows; (128,) / (64, 64) MLPs, gradient boosting and pairwise word tokens did not either (0.51 - 0.60)",
)
def test_synergy_label_is_learnable_from_caption_and_text_jointly(probe_data):
    """A small non-additive model (an MLP) on the caption and text words of ALL training rows gets the synergy rows
    right, which each modality alone and the additive model get wrong: the claim-scene relation decides them."""
    from sklearn.neural_network import MLPClassifier

    probe = make_pipeline(
        CountVectorizer(token_pattern=r"\S+", lowercase=True, binary=True),
        MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=600, random_state=0),
    )
    probe.fit(_joined(probe_data, "train"), probe_data["train"]["label"])
    accuracy = _accuracy_per_cue(probe.predict(_joined(probe_data, "test")), probe_data)
    assert accuracy["relation"] > 0.9, accuracy
    assert min(accuracy.values()) > 0.9, accuracy
