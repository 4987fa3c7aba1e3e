"""Unimodal prediction columns and released prediction files.

Every unimodal predictor (see :mod:`mmoe.training.unimodal`) adds the same columns for one modality, named after
``prefix`` (``"text"`` or ``"vision"``):

* ``{prefix}_prediction`` (int): the predicted label id;
* ``{prefix}_confidence`` (float): top-1 minus top-2 probability, i.e. ``|p(yes) - p(no)|`` for two classes;
* ``{prefix}_probs`` (list of float): the probability of every label id, in label-id order;
* ``{prefix}_fold`` (int, cross-fitting only): the fold whose model predicted the row (``-1``: fold ensemble).

This module holds the column helpers and the reading of released predictions, e.g. the MMoE authors'
``{id: {"logits": {"Yes": p, "No": p}, "pred": 0|1, "gth": 0|1}}`` files. It lives in ``data/`` because dataset
builders (:mod:`mmoe.data.mustard`) attach released predictions while loading; ``training/`` imports it from here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image")
"""The modality a unimodal predictor reads: the text column or the image column."""

__all__ = [
    "MODALITIES",
    "add_precomputed_predictions",
    "balance_binary_predictions",
    "check_dataset",
    "confidence_from_probabilities",
    "prediction_columns",
    "parse_json",
    "read_json_text",
    "read_prediction_file",
    "set_columns",
]


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def confidence_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row: ``[N, C]`` → ``[N]`` (``|p1 - p0|`` when ``C == 2``)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape [N, C] with C >= 2, got {probs.shape}.")
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def set_columns(dataset: Dataset, columns: Mapping[str, Sequence[Any]]) -> Dataset:
    """Add (or replace) whole columns of ``dataset``."""
    existing = [name for name in columns if name in dataset.column_names]
    if existing:
        logger.info("Replacing existing column(s) %s.", existing)
        dataset = dataset.remove_columns(existing)
    for name, values in columns.items():
        dataset = dataset.add_column(name, list(values))
    return dataset


def prediction_columns(prefix: str, probs: np.ndarray, predictions: np.ndarray | None = None) -> dict[str, list]:
    """``{prefix}_prediction/_confidence/_probs`` from probabilities ``[N, C]`` (argmax unless given)."""
    probs = np.asarray(probs, dtype=np.float64)
    if predictions is None:
        predictions = probs.argmax(axis=1)
    return {
        f"{prefix}_prediction": [int(p) for p in predictions],
        f"{prefix}_confidence": confidence_from_probabilities(probs).tolist(),
        f"{prefix}_probs": probs.tolist(),
    }


def check_dataset(dataset: Dataset, columns: Sequence[str], what: str) -> None:
    if not isinstance(dataset, Dataset):
        raise ValueError(f"{what}: expected a datasets.Dataset, got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise ValueError(f"{what}: the dataset is empty.")
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not found; the dataset has {dataset.column_names}.")


# ---------------------------------------------------------------------------------------------------------------
# Precomputed (released) predictions
# ---------------------------------------------------------------------------------------------------------------


def read_json_text(path: str | Path, what: str) -> str:
    """The text of ``path`` decoded as UTF-8; a file that is not raises ``ValueError`` naming it and the byte."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{what}: {path} is not UTF-8 text (byte {data[error.start:error.start + 1]!r} at offset {error.start}); "
            "save it as UTF-8 JSON."
        ) from None


