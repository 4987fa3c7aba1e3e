"""Load and check the pipeline's dataset; attach unimodal predictions; choose the evaluation split.

Labels are checked at this boundary, before any training (:func:`num_labels_of`, :func:`validate_dataset`):

* every split's label column holds integer class indices in ``0..num_labels-1`` (a ``ClassLabel`` or an integer
  ``Value``); ``None``, floats (``0.0``/``1.0``), booleans and nested values are refused with the fix to apply;
* without a ``ClassLabel`` or ``--num_labels``, the training labels must be exactly ``0..K-1``: labels
  ``{0, 1, 5}`` are refused rather than silently becoming a 6-class model;
* a class of validation/test that training never shows is refused (the model could never predict it);
* **string labels** (``"yes"``/``"no"``) of a ``--dataset`` folder are mapped to a ``ClassLabel`` by
  :func:`encode_string_labels` when the data is loaded: names sorted as ``Dataset.class_encode_column`` sorts them
  on the training split, the same names on the other splits (and on string ``text_prediction``/
  ``vision_prediction`` columns), so the model's ``id2label`` carries the names. :func:`num_labels_of` and
  :func:`validate_dataset` themselves refuse string labels, naming ``dataset.class_encode_column(<column>)``.

Every message names the column, the split and the offending values. Every refusal is an
:class:`~mmoe.training.validation.ArgumentsError` (a ``ValueError``): ``mmoe-train`` prints it as
``mmoe-train: error: ...`` lines and exits with status 2. :func:`check_data` runs all of these checks, plus every
image (:func:`image_problems`), from ``MMoETrainer.__init__``.

``--num_labels`` larger than the classes present: refused when the label column is a ``ClassLabel`` of another
size (the names would contradict it); accepted with a warning for plain integer labels, as transformers' own
configs accept it (the extra outputs are never trained).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Image, Value
from transformers import AutoConfig

from ..backbone_utils import is_vision_language
from ..configuration_mmoe import IMAGE_MODALITY
from ..data.collators import format_text
from ..data.images import check_images, prepare_image_dataset
from .arguments import MMoETrainingArguments
from .trainer_utils import stage_arguments, stage_run_name
from .validation import ArgumentsError

logger = logging.getLogger("mmoe")

PREDICTION_COLUMNS = ("text_prediction", "vision_prediction")


def skip_image_decoding(dataset: DatasetDict, keep: str | None) -> DatasetDict:
    """Images stay undecoded bytes in the dataset. Columns the model does not read are never decoded (decoding
    them on every row access would dominate the caption route's run time); the model's own image column is
    decoded batch by batch by the collator, which names the row of a file that fails to decode."""
    first = next(iter(dataset.values()))
    for column, feature in first.features.items():
        if isinstance(feature, Image) and column != keep:
            dataset = dataset.cast_column(column, Image(decode=False))
    if keep is not None and keep in first.column_names:
        dataset = prepare_image_dataset(dataset, keep)
    return dataset


INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
STRING_DTYPES = ("string", "large_string")
FLOAT_DTYPES = ("float16", "float32", "float64", "double", "bfloat16")


def _values(split: Dataset, column: str) -> list:
    """The column as plain Python values, whatever the dataset's format (torch, numpy, ...)."""
    return list(split.with_format(None)[column])


def _examples(values: list, limit: int = 5) -> list:
    seen: list = []
    for value in values:
        if value not in seen:
            seen.append(value)
        if len(seen) == limit:
            break
    return seen


def _none_problem(split_name: str, column: str, values: list) -> str | None:
    missing = sum(value is None for value in values)
    if not missing:
        return None
    return (
        f"Column {column!r} of split {split_name!r} has {missing} row(s) out of {len(values)} with no label "
        f"(None); drop them (dataset.filter(lambda row: row[{column!r}] is not None)) or fill them in."
    )


def label_type_problems(dataset: DatasetDict, label_column: str) -> list[str]:
    """One message per split whose label column is not one integer class index per row (``None``, float, bool,
    string or nested values); splits without the column are left to :func:`validate_dataset`."""
    problems = []
    for split_name, split in dataset.items():
        if label_column not in split.column_names:
            continue
        feature = split.features[label_column]
        values = _values(split, label_column)
        where = f"Column {label_column!r} of split {split_name!r}"
        problems += [p for p in [_none_problem(split_name, label_column, values)] if p]
        dtype = feature.dtype if isinstance(feature, Value) else None
        present = [v for v in values if v is not None]
        if isinstance(feature, ClassLabel) or dtype in INTEGER_DTYPES or dtype == "null":
            continue
        cast_hint = f"dataset = dataset.cast_column({label_column!r}, Value('int64'))"
        if dtype == "bool":
            problems.append(
                f"{where} holds booleans {_examples(present)}; labels must be integer class indices "
                f"0..num_labels-1, and bool is not an int here. Cast them: {cast_hint}."
            )
        elif dtype in FLOAT_DTYPES:
            whole = all(float(v).is_integer() for v in present)
            fix = (
                f"Cast them: {cast_hint}." if whole
                else "Some are not whole numbers: these look like regression targets or probabilities, not classes."
            )
            problems.append(
                f"{where}: labels must be integer class indices, got floats {_examples(present)}. {fix}"
            )
        elif dtype in STRING_DTYPES:
            problems.append(
                f"{where} holds strings {_examples(present)}; labels must be integer class indices. Encode them "
                f"with dataset = dataset.class_encode_column({label_column!r}) (mmoe-train does this itself for a "
                "--dataset folder) or map them to 0..num_labels-1."
            )
        else:
            problems.append(f"{where} holds {feature}; labels must be one integer class index per row.")
    return problems


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise ArgumentsError(problems, subject="labels")


def encode_string_labels(dataset: DatasetDict, label_column: str) -> DatasetDict:
    """Map string labels to a ``ClassLabel`` (names sorted, as ``class_encode_column`` does) on every split.

    The names come from the training split; a string label of another split that training lacks is refused, as
    is a ``None`` label. String ``text_prediction``/``vision_prediction`` columns are mapped with the same names.
    Datasets whose training labels are not strings are returned unchanged.
    """
    train = dataset["train"]
    feature = train.features.get(label_column)
    if not (isinstance(feature, Value) and feature.dtype in STRING_DTYPES):
        return dataset
    problems, values = [], {}
    for split_name, split in dataset.items():
        if label_column not in split.column_names:
            continue
        split_feature = split.features[label_column]
        if not (isinstance(split_feature, Value) and split_feature.dtype in STRING_DTYPES):
            problems.append(
                f"Column {label_column!r} holds strings in split 'train' but {split_feature} in split "
                f"{split_name!r}; use the same label type on every split."
            )
            continue
        values[split_name] = _values(split, label_column)
        problems += [p for p in [_none_problem(split_name, label_column, values[split_name])] if p]
    _raise_problems(problems)
    names = sorted(set(values["train"]))
    for split_name, split_values in values.items():
        unseen = sorted(set(split_values) - set(names))
        if unseen:
            problems.append(_unseen_message(label_column, split_name, unseen))
    for column in PREDICTION_COLUMNS:
        for split_name, split in dataset.items():
            column_feature = split.features.get(column)
            if isinstance(column_feature, Value) and column_feature.dtype in STRING_DTYPES:
                unknown = sorted({v for v in _values(split, column) if v not in names}, key=str)
                if unknown:
                    problems.append(
                        f"Column {column!r} of split {split_name!r} holds {unknown[:5]}, which are not labels of "
                        f"the training split {names[:10]}."
                    )
    _raise_problems(problems)
    class_label = ClassLabel(names=names)
    for split_name in list(dataset):
        for column in (label_column, *PREDICTION_COLUMNS):
            column_feature = dataset[split_name].features.get(column)
            if isinstance(column_feature, Value) and column_feature.dtype in STRING_DTYPES:
                dataset[split_name] = dataset[split_name].cast_column(column, class_label)
    logger.info("String labels of column %r mapped to class indices: %s", label_column, dict(enumerate(names)))
    return dataset


def _unseen_message(label_column: str, split_name: str, unseen: list) -> str:
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in unseen[:10])
    noun = f"class {shown} appears" if len(unseen) == 1 else f"classes {shown} appear"
    return (
        f"Column {label_column!r}: {noun} in {split_name} but never in train, so the model could never predict "
        f"{'it' if len(unseen) == 1 else 'them'}. Drop those rows from {split_name} or add training rows of that "
        "class (a --max_train_samples that is too small can also cut a class out)."
    )


