"""``mmoe-train``'s data sources: the built-in synthetic benchmark, MUStARD, or a ``save_to_disk`` folder.

The Python API takes ``datasets.Dataset`` objects (:class:`~mmoe.training.trainer.MMoETrainer`); this module turns
:class:`~mmoe.training.arguments.DataArguments` into those, plus the identity of the source for the stage
fingerprints and the defaults a built-in dataset implies (its text template).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from ..data.collators import resolve_text_template
from .arguments import DataArguments
from .validation import ArgumentsError, dataset_type_problem


def load_source(data_args: DataArguments) -> DatasetDict:
    """The raw ``DatasetDict`` named by ``--dataset`` (train, validation, optionally test), with
    ``--max_train_samples`` / ``--max_eval_samples`` applied.

    Raises:
        ArgumentsError: the source cannot be read (a folder that is no ``DatasetDict``, an empty or missing split, a
            malformed MUStARD file, named with its path).
    """
    name = data_args.dataset
    problem = dataset_type_problem(name)
    if problem:
        raise ArgumentsError([problem])
    if name == "mustard":
        if not data_args.data_dir:
            raise ArgumentsError(["--dataset mustard needs --data_dir <folder with mustard_train.json, ...>."])
        from ..data.mustard import load_mustard

        try:
            dataset = load_mustard(data_args.data_dir)
        except (ValueError, FileNotFoundError) as error:  # the loader names the file and the field
            raise ArgumentsError([str(error)]) from None
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
        dataset = _load_folder(Path(name))
    else:
        raise ArgumentsError([
            f"--dataset {name!r} is neither 'synthetic', 'mustard' nor a folder written by DatasetDict.save_to_disk."
        ])
    problems = [f"The dataset needs a {split!r} split; it has {list(dataset)}."
                for split in ("train", "validation") if split not in dataset]
    problems += empty_split_problems(dataset, f"--dataset {name}")
    if problems:
        raise ArgumentsError(problems, subject="data")
    if data_args.max_train_samples is not None:
        dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples is not None:
        for split in [s for s in dataset if s != "train"]:
            dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    return dataset


def empty_split_problems(dataset: DatasetDict | dict, where: str = "the dataset") -> list[str]:
    """One message per split without rows."""
    return [f"Split {split!r} of {where} is empty (0 rows); every split needs rows (drop the split, or fill it)."
            for split, rows in dataset.items() if len(rows) == 0]


def _load_folder(folder: Path) -> DatasetDict:
    """``load_from_disk`` of a ``DatasetDict`` folder; an empty split (which ``datasets`` cannot load: it fails with
    an ``IndexError``) and any unreadable folder are refused by name."""
    empty = []
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        for split in splits:
            state = json.loads((folder / split / "state.json").read_text(encoding="utf-8"))
            if not state.get("_data_files"):
                empty.append(split)
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # load_from_disk says what is wrong below
    if empty:
        raise ArgumentsError(
            [f"Split {split!r} of --dataset {folder} is empty (0 rows); every split needs rows (drop the split, "
             "or fill it)." for split in empty], subject="data")
    try:
        dataset = load_from_disk(str(folder))
    except Exception as error:  # FileNotFoundError, a corrupt state.json or arrow file, ...
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ArgumentsError([
            f"--dataset {folder} cannot be loaded with datasets.load_from_disk ({type(error).__name__}: {reason}); "
            "write it again with DatasetDict.save_to_disk."
        ]) from None
    if not isinstance(dataset, DatasetDict):
        raise ArgumentsError([f"--dataset {folder}: expected a DatasetDict folder with train/validation splits."])
    return dataset


def default_template(data_args: DataArguments, template: str | None) -> str:
    """``--text_template``, else the built-in dataset's caption route, else ``"{text}"``."""
    return resolve_text_template(data_args.dataset, template)


def source_fingerprint(data_args: DataArguments) -> str | None:
    """Identity of the files behind ``--dataset``: a hash of MUStARD's files or of a folder's ``state.json`` files
    (which hold ``datasets``' fingerprints); ``None`` for the synthetic benchmark, whose options determine it."""
    if data_args.dataset == "synthetic":
        return None
    folder = Path(data_args.data_dir if data_args.dataset == "mustard" and data_args.data_dir else data_args.dataset)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    pattern = "*.json*" if data_args.dataset == "mustard" else "*/state.json"
    for path in sorted(folder.glob(pattern)):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
