"""MUStARD (Castro et al., 2019) in the speaker-independent split of the MMoE paper, with released extras.

A user builds the folder from the public MUStARD release (the utterances, in the MMoE paper's speaker-independent
split) and the MMoE authors' released captions and unimodal predictions. It holds:

* ``mustard_train.json``, ``mustard_validation.json`` and optionally ``mustard_test.json``:
  ``{id: {utterance, speaker, context[], context_speakers[], show, sarcasm}}``;
* ``image_captions_cogvlm2.jsonl``: one ``{"image": id, "caption": str}`` per line;
* ``text_only_pred_qwen2.json`` and ``image_only_pred_cogvlm2.json``:
  ``{id: {logits: {Yes: p, No: p}, gth, pred, ...}}``, the MMoE authors' unimodal predictions.

Every field is checked for its JSON type before anything is built (``"sarcasm": "false"``, a string, is truthy in
Python and would become label 1): a malformed file raises ``ValueError`` naming the file, the id and the field, and
saying what is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .predictions import add_precomputed_predictions, parse_json, read_json_text, read_prediction_file

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


WHAT = "load_mustard"
_BINARY = "a JSON boolean (true/false) or 0/1"


def _binary_label(value: Any, path: Path, utterance_id: str, field: str) -> int:
    """``value`` as 0/1 when it is a JSON boolean or the number 0 or 1; anything else (the string ``"false"``, 2,
    0.5, null) raises ``ValueError`` naming the file, the id and the field."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    raise ValueError(
        f"{WHAT}: {path}: id {utterance_id!r}: field {field!r} is {value!r} ({type(value).__name__}); expected "
        f"{_BINARY}."
    )


