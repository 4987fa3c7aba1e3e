"""Unimodal predictions, source 3: a classifier fine-tuned with the ``Trainer`` on one modality, cross-fitted.

With K-fold cross-fitting no training row is predicted by a model that saw it (columns described in
:mod:`mmoe.data.predictions`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ...data.predictions import MODALITIES, check_dataset, prediction_columns, set_columns
from ..nonfinite import NonFiniteLossCallback
from ..trainer_utils import first_array, prune_empty_dirs, route_logs

logger = logging.getLogger("mmoe")


def assign_folds(labels: Sequence[int], num_folds: int, seed: int = 0) -> list[int]:
    """Stratified fold id of every row: within each label, a seeded shuffle dealt round-robin over the folds."""
    if num_folds < 2:
        raise ValueError(f"cross-fitting needs num_folds >= 2, got {num_folds}.")
    labels = np.asarray(labels)
    if labels.size < num_folds:
        raise ValueError(f"cross-fitting: {labels.size} rows cannot fill {num_folds} folds; lower `num_folds`.")
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.size, dtype=int)
    offset = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        folds[rows] = (offset + np.arange(rows.size)) % num_folds
        offset += rows.size  # continue dealing where the previous label stopped, so folds stay equal in size
    return folds.tolist()


def _default_training_args(seed: int, output_dir: str, overrides: Mapping[str, Any] | None) -> TrainingArguments:
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "learning_rate": 5e-5,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
        "dataloader_pin_memory": torch.cuda.is_available(),
        "seed": seed,
        # MMoE-based classifiers (vision-language backbones) also name `interaction_labels` in forward;
        # the fold models learn and are scored on `labels` only.
        "label_names": ["labels"],
    }
    kwargs.update(overrides or {})
    kwargs["remove_unused_columns"] = False  # the collators below read the raw columns
    return TrainingArguments(**kwargs)


def _text_collator(tokenizer: Any, column: str, label_column: str, max_length: int) -> Callable[[list], dict]:
    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = tokenizer(
            [str(r[column]) for r in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batch["labels"] = torch.tensor([int(r[label_column]) for r in rows])
        return dict(batch)

    return collate


def _image_collator(processor: Any, column: str, label_column: str) -> Callable[[list], dict]:
    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = processor(images=[r[column].convert("RGB") for r in rows], return_tensors="pt")
        batch["labels"] = torch.tensor([int(r[label_column]) for r in rows])
        return dict(batch)

    return collate


def _load_classifier(
    model_name_or_path: str, modality: str, num_labels: int, column: str, label_column: str, max_length: int
) -> tuple[PreTrainedModel, Any, Callable[[list], dict]]:
    """A freshly initialised head on the pretrained body, its processing class and a collator."""
    from ...backbone_utils import is_vision_language

    config = AutoConfig.from_pretrained(model_name_or_path)
    if is_vision_language(config):
        return _load_multimodal_view_classifier(model_name_or_path, config, modality, num_labels, column,
                                                label_column, max_length)
    if modality == "text":
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
        )
        if tokenizer.pad_token is None:  # decoder LMs
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, tokenizer, _text_collator(tokenizer, column, label_column, max_length)
    processor = AutoImageProcessor.from_pretrained(model_name_or_path)
    model = AutoModelForImageClassification.from_pretrained(
        model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
    )
    return model, processor, _image_collator(processor, column, label_column)


def _load_multimodal_view_classifier(
    model_name_or_path: str, config: Any, modality: str, num_labels: int, column: str, label_column: str,
    max_length: int,
) -> tuple[PreTrainedModel, Any, Callable[[list], dict]]:
    """A vision-language backbone (ViLT, LLaVA, BLIP-2) as a unimodal classifier: one LoRA adapter + head
    (a one-expert MMoE model) fed the text-only view (a blank image) or the image-only view (an empty text)."""
    from ...data.multimodal_collator import build_collator, load_processor
    from ...modeling_mmoe import MMoEForSequenceClassification

    model = MMoEForSequenceClassification.from_backbone(model_name_or_path, num_labels=num_labels, experts=["unimodal"])
    model.train_expert("unimodal")
    processor = load_processor(model_name_or_path, config)
    if modality == "text":
        collator = build_collator(processor, config, view="text", text_template="{" + column + "}",
                                  max_length=max_length, label_column=label_column)
    else:
        collator = build_collator(processor, config, view="image", image_column=column, text_template="",
                                  max_length=max_length, label_column=label_column)
    return model, processor, collator


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.asarray(logits, dtype=np.float64)).softmax(-1).numpy()


def cross_fit_predictions(
    dataset: Dataset | DatasetDict,
    model_name_or_path: str | Path,
    column: str,
    *,
    label_column: str = "label",
    num_folds: int = 5,
    modality: str = "text",
    training_args: TrainingArguments | Mapping[str, Any] | None = None,
    seed: int = 0,
    prefix: str = "text",
    num_labels: int | None = None,
    train_split: str = "train",
    max_length: int = 256,
) -> Dataset | DatasetDict:
    """Out-of-fold predictions of a classifier fine-tuned on one modality.

    Rows are dealt into ``num_folds`` stratified folds (:func:`assign_folds`). For each fold ``k`` a fresh
    classifier is loaded from ``model_name_or_path`` (``AutoModelForSequenceClassification`` on the text
    column ``column``, or ``AutoModelForImageClassification`` + ``AutoImageProcessor`` on an image column),
    trained with the ``Trainer`` on the rows of the other folds only, and predicts the rows of fold ``k``.
    So every training row is predicted by a model that never saw it; otherwise nearly every point would
    look redundant. For the image-captioned route, pass the caption column with ``modality="text"`` and
    ``prefix="vision"``.

    Args:
        dataset: a ``Dataset`` (cross-fitted), or a ``DatasetDict`` whose ``train_split`` is cross-fitted
            and whose other splits are predicted by the average of the ``num_folds`` fold models
            (``{prefix}_fold = -1``).
        training_args: a ``TrainingArguments`` used for every fold, or a dict of overrides of the defaults
            (3 epochs, batch 16, lr 5e-5, ``report_to="none"``, ``save_strategy="no"``, ``seed``).
            ``remove_unused_columns`` is always turned off (the collators read the raw columns). Fold ``k``
            trains with ``output_dir`` and ``run_name`` suffixed ``-{prefix}-fold{k}`` (its own log folder and
            run for ``report_to``); the fold progress bar follows ``disable_tqdm``.
        seed: seeds the folds and each fold's head initialisation (``seed + k``).
        num_labels: defaults to the ``ClassLabel`` size, else ``max(label) + 1``.

    Returns:
        The same type, with ``{prefix}_prediction``, ``{prefix}_confidence``, ``{prefix}_probs`` and
        ``{prefix}_fold``.
    """
    what = "cross_fit_predictions"
    if modality not in MODALITIES:
        raise ValueError(f"{what}: unknown modality {modality!r}; use one of {MODALITIES}.")
    others: dict[str, Dataset] = {}
    if isinstance(dataset, DatasetDict):
        if train_split not in dataset:
            raise ValueError(f"{what}: split {train_split!r} not found; the splits are {list(dataset)}.")
        others = {name: split for name, split in dataset.items() if name != train_split}
        train = dataset[train_split]
    else:
        train = dataset
    for split in [train, *others.values()]:
        check_dataset(split, [column, label_column], what)
    labels = [int(v) for v in train[label_column]]
    if num_labels is None:
        feature = train.features[label_column]
        num_labels = feature.num_classes if isinstance(feature, ClassLabel) else max(labels) + 1
    if min(labels) < 0 or max(labels) >= num_labels:
        raise ValueError(f"{what}: labels must lie in 0..{num_labels - 1}; found {sorted(set(labels))}.")

    folds = np.asarray(assign_folds(labels, num_folds, seed))
    train_probs = np.zeros((len(train), num_labels))
    other_probs = {name: np.zeros((len(split), num_labels)) for name, split in others.items()}
    with contextlib.ExitStack() as stack:
        args = training_args
        if not isinstance(args, TrainingArguments):
            # only the defaults need a folder of their own (they log nothing); removed on exit
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mmoe-crossfit-"))
            args = _default_training_args(seed, str(Path(tmp) / "crossfit"), args)
        elif args.remove_unused_columns:
            args = dataclasses.replace(args, remove_unused_columns=False)
        for k in tqdm(range(num_folds), desc=f"{prefix} cross-fitting", unit="fold", disable=bool(args.disable_tqdm)):
            trainer = _train_fold(
                train.select(np.flatnonzero(folds != k)),
                model_name_or_path,
                modality,
                num_labels,
                column,
                label_column,
                max_length,
                _fold_arguments(args, f"{prefix}-fold{k}"),
                seed + k,
            )
            held_out = np.flatnonzero(folds == k)
            # an MMoE view classifier returns (logits, expert_logits): the first tensor holds the class scores
            train_probs[held_out] = _softmax(first_array(trainer.predict(train.select(held_out)).predictions))
            for name, split in others.items():
                other_probs[name] += _softmax(first_array(trainer.predict(split).predictions)) / num_folds
            del trainer
    result = set_columns(train, {**prediction_columns(prefix, train_probs), f"{prefix}_fold": folds.tolist()})
    if not others:
        return result
    out = {train_split: result}
    for name, split in others.items():
        columns = {**prediction_columns(prefix, other_probs[name]), f"{prefix}_fold": [-1] * len(split)}
        out[name] = set_columns(split, columns)
    return DatasetDict({name: out[name] for name in dataset})


def _fold_arguments(args: TrainingArguments, suffix: str) -> TrainingArguments:
    """Fold ``suffix``'s own copy of ``args``: ``output_dir`` (where ``--report_to tensorboard`` logs) and
    ``run_name`` both suffixed with ``-<prefix>-fold<k>``, so that folds never share a log folder or a run."""
    output_dir = str(args.output_dir).rstrip("/\\") + f"-{suffix}"
    run_name = f"{args.run_name}-{suffix}" if args.run_name else None
    return dataclasses.replace(args, output_dir=output_dir, run_name=run_name)


def _train_fold(
    train_rows: Dataset,
    model_name_or_path: str | Path,
    modality: str,
    num_labels: int,
    column: str,
    label_column: str,
    max_length: int,
    args: TrainingArguments,
    seed: int,
) -> Trainer:
    """Fine-tune a fresh classifier on ``train_rows`` and return its ``Trainer`` (ready for ``predict``)."""
    set_seed(seed)
    model, processing_class, collator = _load_classifier(
        str(model_name_or_path), modality, num_labels, column, label_column, max_length
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=train_rows, data_collator=collator, processing_class=processing_class,
        callbacks=[NonFiniteLossCallback(f"unimodal predictor ({column})")],  # a diverged fold stops the run
    )
    route_logs(trainer, args.output_dir)
    logger.info("Stage %s: training on %d rows", Path(args.output_dir).name, len(train_rows))
    started = time.perf_counter()
    trainer.train()
    logger.info("Stage %s: done in %.0f s", Path(args.output_dir).name, time.perf_counter() - started)
    if trainer.is_world_process_zero():
        prune_empty_dirs(args.output_dir)  # nothing logged (report_to none): no folder left behind
    return trainer
