"""``mmoe-categorize``: add the ``interaction`` column to every split of a dataset and save it.

Examples::

    mmoe-categorize --dataset mustard --data_dir mustard/ --output_dir runs/mustard-categorized
    mmoe-categorize --dataset my_saved_dataset --output_dir out --min_confidence 0.1 --min_minority_fraction 0.2
    mmoe-categorize config.yaml          # the same options as YAML (or JSON) keys
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk
from transformers import HfArgumentParser

from ..configuration_mmoe import DEFAULT_EXPERTS
from .categorize import categorize_splits, interaction_counts

logger = logging.getLogger(__name__)


@dataclass
class CategorizeArguments:
    """Options of ``mmoe-categorize`` (each one a command-line flag and a YAML/JSON key)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where the categorized DatasetDict is written with save_to_disk."}
    )
    dataset: str = field(
        default="mustard",
        metadata={"help": "'mustard' (read with load_mustard from --data_dir) or a folder written by save_to_disk."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "MUStARD folder (for --dataset mustard)."})
    label_column: str = field(default="label", metadata={"help": "Gold label ids."})
    text_prediction_column: str = field(default="text_prediction", metadata={"help": "Text-only prediction ids."})
    vision_prediction_column: str = field(
        default="vision_prediction", metadata={"help": "Vision-only (or caption-only) prediction ids."}
    )
    text_confidence_column: str = field(
        default="text_confidence",
        metadata={"help": "Text confidence |p(yes)-p(no)|, used by filtering/rebalancing; '' for none."},
    )
    vision_confidence_column: str = field(
        default="vision_confidence",
        metadata={"help": "Vision confidence |p(yes)-p(no)|, used by filtering/rebalancing; '' for none."},
    )
    train_split: str = field(default="train", metadata={"help": "The only split that filtering and rebalancing touch."})
    min_confidence: float | None = field(
        default=None,
        metadata={"help": "Drop training rows whose unimodal confidence is below this (paper: 0.1). Off by default."},
    )
    min_minority_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Rebalance each training interaction subset so its rarest gold label is at least this "
            "fraction, dropping the least confident majority rows (paper: 0.2). Off by default."
        },
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Size of the label set (default: ClassLabel size or max(label)+1)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of random rebalancing (only without confidence columns)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing --output_dir."})


def load_input(args: CategorizeArguments) -> DatasetDict:
    """The dataset named by ``--dataset``: MUStARD, or a ``save_to_disk`` folder (a lone Dataset becomes the
    ``train_split``)."""
    if args.dataset == "mustard":
        if not args.data_dir:
            raise ValueError("--dataset mustard needs --data_dir (the folder with mustard_train.json, ...).")
        from ..data.mustard import load_mustard

        return load_mustard(args.data_dir)
    path = Path(args.dataset)
    if not path.is_dir():
        raise ValueError(f"--dataset must be 'mustard' or a folder written by save_to_disk; {str(path)!r} is neither.")
    loaded = load_from_disk(str(path))
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({args.train_split: loaded})


def run_categorize(args: CategorizeArguments, dataset: DatasetDict | Dataset | None = None) -> DatasetDict:
    """Categorize every split (refinements on ``train_split`` only) and save to ``args.output_dir`` if set.

    ``dataset`` overrides ``args.dataset`` (for pipelines that already hold the data in memory).
    """
    if args.output_dir and Path(args.output_dir).exists() and any(Path(args.output_dir).iterdir()):
        if not args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {args.output_dir!r} is not empty; pass --overwrite_output_dir to replace it."
            )
    if dataset is None:
        dataset = load_input(args)
    elif isinstance(dataset, Dataset):
        dataset = DatasetDict({args.train_split: dataset})
    refining = args.min_confidence is not None or args.min_minority_fraction is not None
    categorized = categorize_splits(
        dataset,
        train_split=args.train_split if refining else None,
        min_confidence=args.min_confidence,
        min_minority_fraction=args.min_minority_fraction,
        label_column=args.label_column,
        text_prediction_column=args.text_prediction_column,
        vision_prediction_column=args.vision_prediction_column,
        text_confidence_column=(args.text_confidence_column or None) if refining else None,
        vision_confidence_column=(args.vision_confidence_column or None) if refining else None,
        num_labels=args.num_labels,
        seed=args.seed,
    )
    if args.output_dir:
        categorized.save_to_disk(args.output_dir)
        logger.info("Saved the categorized dataset to %s", args.output_dir)
    return categorized


def format_counts(dataset: DatasetDict) -> str:
    """A small text table: one row per split, one column per interaction."""
    header = f"{'split':<12}" + "".join(f"{name:>12}" for name in DEFAULT_EXPERTS) + f"{'total':>8}"
    lines = [header]
    for split, data in dataset.items():
        counts = interaction_counts(data)
        lines.append(f"{split:<12}" + "".join(f"{counts[n]:>12}" for n in DEFAULT_EXPERTS) + f"{len(data):>8}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> CategorizeArguments:
    """Flags, or a single ``.yaml``/``.yml``/``.json`` file holding the same keys."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(CategorizeArguments, description=__doc__.splitlines()[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])[0]
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])[0]
    return parser.parse_args_into_dataclasses(args=argv)[0]


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``mmoe-categorize``: categorize, save, print the counts per split.

    The work itself is :func:`run_categorize`, which returns the ``DatasetDict``.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    categorized = run_categorize(args)
    print(format_counts(categorized))
    if args.output_dir:
        print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()