def parse_json(text: str, path: str | Path, what: str, line: int | None = None) -> Any:
    """``json.loads(text)``; invalid JSON (e.g. a truncated file) raises ``ValueError`` naming the file, and the
    line of a JSON-lines file. ``NaN``/``Infinity`` tokens are parsed (as Python does): the callers check the
    fields they use, so that the message can name the record and the field."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {line}" if line is not None else f"line {error.lineno} column {error.colno}"
        raise ValueError(f"{what}: {path} is not valid JSON at {where}: {error.msg}.") from None


def read_prediction_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read released predictions: a JSON object ``{id: record}`` or JSON lines with an ``id``/``image_id`` key.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not UTF-8, not valid JSON (e.g. truncated), not an object of records, or a record
            is not an object; the message names the file (and the id or line).
    """
    path = Path(path)
    what = "read_prediction_file"
    if not path.is_file():
        raise FileNotFoundError(f"prediction file {str(path)!r} does not exist.")
    text = read_json_text(path, what)
    if path.suffix == ".jsonl":
        numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
        records = [(number, parse_json(line, path, what, line=number)) for number, line in numbered]
        not_objects = [number for number, record in records if not isinstance(record, dict)]
        if not_objects:
            raise ValueError(f"{what}: {path} line(s) {not_objects[:5]} are not JSON objects.")
        key = next((k for k in ("id", "image_id", "image") if records and k in records[0][1]), None)
        if key is None:
            raise ValueError(f"{path}: JSON lines need an 'id', 'image_id' or 'image' key per line.")
        lacking = [number for number, record in records if key not in record]
        if lacking:
            raise ValueError(f"{what}: {path} line(s) {lacking[:5]} lack the {key!r} key of the first line.")
        return {str(r[key]): r for _, r in records}
    data = parse_json(text, path, what)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{id: record}}, got {type(data).__name__}.")
    not_objects = [str(k) for k, v in data.items() if not isinstance(v, dict)]
    if not_objects:
        raise ValueError(
            f"{what}: {path}: the record of id(s) {not_objects[:5]} is not a JSON object; expected "
            "{id: {\"logits\": {...}, \"pred\": 0|1, ...}}."
        )
    return {str(k): v for k, v in data.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def add_precomputed_predictions(
    dataset: Dataset,
    predictions: Mapping[str, Mapping[str, Any]] | str | Path,
    *,
    prefix: str = "text",
    id_column: str = "id",
    label_words: Sequence[str] = ("No", "Yes"),
    probabilities_key: str = "logits",
    prediction_key: str | None = "pred",
    source: str | None = None,
) -> Dataset:
    """Join released unimodal predictions onto ``dataset`` by id.

    Args:
        predictions: ``{id: {probabilities_key: {label_word: p, ...}, prediction_key: label_id}}`` or a path
            to such a JSON (or JSON lines) file; the MMoE authors' format.
        prefix: column prefix, ``"text"`` or ``"vision"``.
        label_words: the key of each label id in the probability dict (``label_words[i]`` ↔ label ``i``).
        prediction_key: field holding the released prediction. It is used as is (the authors' vision
            predictions are rebalanced, see :func:`balance_binary_predictions`, so they are not always the
            argmax); ``None`` or a record without it falls back to the argmax of the probabilities.
        source: where ``predictions`` came from, named in error messages (defaults to the path when one is given).

    The probabilities are kept as released (they need not sum to 1); the confidence is their top-1 minus
    top-2 difference, ``|p(yes) - p(no)|``. Missing ids raise ``ValueError`` naming them; so does a probability
    that is not a finite number (``NaN`` would otherwise categorize the row as if it were a prediction) and a
    prediction that is not an integer label id, naming the source, the id and the row.
    """
    what = "add_precomputed_predictions"
    check_dataset(dataset, [id_column], what)
    if not isinstance(predictions, Mapping):
        source = source or str(predictions)
        predictions = read_prediction_file(predictions)
    origin = f"{source}: " if source else ""
    ids = [str(i) for i in dataset[id_column]]
    missing = [i for i in ids if i not in predictions]
    if missing:
        raise ValueError(
            f"{what}: {origin}{len(missing)} id(s) have no {prefix} prediction, e.g. {missing[:5]}; "
            "the prediction file must cover every row."
        )
    probs, preds = [], []
    for row, i in enumerate(ids):
        where = f"{what}: {origin}the {prefix} prediction of id {i!r} (row {row})"
        record = predictions[i]
        if not isinstance(record, Mapping):
            raise ValueError(f"{where} is a {type(record).__name__}; expected a JSON object.")
        scores = record.get(probabilities_key) or {}
        if not isinstance(scores, Mapping):
            raise ValueError(f"{where} has {probabilities_key} = {scores!r}; expected an object {{label word: p}}.")
        absent = [w for w in label_words if w not in scores]
        if absent:
            raise ValueError(f"{where} lacks {probabilities_key}{absent}.")
        for word in label_words:
            value = scores[word]
            if not _is_number(value) or not math.isfinite(float(value)):
                raise ValueError(
                    f"{where} has {probabilities_key}[{word!r}] = {value!r}; expected a finite number (a probability)."
                )
        probs.append([float(scores[w]) for w in label_words])
        pred = record.get(prediction_key) if prediction_key else None
        if pred is not None and not (isinstance(pred, (int, np.integer)) and not isinstance(pred, (bool, np.bool_))):
            raise ValueError(f"{where} has {prediction_key} = {pred!r}; expected an integer label id.")
        preds.append(int(np.argmax(probs[-1])) if pred is None else int(pred))
    bad = [(i, p) for i, p in zip(ids, preds) if not 0 <= p < len(label_words)]
    if bad:
        raise ValueError(f"{what}: {origin}{prefix} predictions outside 0..{len(label_words) - 1}, e.g. {bad[:3]}.")
    return set_columns(dataset, prediction_columns(prefix, np.asarray(probs), np.asarray(preds)))


def balance_binary_predictions(prob_yes: Sequence[float], prob_no: Sequence[float], min_fraction: float) -> list[int]:
    """The MMoE authors' prediction balancing for one split (reproduces their released vision predictions).

    Predict ``1`` where ``p(yes) > p(no)``; if the share of ``1`` is below ``min_fraction`` (or above
    ``1 - min_fraction``), instead predict ``1`` for exactly the ``int(N * min_fraction)``
    (``int(N * (1 - min_fraction))``) rows with the highest ``p(yes)``.
    """
    prob_yes, prob_no = np.asarray(prob_yes, dtype=np.float64), np.asarray(prob_no, dtype=np.float64)
    predictions = (prob_yes > prob_no).astype(int)
    n = predictions.size
    ratio = predictions.mean() if n else 0.0
    if ratio < min_fraction or ratio > 1 - min_fraction:
        n_positive = int(n * (min_fraction if ratio < min_fraction else 1 - min_fraction))
        predictions = np.zeros(n, dtype=int)
        predictions[np.argsort(-prob_yes, kind="stable")[:n_positive]] = 1
    return predictions.tolist()
