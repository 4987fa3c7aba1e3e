"""MUStARD and released prediction files are checked for their JSON types: a malformed file is refused with a
``ValueError`` naming the file, the id (or line, or row) and the field, instead of loading wrong labels."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from mmoe.data.mustard import load_mustard
from mmoe.data.predictions import add_precomputed_predictions, read_prediction_file

SPLITS = {
    "mustard_train.json": {
        "1_60": {"utterance": "Oh great, more rain.", "speaker": "CHANDLER", "context": ["It is raining."],
                 "context_speakers": ["ROSS"], "show": "FRIENDS", "sarcasm": True},
        "1_61": {"utterance": "I like rain.", "speaker": "ROSS", "context": [], "context_speakers": [],
                 "show": "FRIENDS", "sarcasm": False},
    },
    "mustard_validation.json": {
        "2_10": {"utterance": "What a lovely day.", "speaker": "SHELDON", "context": [], "context_speakers": [],
                 "show": "BBT", "sarcasm": 1},
        "2_11": {"utterance": "Hello.", "speaker": "PENNY", "context": [], "context_speakers": [], "show": "BBT",
                 "sarcasm": 0},
    },
}
LABELS = {"1_60": 1, "1_61": 0, "2_10": 1, "2_11": 0}
TEXT = "text_only_pred_qwen2.json"
VISION = "image_only_pred_cogvlm2.json"
CAPTIONS = "image_captions_cogvlm2.jsonl"


def lit(path: Path) -> str:
    """``path`` as a literal in a regular expression."""
    return re.escape(str(path))


def _predictions() -> dict[str, dict[str, Any]]:
    return {i: {"logits": {"Yes": 0.8 if label else 0.3, "No": 0.2 if label else 0.7}, "gth": label, "pred": label}
            for i, label in LABELS.items()}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A tiny, valid MUStARD folder: two utterances per split, captions and both prediction files."""
    root = tmp_path / "mustard"
    root.mkdir()
    for name, records in SPLITS.items():
        (root / name).write_text(json.dumps(records))
    (root / CAPTIONS).write_text("".join(json.dumps({"image": i, "caption": f"a photo {i}"}) + "\n" for i in LABELS))
    for name in (TEXT, VISION):
        (root / name).write_text(json.dumps(_predictions()))
    return root


def _edit(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_the_valid_folder_loads_with_booleans_and_0_1(folder: Path) -> None:
    loaded = load_mustard(folder)
    for split in ("train", "validation"):
        assert {i: label for i, label in zip(loaded[split]["id"], loaded[split]["label"])} == {
            i: LABELS[i] for i in loaded[split]["id"]
        }
    assert loaded["train"][0]["context"] == "ROSS: It is raining."


@pytest.mark.parametrize("value", ["false", "true", "0", 2, 0.5, None, [True]])
def test_a_sarcasm_value_that_is_not_a_boolean_or_0_1_is_refused(folder: Path, value: Any) -> None:
    path = folder / "mustard_train.json"
    _edit(path, lambda data: data["1_61"].update(sarcasm=value))
    with pytest.raises(ValueError, match=r"mustard_train.json") as caught:
        load_mustard(folder)
    message = str(caught.value)
    assert str(path) in message and "'1_61'" in message and "'sarcasm'" in message
    assert "expected a JSON boolean (true/false) or 0/1" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("utterance", ["Oh", "great"], "expected a JSON string"),
        ("utterance", 42, "expected a JSON string"),
        ("speaker", {"name": "ROSS"}, "expected a JSON string"),
        ("context", "It is raining.", "expected a JSON list of strings"),
        ("context_speakers", [1], "expected a JSON list of strings"),
    ],
)
def test_fields_of_the_wrong_type_are_refused(folder: Path, field: str, value: Any, expected: str) -> None:
    _edit(folder / "mustard_validation.json", lambda data: data["2_10"].update({field: value}))
    with pytest.raises(ValueError, match=rf"mustard_validation.json: id '2_10': field '{field}'.*{expected}"):
        load_mustard(folder)


def test_a_truncated_split_file_is_named(folder: Path) -> None:
    path = folder / "mustard_train.json"
    path.write_text(path.read_text()[:-25])
    with pytest.raises(ValueError, match=rf"{lit(path)} is not valid JSON at line 1 column \d+"):
        load_mustard(folder)


