"""Stage 1: unimodal predictions and the ``interaction`` column on every split (MMoE's Algorithm 1)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from ..backbones import resolve_backbone
from ..categorize import categorize_splits, filter_by_confidence, interaction_counts, rebalance_interactions
from ..pipeline_data import add_unimodal_predictions, skip_image_decoding, validate_dataset
from ..records import mark_stage_done, stage_is_done
from ..runtime import is_main_process, main_process_first
from ..trainer_utils import prune_empty_dirs, stage_log_dir
from ..validation import ArgumentsError
from .context import I2MOE, StageContext

logger = logging.getLogger("mmoe")


def check_modalities(ctx: StageContext, dataset: DatasetDict) -> None:
    """I2MoE masks one modality at a time, so every row of every split needs a token of every modality after
    truncation: checked on the text alone, before any training."""
    if ctx.method != I2MOE:
        return
    collator = ctx.modality_collator()
    for name, split in dataset.items():
        try:
            collator.check_rows(split, name)
        except ValueError as error:
            raise ArgumentsError([f"--method i2moe: {error}"]) from None


def run_categorize(ctx: StageContext, raw: DatasetDict) -> DatasetDict:
    """Unimodal predictions (precomputed or cross-fitted) and the ``interaction`` column on every split of ``raw``;
    ``expert_train`` marks the training rows that survive confidence filtering and rebalancing. Saved with
    ``save_to_disk``; returns the categorized dataset."""
    stage_dir = ctx.run_dir / "categorize"
    inputs = ctx.stage_inputs("categorize", unimodal_views=ctx.unimodal_views)
    if stage_is_done(stage_dir, inputs, ctx.overwrite, required=("dataset/dataset_dict.json",)):
        dataset = load_from_disk(str(stage_dir / "dataset"))
        ctx.set_label_space(dataset)
        check_modalities(ctx, dataset)  # also when an MMoE run's categorization is reused
        return dataset
    dataset = skip_image_decoding(raw, keep=ctx.args.image_column)
    ctx.set_label_space(dataset)
    validate_dataset(dataset, ctx.args, ctx.template, ctx.num_labels)
    check_modalities(ctx, dataset)  # before the unimodal predictors train
    with main_process_first():
        unimodal_backbone = resolve_backbone(
            ctx.args.unimodal_backbone or ctx.model_args.backbone, Path(ctx.args.output_dir)
        )
    if is_main_process():  # a redone categorization's fold logs replace the old ones
        for old_logs in (ctx.run_dir / "runs").glob("categorize-*"):
            shutil.rmtree(old_logs, ignore_errors=True)
    dataset = add_unimodal_predictions(
        dataset, ctx.args, ctx.unimodal_views, unimodal_backbone, ctx.num_labels, ctx.seed,
        fold_dir=stage_log_dir(ctx.run_dir, "categorize"),  # fold k of view v logs to runs/categorize-v-fold<k>
    )
    if is_main_process():
        prune_empty_dirs(ctx.run_dir / "runs", stop=ctx.run_dir)  # no `runs/` when nothing was logged
    dataset = categorize_splits(dataset, num_labels=ctx.num_labels, label_column=ctx.args.label_column)
    refined = _refined_train_ids(dataset["train"], ctx)
    dataset["train"] = dataset["train"].map(
        lambda row, i: {"expert_train": i in refined}, with_indices=True, desc="marking expert rows"
    )
    if is_main_process():
        _save_dataset_atomically(dataset, stage_dir / "dataset")
    counts = {name: interaction_counts(split) for name, split in dataset.items()}
    counts["train_experts"] = interaction_counts(dataset["train"].filter(lambda r: r["expert_train"]))
    mark_stage_done(stage_dir, inputs, {"interaction_counts": counts})
    logger.info("Interaction counts: %s", counts)
    return dataset


def _save_dataset_atomically(dataset: DatasetDict, folder: Path) -> None:
    """``save_to_disk`` into a temporary sibling folder, then swap it in."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _refined_train_ids(train: Dataset, ctx: StageContext) -> set[int]:
    """Rows of the categorized training split that survive confidence filtering and rebalancing."""
    args = ctx.args
    refined = train.add_column("_row", list(range(len(train))))
    confidence_columns = ["text_confidence", "vision_confidence"]
    if args.min_confidence is not None:
        refined = filter_by_confidence(refined, confidence_columns, args.min_confidence)
    if args.min_minority_fraction is not None:
        refined = rebalance_interactions(
            refined, args.label_column, args.min_minority_fraction, confidence_columns, seed=ctx.seed
        )
    return set(refined["_row"])