def num_labels_of(dataset: DatasetDict, label_column: str, declared: int | None = None) -> int:
    """``--num_labels`` when given, else the ``ClassLabel`` size, else the number of training classes.

    The label column must hold integer class indices on every split (see the module docstring). When the number
    is inferred from plain integers, the training labels must be exactly ``0..K-1``: labels ``{0, 1, 5}`` are
    refused (they would make a 6-class model with 3 classes never trained) with a hint to remap them or to pass
    ``--num_labels``.
    """
    if label_column not in dataset["train"].column_names:
        raise ArgumentsError([
            f"The training split has no label column {label_column!r} (columns: {dataset['train'].column_names}); "
            "set --label_column."
        ])
    _raise_problems(label_type_problems(dataset, label_column))
    feature = dataset["train"].features.get(label_column)
    if declared is not None:
        if declared < 2:
            raise ArgumentsError([f"--num_labels must be at least 2, got {declared}."])
        if isinstance(feature, ClassLabel) and feature.num_classes != declared:
            raise ArgumentsError([
                f"--num_labels {declared} contradicts column {label_column!r}, a ClassLabel with "
                f"{feature.num_classes} classes {feature.names[:10]}; leave --num_labels out (it is read from the "
                f"ClassLabel), or cast the column to a ClassLabel with {declared} names."
            ])
        present = sorted(v for v in set(_values(dataset["train"], label_column)) if isinstance(v, int))
        never = [c for c in range(declared) if c not in present]
        if never and not isinstance(feature, ClassLabel):
            logger.warning(
                "--num_labels %d: class(es) %s never occur in the training split; the model gets an output for "
                "them that is never trained (as transformers' own configs allow).", declared, never[:10],
            )
        return declared
    if isinstance(feature, ClassLabel):
        if feature.num_classes < 2:
            raise ArgumentsError([
                f"Column {label_column!r} is a ClassLabel with {feature.num_classes} class; need 2+."
            ])
        return feature.num_classes
    classes = sorted(set(_values(dataset["train"], label_column)))
    if classes != list(range(len(classes))):
        missing = sorted(set(range(max(classes) + 1)) - set(classes)) if classes and max(classes) >= 0 else []
        negative = [c for c in classes if c < 0]
        details = []
        if missing:
            details.append(f"{missing[:10]} never occur")
        if negative:
            details.append(f"{negative[:5]} are negative")
        raise ArgumentsError([
            f"Column {label_column!r} of split 'train' holds the classes {classes[:20]}, not the contiguous class "
            f"indices 0..{len(classes) - 1} ({' and '.join(details)}); inferring the number of labels from them "
            f"would build a model with classes that are never trained. Remap the labels to 0..{len(classes) - 1} "
            "(e.g. dataset.map or a ClassLabel), or pass --num_labels if the classes are meant to be there."
        ])
    if len(classes) < 2:
        raise ArgumentsError([
            f"Column {label_column!r} of split 'train' holds a single class {classes}; a classifier needs at "
            "least 2 classes in training."
        ])
    return len(classes)