def test_a_latin_1_split_file_is_named(folder: Path) -> None:
    path = folder / "mustard_validation.json"
    text = path.read_text().replace("Hello.", "Olé.")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{lit(path)} is not UTF-8 text \(byte b'\\xe9'"):
        load_mustard(folder)


def test_a_list_instead_of_an_object_is_named(folder: Path) -> None:
    path = folder / "mustard_train.json"
    path.write_text(json.dumps(list(SPLITS["mustard_train.json"].values())))
    with pytest.raises(ValueError, match=rf"{lit(path)} holds a JSON list; expected an object"):
        load_mustard(folder)
    path.write_text(json.dumps({"1_60": "Oh great, more rain.", "1_61": SPLITS["mustard_train.json"]["1_61"]}))
    with pytest.raises(ValueError, match=r"mustard_train.json: id '1_60' is a str; expected a JSON object"):
        load_mustard(folder)


def test_malformed_caption_lines_are_named(folder: Path) -> None:
    path = folder / CAPTIONS
    good = path.read_text()
    path.write_text(good + '{"image": "9_9", "caption": "cut')
    with pytest.raises(ValueError, match=rf"{lit(path)} is not valid JSON at line 5"):
        load_mustard(folder)
    path.write_text(good + json.dumps({"image": "9_9", "caption": ["a", "list"]}) + "\n")
    with pytest.raises(ValueError, match=rf"{lit(path)} line 5: field 'caption' is \['a', 'list'\].*JSON string"):
        load_mustard(folder)
    path.write_text(good + json.dumps({"image": "1_60", "caption": "another photo"}) + "\n")
    with pytest.raises(ValueError, match="'1_60' has two different captions, on lines 1 and 5"):
        load_mustard(folder)
    path.write_text(good + json.dumps({"image": "1_60", "caption": "a photo 1_60"}) + "\n")  # the same: harmless
    assert load_mustard(folder)["train"][0]["caption"] == "a photo 1_60"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_probability_is_refused_naming_the_file_and_row(folder: Path, token: str) -> None:
    path = folder / VISION
    text = json.dumps(_predictions()).replace('"Yes": 0.3', f'"Yes": {token}', 1)  # the first No-row: 1_61
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_mustard(folder)
    message = str(caught.value)
    assert str(path) in message and "id '1_61' (row 1)" in message and "logits['Yes']" in message
    assert "expected a finite number" in message


def test_a_string_probability_or_label_is_refused(folder: Path) -> None:
    path = folder / TEXT
    _edit(path, lambda data: data["2_11"]["logits"].update(No="0.7"))
    expected = rf"{lit(path)}: the text prediction of id '2_11' \(row 1\).*logits\['No'\] = '0.7'"
    with pytest.raises(ValueError, match=expected):
        load_mustard(folder)
    path.write_text(json.dumps(_predictions()))
    _edit(path, lambda data: data["2_11"].update(pred="0"))
    with pytest.raises(ValueError, match=r"id '2_11' \(row 1\) has pred = '0'; expected an integer label id"):
        load_mustard(folder)
    path.write_text(json.dumps(_predictions()))
    _edit(path, lambda data: data["1_60"].update(gth="1"))
    expected = rf"{lit(path)}: id '1_60': field 'gth' is '1' \(str\); expected a JSON boolean"
    with pytest.raises(ValueError, match=expected):
        load_mustard(folder)


def test_malformed_prediction_files_are_named(folder: Path) -> None:
    path = folder / TEXT
    path.write_text(json.dumps(_predictions())[:-10])
    with pytest.raises(ValueError, match=rf"{lit(path)} is not valid JSON"):
        load_mustard(folder)
    path.write_text(json.dumps(list(_predictions().values())))
    with pytest.raises(ValueError, match=rf"{lit(path)}: expected a JSON object"):
        load_mustard(folder)
    path.write_bytes(json.dumps({"note": "né"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{lit(path)} is not UTF-8 text"):
        load_mustard(folder)
    path.write_text(json.dumps({**_predictions(), "1_61": [0.3, 0.7]}))
    with pytest.raises(ValueError, match=rf"{lit(path)}: the record of id\(s\) \['1_61'\] is not a JSON object"):
        load_mustard(folder)


def test_add_precomputed_predictions_names_the_file_and_row(tmp_path: Path) -> None:
    dataset = Dataset.from_dict({"id": ["a", "b", "c"]})
    path = tmp_path / "preds.jsonl"
    rows = [{"id": i, "logits": {"No": 0.4, "Yes": 0.6}} for i in ("a", "b", "c")]
    rows[2]["logits"]["No"] = float("nan")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # json writes the NaN token
    expected = rf"{lit(path)}: the text prediction of id 'c' \(row 2\) has logits\['No'\] = nan"
    with pytest.raises(ValueError, match=expected):
        add_precomputed_predictions(dataset, path)
    path.write_text(json.dumps(rows[0]) + "\n" + '{"id": "b", "logits": {"No"' + "\n")
    with pytest.raises(ValueError, match=rf"{lit(path)} is not valid JSON at line 2"):
        read_prediction_file(path)
    rows[2]["logits"]["No"] = 0.4
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = add_precomputed_predictions(dataset, path)
    assert loaded["text_prediction"] == [1, 1, 1] and all(math.isclose(c, 0.2) for c in loaded["text_confidence"])
