"""MUStARD (Castro et al., 2019) in the speaker-independent split of the MMoE paper, with released extras.

A folder such as ``../shared/data/mustard`` holds (see its README):

* ``mustard_train.json``, ``mustard_validation.json`` and optionally ``mustard_test.json``:
  ``{id: {utterance, speaker, context[], context_speakers[], show, sarcasm}}``;
* ``image_captions_cogvlm2.jsonl``: one ``{"image": id, "caption": str}`` per line;
* ``text_only_pred_qwen2.json`` and ``image_only_pred_cogvlm2.json``:
  ``{id: {logits: {Yes: p, No: p}, gth, pred, ...}}``, the MMoE authors' unimodal predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .predictions import add_precomputed_predictions, read_prediction_file

SPLIT_FILES = {"train": "mustard_train.json", "validation": "mustard_validation.json", "test": "mustard_test.json"}
OPTIONAL_SPLITS = ("test",)
CAPTIONS_FILE = "image_captions_cogvlm2.jsonl"
TEXT_PREDICTIONS_FILE = "text_only_pred_qwen2.json"
VISION_PREDICTIONS_FILE = "image_only_pred_cogvlm2.json"
LABEL_NAMES = ["not_sarcastic", "sarcastic"]
LABEL_WORDS = ("No", "Yes")

FEATURES = Features(
    {
        "id": Value("string"),
        "text": Value("string"),
        "context": Value("string"),
        "speaker": Value("string"),
        "show": Value("string"),
        "caption": Value("string"),
        "label": ClassLabel(names=LABEL_NAMES),
    }
)


def _require_file(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_file():
        required = [
            SPLIT_FILES["train"],
            SPLIT_FILES["validation"],
            CAPTIONS_FILE,
            TEXT_PREDICTIONS_FILE,
            VISION_PREDICTIONS_FILE,
        ]
        raise FileNotFoundError(
            f"load_mustard: {name!r} is missing from {str(data_dir)!r}; the folder needs {required} "
            f"(and optionally {SPLIT_FILES['test']!r})."
        )
    return path


def _context(record: dict[str, Any], utterance_id: str) -> str:
    """The previous lines as ``"SPEAKER: line"`` joined by newlines."""
    lines, speakers = record.get("context", []), record.get("context_speakers", [])
    if len(lines) != len(speakers):
        raise ValueError(
            f"load_mustard: id {utterance_id!r} has {len(lines)} context lines but {len(speakers)} context speakers."
        )
    return "\n".join(f"{speaker}: {line}" for speaker, line in zip(speakers, lines))


def read_captions(path: Path) -> dict[str, str]:
    """``{id: caption}`` from the JSON-lines caption file."""
    captions = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            if "image" not in record or "caption" not in record:
                raise ValueError(f"load_mustard: {path.name} line {number} lacks 'image' or 'caption'.")
            captions[str(record["image"])] = record["caption"]
    return captions


def _split_rows(path: Path, captions: dict[str, str]) -> dict[str, list]:
    """Column lists of one split file, joined with the captions."""
    records = json.loads(path.read_text(encoding="utf-8"))
    missing = [i for i in records if i not in captions]
    if missing:
        raise ValueError(
            f"load_mustard: {CAPTIONS_FILE} has no caption for {len(missing)} id(s) of {path.name}, e.g. {missing[:5]}."
        )
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for utterance_id, record in records.items():
        absent = [k for k in ("utterance", "sarcasm") if k not in record]
        if absent:
            raise ValueError(f"load_mustard: id {utterance_id!r} in {path.name} lacks {absent}.")
        columns["id"].append(utterance_id)
        columns["text"].append(record["utterance"])
        columns["context"].append(_context(record, utterance_id))
        columns["speaker"].append(record.get("speaker", ""))
        columns["show"].append(record.get("show", ""))
        columns["caption"].append(captions[utterance_id])
        columns["label"].append(int(bool(record["sarcasm"])))
    return columns


def _check_gold(dataset: Dataset, predictions: dict[str, dict[str, Any]], file_name: str) -> None:
    """The ``gth`` field of the released predictions must equal the MUStARD label."""
    wrong = [
        i
        for i, label in zip(dataset["id"], dataset["label"])
        if predictions[i].get("gth") is not None and int(predictions[i]["gth"]) != label
    ]
    if wrong:
        raise ValueError(
            f"load_mustard: {file_name} disagrees with the sarcasm label ('gth') for ids {wrong[:5]}; "
            "the files do not belong together."
        )


def _add_predictions(dataset: Dataset, predictions: dict[str, dict[str, Any]], prefix: str, file_name: str) -> Dataset:
    missing = [i for i in dataset["id"] if i not in predictions]
    if missing:
        raise ValueError(f"load_mustard: {file_name} has no prediction for {len(missing)} id(s), e.g. {missing[:5]}.")
    _check_gold(dataset, predictions, file_name)
    dataset = add_precomputed_predictions(dataset, predictions, prefix=prefix, label_words=LABEL_WORDS)
    probs = dataset[f"{prefix}_probs"]
    dataset = dataset.add_column(f"{prefix}_prob_yes", [p[1] for p in probs])
    return dataset.add_column(f"{prefix}_prob_no", [p[0] for p in probs])


def load_mustard(data_dir: str | Path) -> DatasetDict:
    """Load MUStARD with captions and the released unimodal predictions.

    Args:
        data_dir: folder with the files listed in this module's docstring.

    Returns:
        ``DatasetDict`` with ``train``, ``validation`` and, when ``mustard_test.json`` is present, ``test``.
        Columns: ``id``, ``text`` (the utterance), ``context`` (previous lines, ``"SPEAKER: line"`` joined by
        newlines), ``speaker``, ``show``, ``caption``, ``label`` (``ClassLabel``: 1 = sarcastic),
        ``text_prediction``/``vision_prediction`` (the released ``pred`` field),
        ``text_confidence``/``vision_confidence`` (``|p(Yes) - p(No)|`` of the released probabilities),
        ``text_probs``/``vision_probs`` (``[p(No), p(Yes)]``), ``text_prob_yes``/``vision_prob_yes`` and
        ``text_prob_no``/``vision_prob_no``.

    Raises:
        FileNotFoundError: a required file is missing (named in the message).
        ValueError: an id lacks a caption or a prediction (ids named), or the files disagree on a label.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"load_mustard: {str(data_dir)!r} is not a folder.")
    split_paths = {
        split: _require_file(data_dir, name)
        for split, name in SPLIT_FILES.items()
        if split not in OPTIONAL_SPLITS or (data_dir / name).is_file()
    }
    captions = read_captions(_require_file(data_dir, CAPTIONS_FILE))
    text_predictions = read_prediction_file(_require_file(data_dir, TEXT_PREDICTIONS_FILE))
    vision_predictions = read_prediction_file(_require_file(data_dir, VISION_PREDICTIONS_FILE))
    splits = {}
    for split, path in split_paths.items():
        dataset = Dataset.from_dict(_split_rows(path, captions), features=FEATURES)
        dataset = _add_predictions(dataset, text_predictions, "text", TEXT_PREDICTIONS_FILE)
        splits[split] = _add_predictions(dataset, vision_predictions, "vision", VISION_PREDICTIONS_FILE)
    return DatasetDict(splits)