def validate_dataset(dataset: DatasetDict, args: MMoETrainingArguments, template: str, num_labels: int) -> None:
    """Fail before any training when a column is missing or a label is not a class index in ``0..num_labels-1``
    or is a class that the training split never shows."""
    needed = {args.label_column, *re.findall(r"{(\w+)}", template)}
    if args.image_column:
        needed.add(args.image_column)
    for split_name, split in dataset.items():
        if len(split) == 0:
            raise ArgumentsError([f"Split {split_name!r} is empty (0 rows); every split needs rows."])
        missing = sorted(needed - set(split.column_names))
        if missing:
            raise ArgumentsError([
                f"Split {split_name!r} lacks column(s) {missing} (has {split.column_names}); fix --text_template, "
                "--label_column or --image_column, or add the columns."
            ])
    column = args.label_column
    _raise_problems(label_type_problems(dataset, column))
    if num_labels < 2:
        raise ArgumentsError([f"num_labels must be at least 2, got {num_labels}."])
    classes = {name: set(_values(split, column)) for name, split in dataset.items()}
    problems = []
    for split_name in dataset:
        bad = sorted(v for v in classes[split_name] if not 0 <= v < num_labels)
        unseen = sorted(classes[split_name] - classes["train"]) if split_name != "train" else []
        outside = (
            f"Column {column!r} of split {split_name!r}: labels {bad[:5]} are outside 0..{num_labels - 1} "
            f"(num_labels={num_labels}); map labels to class indices 0..num_labels-1 first"
            + (" (-1 marks unlabeled rows in some test splits; drop them)." if -1 in bad else ".")
        )
        if unseen:
            problems.append(_unseen_message(column, split_name, unseen) + (f" {outside}" if bad else ""))
        elif bad:
            problems.append(outside)
    _raise_problems(problems)


