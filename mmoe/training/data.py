"""Load and check the pipeline's dataset; attach unimodal predictions; choose the evaluation split."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Image, load_from_disk
from transformers import AutoConfig

from ..backbone_utils import is_vision_language
from ..data.collators import format_text
from ..data.images import prepare_image_dataset
from .arguments import DataArguments, MMoETrainingArguments

logger = logging.getLogger("mmoe")

PREDICTION_COLUMNS = ("text_prediction", "vision_prediction")
DEFAULT_TEMPLATES = {
    "mustard": "{caption} | {context} | {text}",
    "synthetic": "{caption} | {text}",
}


def load_pipeline_dataset(data_args: DataArguments) -> DatasetDict:
    """The raw ``DatasetDict`` named by ``--dataset`` (train, validation, optionally test)."""
    name = data_args.dataset
    if name == "mustard":
        if not data_args.data_dir:
            raise ValueError("--dataset mustard needs --data_dir <folder with mustard_train.json, ...>.")
        from ..data.mustard import load_mustard

        dataset = load_mustard(data_args.data_dir)
    elif name == "synthetic":
        from ..data.synthetic import make_synthetic_dataset

        dataset = make_synthetic_dataset(
            num_train=data_args.synthetic_num_train,
            num_validation=data_args.synthetic_num_validation,
            num_test=data_args.synthetic_num_test,
            label_noise=data_args.synthetic_label_noise,
            seed=data_args.synthetic_seed,
        )
    elif Path(name).is_dir():
        dataset = load_from_disk(name)
        if not isinstance(dataset, DatasetDict):
            raise ValueError(f"--dataset {name}: expected a DatasetDict folder with train/validation splits.")
    else:
        raise ValueError(
            f"--dataset {name!r} is neither 'synthetic', 'mustard' nor a folder written by DatasetDict.save_to_disk."
        )
    dataset = _skip_image_decoding(dataset, keep=data_args.image_column)
    for split in ("train", "validation"):
        if split not in dataset:
            raise ValueError(f"The dataset needs a {split!r} split; it has {list(dataset)}.")
    if data_args.max_train_samples:
        dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples:
        for split in [s for s in dataset if s != "train"]:
            dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    return dataset


def _skip_image_decoding(dataset: DatasetDict, keep: str | None) -> DatasetDict:
    """Images stay undecoded bytes in the dataset. Columns the model does not read are never decoded (decoding
    them on every row access would dominate the caption route's run time); the model's own image column is
    decoded batch by batch by the collator, which names the row of a file that fails to decode."""
    for column, feature in dataset["train"].features.items():
        if isinstance(feature, Image) and column != keep:
            dataset = dataset.cast_column(column, Image(decode=False))
    if keep is not None and keep in dataset["train"].column_names:
        dataset = prepare_image_dataset(dataset, keep)
    return dataset


def text_template(data_args: DataArguments) -> str:
    return data_args.text_template or DEFAULT_TEMPLATES.get(data_args.dataset, "{text}")


def num_labels_of(dataset: DatasetDict, label_column: str, declared: int | None = None) -> int:
    """``--num_labels`` when given, else the ``ClassLabel`` size, else ``max(label) + 1`` over every split."""
    if declared is not None:
        return declared
    if label_column not in dataset["train"].column_names:
        raise ValueError(f"The training split has no label column {label_column!r}; set --label_column.")
    feature = dataset["train"].features.get(label_column)
    if isinstance(feature, ClassLabel):
        return feature.num_classes
    return int(max(max(split[label_column]) for split in dataset.values() if len(split))) + 1


def validate_dataset(dataset: DatasetDict, data_args: DataArguments, num_labels: int) -> None:
    """Fail before any training when a column is missing or a label is outside ``0..num_labels-1``."""
    needed = {data_args.label_column, *re.findall(r"{(\w+)}", text_template(data_args))}
    if data_args.image_column:
        needed.add(data_args.image_column)
    for split_name, split in dataset.items():
        if len(split) == 0:
            raise ValueError(f"Split {split_name!r} is empty.")
        missing = sorted(needed - set(split.column_names))
        if missing:
            raise ValueError(
                f"Split {split_name!r} lacks column(s) {missing} (has {split.column_names}); fix --text_template, "
                "--label_column or --image_column, or add the columns."
            )
        labels = set(split[data_args.label_column])
        bad = sorted(v for v in labels if not isinstance(v, int) or not 0 <= v < num_labels)
        if bad:
            raise ValueError(
                f"Split {split_name!r}: labels {bad[:5]} are outside 0..{num_labels - 1}; map labels to integers "
                "0..num_labels-1 first."
            )


def has_precomputed_predictions(dataset: DatasetDict) -> bool:
    return all(column in split.column_names for split in dataset.values() for column in PREDICTION_COLUMNS)


def add_unimodal_predictions(
    dataset: DatasetDict,
    data_args: DataArguments,
    training_args: MMoETrainingArguments,
    backbone: str,
    num_labels: int,
    seed: int,
) -> DatasetDict:
    """Make sure every split has ``text_prediction``/``vision_prediction`` (+ confidences).

    ``precomputed`` keeps the dataset's columns; ``trained`` cross-fits one classifier per modality on the
    training split (each row predicted by a fold model that never saw it) and predicts the other splits with
    the average of the fold models.
    """
    source = data_args.unimodal_source
    if source == "auto":
        source = "precomputed" if has_precomputed_predictions(dataset) else "trained"
    if source == "precomputed":
        if not has_precomputed_predictions(dataset):
            raise ValueError(
                f"--unimodal_source precomputed needs columns {list(PREDICTION_COLUMNS)} in every split; use "
                "--unimodal_source trained to fit unimodal classifiers instead."
            )
        return dataset
    if source != "trained":
        raise ValueError(f"--unimodal_source must be auto, precomputed or trained, got {source!r}.")

    from .unimodal import cross_fit_predictions

    views = {"text": data_args.text_view_template, "vision": data_args.vision_view_template}
    fold_args = {
        "num_train_epochs": data_args.unimodal_num_train_epochs,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "per_device_eval_batch_size": training_args.per_device_eval_batch_size,
        "learning_rate": training_args.learning_rate,
        "use_cpu": training_args.use_cpu,
    }
    if training_args.max_steps and training_args.max_steps > 0:
        fold_args["max_steps"] = training_args.max_steps
    images_seen = bool(data_args.image_column) and is_vision_language(AutoConfig.from_pretrained(backbone))
    for prefix, template in views.items():
        if prefix == "vision" and images_seen:
            # A vision-language predictor reads the image itself (with an empty text), not the caption.
            column, modality = data_args.image_column, "image"
        else:
            column, modality = f"{prefix}_view", "text"
            dataset = dataset.map(lambda row, t=template, c=column: {c: format_text(row, t)}, desc=f"{prefix} view")
        dataset = cross_fit_predictions(
            dataset,
            backbone,
            column,
            label_column=data_args.label_column,
            num_folds=data_args.num_folds,
            modality=modality,
            training_args=fold_args,
            seed=seed,
            prefix=prefix,
            num_labels=num_labels,
            max_length=data_args.max_length,
        )
    return dataset


def evaluation_split(dataset: DatasetDict) -> str:
    """``test`` when present, else ``validation``."""
    return "test" if "test" in dataset else "validation"