def _check_record(record: Any, path: Path, utterance_id: str) -> None:
    """The JSON types of one MUStARD record: an object with a string ``utterance``, a boolean or 0/1 ``sarcasm``,
    string ``speaker``/``show`` and lists of strings ``context``/``context_speakers`` (the last four optional)."""
    where = f"{WHAT}: {path}: id {utterance_id!r}"
    if not isinstance(record, dict):
        raise ValueError(
            f"{where} is a {type(record).__name__}; expected a JSON object with 'utterance' and 'sarcasm'."
        )
    absent = [k for k in ("utterance", "sarcasm") if k not in record]
    if absent:
        raise ValueError(f"{WHAT}: id {utterance_id!r} in {path.name} lacks {absent} ({path}).")
    for field in ("utterance", "speaker", "show"):
        if field in record and not isinstance(record[field], str):
            value = record[field]
            raise ValueError(
                f"{where}: field {field!r} is {value!r} ({type(value).__name__}); expected a JSON string."
            )
    for field in ("context", "context_speakers"):
        value = record.get(field, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(
                f"{where}: field {field!r} is {value!r}; expected a JSON list of strings."
            )
    _binary_label(record["sarcasm"], path, utterance_id, "sarcasm")


def _context(record: dict[str, Any], utterance_id: str) -> str:
    """The previous lines as ``"SPEAKER: line"`` joined by newlines."""
    lines, speakers = record.get("context", []), record.get("context_speakers", [])
    if len(lines) != len(speakers):
        raise ValueError(
            f"load_mustard: id {utterance_id!r} has {len(lines)} context lines but {len(speakers)} context speakers."
        )
    return "\n".join(f"{speaker}: {line}" for speaker, line in zip(speakers, lines))


def read_captions(path: Path) -> dict[str, str]:
    """``{id: caption}`` from the JSON-lines caption file.

    Raises:
        ValueError: naming the file and the line: a line that is not a JSON object with an ``image`` id and a
            string ``caption``, or an id captioned twice with different captions.
    """
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(read_json_text(path, WHAT).splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_json(line, path, WHAT, line=number)
        if not isinstance(record, dict) or "image" not in record or "caption" not in record:
            raise ValueError(f"{WHAT}: {path.name} line {number} lacks 'image' or 'caption' ({path}).")
        image, caption = record["image"], record["caption"]
        if isinstance(image, bool) or not isinstance(image, (str, int)):
            raise ValueError(f"{WHAT}: {path} line {number}: field 'image' is {image!r}; expected a string id.")
        if not isinstance(caption, str):
            raise ValueError(
                f"{WHAT}: {path} line {number}: field 'caption' is {caption!r} ({type(caption).__name__}); "
                "expected a JSON string."
            )
        key = str(image)
        if key in captions and captions[key] != caption:
            raise ValueError(
                f"{WHAT}: {path}: id {key!r} has two different captions, on lines {first_line[key]} and {number}; "
                "keep one."
            )
        captions[key] = caption
        first_line.setdefault(key, number)
    return captions


def _split_rows(path: Path, captions: dict[str, str]) -> dict[str, list]:
    """Column lists of one split file, joined with the captions (every record's field types checked first)."""
    records = parse_json(read_json_text(path, WHAT), path, WHAT)
    if not isinstance(records, dict):
        raise ValueError(
            f"{WHAT}: {path} holds a JSON {type(records).__name__}; expected an object "
            "{id: {utterance, speaker, context, context_speakers, show, sarcasm}}."
        )
    for utterance_id, record in records.items():
        _check_record(record, path, utterance_id)
    missing = [i for i in records if i not in captions]
    if missing:
        raise ValueError(
            f"load_mustard: {CAPTIONS_FILE} has no caption for {len(missing)} id(s) of {path.name}, e.g. {missing[:5]}."
        )
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for utterance_id, record in records.items():
        columns["id"].append(utterance_id)
        columns["text"].append(record["utterance"])
        columns["context"].append(_context(record, utterance_id))
        columns["speaker"].append(record.get("speaker", ""))
        columns["show"].append(record.get("show", ""))
        columns["caption"].append(captions[utterance_id])
        columns["label"].append(_binary_label(record["sarcasm"], path, utterance_id, "sarcasm"))
    return columns


def _check_gold(dataset: Dataset, predictions: dict[str, dict[str, Any]], path: Path) -> None:
    """The ``gth`` field of the released predictions must be 0/1 and equal the MUStARD label."""
    wrong = []
    for i, label in zip(dataset["id"], dataset["label"]):
        gold = predictions[i].get("gth")
        if gold is not None and _binary_label(gold, path, i, "gth") != label:
            wrong.append(i)
    if wrong:
        raise ValueError(
            f"load_mustard: {path.name} disagrees with the sarcasm label ('gth') for ids {wrong[:5]}; "
            "the files do not belong together."
        )


def _add_predictions(dataset: Dataset, predictions: dict[str, dict[str, Any]], prefix: str, path: Path) -> Dataset:
    file_name = path.name
    missing = [i for i in dataset["id"] if i not in predictions]
    if missing:
        raise ValueError(f"load_mustard: {file_name} has no prediction for {len(missing)} id(s), e.g. {missing[:5]}.")
    _check_gold(dataset, predictions, path)
    dataset = add_precomputed_predictions(
        dataset, predictions, prefix=prefix, label_words=LABEL_WORDS, source=str(path)
    )
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
        ValueError: an id lacks a caption or a prediction (ids named), the files disagree on a label, or a file is
            malformed (not UTF-8, not valid JSON, a list instead of an object, a field of the wrong JSON type such
            as ``"sarcasm": "false"``, a non-finite probability); the message names the file, the id and the field.
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
    text_path = _require_file(data_dir, TEXT_PREDICTIONS_FILE)
    vision_path = _require_file(data_dir, VISION_PREDICTIONS_FILE)
    text_predictions, vision_predictions = read_prediction_file(text_path), read_prediction_file(vision_path)
    # Every split file is read and checked before any dataset is built: all type errors surface at once, early.
    rows = {split: _split_rows(path, captions) for split, path in split_paths.items()}
    splits = {}
    for split, columns in rows.items():
        dataset = Dataset.from_dict(columns, features=FEATURES)
        dataset = _add_predictions(dataset, text_predictions, "text", text_path)
        splits[split] = _add_predictions(dataset, vision_predictions, "vision", vision_path)
    return DatasetDict(splits)