def image_problems(dataset: DatasetDict, image_column: str | None) -> list[str]:
    """Every image of every split is decoded once (:func:`mmoe.data.images.check_images`) before any training;
    one message per broken or missing image, naming the split, the row and the file."""
    if not image_column:
        return []
    problems = []
    for split_name, split in dataset.items():
        if image_column not in split.column_names:
            continue  # validate_dataset names the missing column
        try:
            check_images(split, image_column, max_errors=len(split))
        except ValueError as error:
            lines = str(error).splitlines()
            problems += [f"--image_column {image_column!r}, split {split_name!r}: {line}" for line in lines[1:]]
    return problems


def precomputed_problems(dataset: DatasetDict, args: MMoETrainingArguments) -> list[str]:
    """``--unimodal_source precomputed`` needs the prediction columns in every split."""
    if args.unimodal_source != "precomputed" or has_precomputed_predictions(dataset):
        return []
    return [
        f"--unimodal_source precomputed needs columns {list(PREDICTION_COLUMNS)} in every split; use "
        "--unimodal_source trained to fit unimodal classifiers instead."
    ]


def check_data(dataset: DatasetDict, args: MMoETrainingArguments, template: str) -> int:
    """Every check of the data that needs no model, before any training: no split is empty, the template's, label
    and image columns exist, the labels against ``--num_labels`` (:func:`num_labels_of`, :func:`validate_dataset`),
    precomputed predictions when asked for, and every image decodes. Returns ``num_labels``.

    Raises:
        ArgumentsError: listing the problems.
    """
    empty = [name for name, split in dataset.items() if len(split) == 0]
    if empty:
        raise ArgumentsError(
            [f"Split {name!r} is empty (0 rows); every split needs rows." for name in empty], subject="data"
        )
    num_labels = num_labels_of(dataset, args.label_column, args.num_labels)
    validate_dataset(dataset, args, template, num_labels)
    problems = precomputed_problems(dataset, args) + image_problems(dataset, args.image_column)
    if problems:
        raise ArgumentsError(problems, subject="data")
    return num_labels


def has_precomputed_predictions(dataset: DatasetDict) -> bool:
    return all(column in split.column_names for split in dataset.values() for column in PREDICTION_COLUMNS)


