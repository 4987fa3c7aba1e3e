"""The MUStARD loader on ../shared/data/mustard (skipped when that folder is absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import ClassLabel, DatasetDict

from mmoe.data.mustard import load_mustard

MUSTARD_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mustard"
REQUIRED = [
    "id",
    "text",
    "context",
    "caption",
    "label",
    "speaker",
    "show",
    "text_prediction",
    "text_confidence",
    "vision_prediction",
    "vision_confidence",
    "text_prob_yes",
    "vision_prob_yes",
]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (MUSTARD_DIR / "mustard_train.json").is_file():
        pytest.skip(f"MUStARD test data not found at {MUSTARD_DIR} (the repository is cloned without ../shared).")
    return MUSTARD_DIR


@pytest.fixture(scope="module")
def mustard(data_dir: Path) -> DatasetDict:
    return load_mustard(data_dir)


@pytest.fixture()
def copy_dir(data_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "mustard"
    shutil.copytree(data_dir, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def test_splits_columns_and_labels(mustard: DatasetDict, data_dir: Path) -> None:
    assert set(mustard) == {"train", "validation"}
    assert (mustard["train"].num_rows, mustard["validation"].num_rows) == (251, 83)
    for split in mustard.values():
        assert set(REQUIRED) <= set(split.column_names)
        assert isinstance(split.features["label"], ClassLabel)
        assert set(split["label"]) <= {0, 1} and set(split["text_prediction"]) <= {0, 1}
    raw = json.loads((data_dir / "mustard_train.json").read_text())
    row = mustard["train"][0]
    record = raw[row["id"]]
    assert row["text"] == record["utterance"] and row["label"] == int(record["sarcasm"])
    assert row["context"].split("\n") == [
        f"{s}: {line}" for s, line in zip(record["context_speakers"], record["context"])
    ]
    assert row["caption"]
    released = json.loads((data_dir / "text_only_pred_qwen2.json").read_text())[row["id"]]
    assert row["text_prediction"] == released["pred"]
    assert row["text_prob_yes"] == pytest.approx(released["logits"]["Yes"])
    assert row["text_confidence"] == pytest.approx(abs(released["logits"]["Yes"] - released["logits"]["No"]))


def test_test_split_is_loaded_when_present(copy_dir: Path) -> None:
    validation = json.loads((copy_dir / "mustard_validation.json").read_text())
    test_ids = list(validation)[:5]
    (copy_dir / "mustard_test.json").write_text(json.dumps({i: validation[i] for i in test_ids}))
    loaded = load_mustard(copy_dir)
    assert list(loaded) == ["train", "validation", "test"]
    assert list(loaded["test"]["id"]) == test_ids


def test_missing_file_is_named(copy_dir: Path) -> None:
    (copy_dir / "image_only_pred_cogvlm2.json").unlink()
    with pytest.raises(FileNotFoundError, match="image_only_pred_cogvlm2.json"):
        load_mustard(copy_dir)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_mustard(copy_dir / "nowhere")


def test_missing_ids_are_named(copy_dir: Path) -> None:
    path = copy_dir / "text_only_pred_qwen2.json"
    predictions = json.loads(path.read_text())
    del predictions["1_60"]
    path.write_text(json.dumps(predictions))
    with pytest.raises(ValueError, match="1_60"):
        load_mustard(copy_dir)


def test_missing_caption_is_named(copy_dir: Path) -> None:
    path = copy_dir / "image_captions_cogvlm2.jsonl"
    lines = [line for line in path.read_text().splitlines() if '"1_60"' not in line]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="caption.*1_60"):
        load_mustard(copy_dir)
