"""The ``mmoe-categorize`` command: options, saved output, printed counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from mmoe.training.categorize import interaction_counts
from mmoe.training.categorize_cli import CategorizeArguments, main, parse_args, run_categorize

MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"


def _toy_dataset(path: Path) -> Path:
    labels = [0] * 8 + [1] * 2
    data = Dataset.from_dict({"label": labels, "text_prediction": labels, "vision_prediction": labels})
    DatasetDict({"train": data, "test": data}).save_to_disk(str(path))
    return path


def test_main_on_mustard_saves_and_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not (MUSTARD_DIR / "mustard_train.json").is_file():
        pytest.skip(f"MUStARD test data not found at {MUSTARD_DIR} (the repository is cloned without ../shared).")
    output = tmp_path / "categorized"
    main(["--dataset", "mustard", "--data_dir", str(MUSTARD_DIR), "--output_dir", str(output)])
    printed = capsys.readouterr().out
    assert "redundancy" in printed and "train" in printed and "115" in printed
    saved = load_from_disk(str(output))
    assert interaction_counts(saved["train"]) == {"redundancy": 98, "uniqueness": 115, "synergy": 38}
    assert interaction_counts(saved["validation"]) == {"redundancy": 33, "uniqueness": 39, "synergy": 11}


def test_saved_folder_input_and_rebalancing_on_train_only(tmp_path: Path) -> None:
    source = _toy_dataset(tmp_path / "source")
    args = parse_args(
        [
            "--dataset",
            str(source),
            "--output_dir",
            str(tmp_path / "out"),
            "--min_minority_fraction",
            "0.25",
            "--text_confidence_column",
            "",
            "--vision_confidence_column",
            "",
            "--seed",
            "3",
        ]
    )
    result = run_categorize(args)
    assert result["train"].num_rows == 8 and result["test"].num_rows == 10
    assert load_from_disk(str(tmp_path / "out"))["train"].num_rows == 8
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        run_categorize(args)


def test_yaml_config_and_in_memory_dataset(tmp_path: Path) -> None:
    config = tmp_path / "categorize.yaml"
    config.write_text("dataset: somewhere\nmin_confidence: 0.1\nseed: 7\n")
    args = parse_args([str(config)])
    assert (args.dataset, args.min_confidence, args.seed, args.output_dir) == ("somewhere", 0.1, 7, None)
    json_config = tmp_path / "categorize.json"
    json_config.write_text(json.dumps({"dataset": "mustard", "min_minority_fraction": 0.2}))
    assert parse_args([str(json_config)]).min_minority_fraction == 0.2
    data = Dataset.from_dict({"label": [1, 0], "text_prediction": [1, 1], "vision_prediction": [0, 1]})
    result = run_categorize(CategorizeArguments(), dataset=data)
    assert list(result["train"]["interaction"]) == ["uniqueness", "synergy"]


def test_bad_dataset_option_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs --data_dir"):
        run_categorize(CategorizeArguments(dataset="mustard"))
    with pytest.raises(ValueError, match="save_to_disk"):
        run_categorize(CategorizeArguments(dataset=str(tmp_path / "missing")))