def add_unimodal_predictions(
    dataset: DatasetDict,
    args: MMoETrainingArguments,
    views: dict[str, str],
    backbone: str,
    num_labels: int,
    seed: int,
    fold_dir: Path | None = None,
) -> DatasetDict:
    """Make sure every split has ``text_prediction``/``vision_prediction`` (+ confidences).

    ``precomputed`` keeps the dataset's columns; ``trained`` cross-fits one classifier per modality on the
    training split (each row predicted by a fold model that never saw it) and predicts the other splits with
    the average of the fold models.

    Args:
        views: the modality each predictor reads, ``{"text": <modality>, "vision": <modality>}``
            (:func:`mmoe.data.modalities.unimodal_views`): a template column, or ``"image"`` for the image column
            (read by a vision-language predictor, else through the ``caption`` column).
        fold_dir: the fold models' log folder prefix: fold k of view v logs to ``<fold_dir>-<v>-fold<k>``
            (default: ``<output_dir>/runs/categorize``).
    """
    source = args.unimodal_source
    if source == "auto":
        source = "precomputed" if has_precomputed_predictions(dataset) else "trained"
    if source == "precomputed":
        if not has_precomputed_predictions(dataset):
            raise ArgumentsError([
                f"--unimodal_source precomputed needs columns {list(PREDICTION_COLUMNS)} in every split; use "
                "--unimodal_source trained to fit unimodal classifiers instead."
            ])
        return dataset
    if source != "trained":
        raise ArgumentsError([f"--unimodal_source must be auto, precomputed or trained, got {source!r}."])

    from .unimodal import cross_fit_predictions

    # The user's TrainingArguments (device, --bf16/--fp16, processes, batch sizes, learning rate, --max_steps) with
    # the unimodal epochs; the fold models are scored by Trainer.predict, not evaluated during training.
    # Fold k logs (the user's --logging_strategy and --report_to) to `<fold_dir>-<view>-fold<k>`, by default
    # `<output_dir>/runs/categorize-text-fold0`, with the run name suffixed alike.
    fold_dir = Path(fold_dir or Path(args.output_dir) / "runs" / "categorize")
    fold_args = stage_arguments(
        args, fold_dir, run_name=stage_run_name(args, fold_dir),
        num_train_epochs=args.unimodal_num_train_epochs, eval_strategy="no",
        label_names=["labels"], seed=seed,
    )
    images_seen = bool(args.image_column) and is_vision_language(AutoConfig.from_pretrained(backbone))
    for prefix, name in views.items():
        if name == IMAGE_MODALITY and images_seen:
            # A vision-language predictor reads the image itself (with an empty text), not the caption.
            column, modality = args.image_column, "image"
        else:
            if name == IMAGE_MODALITY:  # a text predictor sees the image through its caption
                if "caption" not in dataset["train"].column_names:
                    raise ArgumentsError([
                        f"The {prefix} predictor reads the image, but --unimodal_backbone {backbone} takes no images "
                        "and the data has no 'caption' column to read instead; pass a vision-language "
                        "--unimodal_backbone or add captions."
                    ])
                name = "caption"
            column, modality = f"{prefix}_view", "text"
            dataset = dataset.map(lambda row, t="{" + name + "}", c=column: {c: format_text(row, t)},
                                  desc=f"{prefix} view")
        dataset = cross_fit_predictions(
            dataset,
            backbone,
            column,
            label_column=args.label_column,
            num_folds=args.num_folds,
            modality=modality,
            training_args=fold_args,
            seed=seed,
            prefix=prefix,
            num_labels=num_labels,
            max_length=args.max_length,
        )
    return dataset


def evaluation_split(dataset: DatasetDict) -> str:
    """``test`` when present, else ``validation``."""
    return "test" if "test" in dataset else "validation"


BUILTIN_LANGUAGES = {"synthetic": "en", "mustard": "en"}
"""Card ``language`` of the built-in datasets: the synthetic benchmark's generator writes English posts and
captions; MUStARD's utterances are English TV dialogue. No built-in license: the card's license is the model's,
which also depends on the backbone's terms, so it is stated only when passed (``--license``) or set on a dataset
folder (``info.license``)."""


def card_metadata(dataset_name: str | None, training_args: MMoETrainingArguments) -> dict[str, Any]:
    """``license`` / ``language`` of the model card: the options, else what the dataset states; absent keys are
    omitted from the card rather than guessed."""
    metadata: dict[str, Any] = {}
    dataset_name = dataset_name or ""
    license_ = getattr(training_args, "license", None) or _dataset_folder_license(dataset_name)
    if license_:
        metadata["license"] = license_
    language = getattr(training_args, "language", None) or BUILTIN_LANGUAGES.get(dataset_name)
    if language:
        languages = [part.strip() for part in str(language).split(",") if part.strip()]
        metadata["language"] = languages[0] if len(languages) == 1 else languages
    return metadata


def _dataset_folder_license(dataset: str) -> str | None:
    """The ``license`` a ``save_to_disk`` folder's splits record in ``dataset_info.json`` (the first one set)."""
    folder = Path(dataset)
    if not dataset or dataset in BUILTIN_LANGUAGES or not folder.is_dir():
        return None
    for info in sorted(folder.glob("*/dataset_info.json")):
        try:
            value = json.loads(info.read_text(encoding="utf-8")).get("license")
        except (OSError, ValueError):
            continue
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None

