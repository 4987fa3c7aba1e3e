"""``mmoe-train``'s data sources: the built-in synthetic benchmark, MUStARD, a ``save_to_disk`` folder, or anything
``datasets.load_dataset`` reads (``--dataset_name``: a Hub id or a local folder; ``--train_file``/``--validation_file``/
``--test_file``: CSV, JSON/JSON-lines or parquet files), with the flags of transformers' example scripts.

The Python API takes ``datasets.Dataset`` objects (:class:`~mmoe.training.trainer.MMoETrainer`); this module turns
:class:`~mmoe.training.arguments.DataArguments` into those, plus the identity of the source for the stage
fingerprints and the defaults a built-in dataset implies (its text template).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_from_disk

from ..data.collators import resolve_text_template
from .arguments import DataArguments
from .validation import (
    DATA_FILE_LOADERS,
    ArgumentsError,
    data_files_of,
    dataset_type_problem,
    hub_offline,
    looks_like_path,
)

logger = logging.getLogger(__name__)

VALIDATION_SPLIT_SEED = 0
"""Seed of the validation split carved from the training rows (``--validation_split_percentage``)."""
_LOAD_DATASET_FIELDS = ("dataset_name", "dataset_config_name", "train_file", "validation_file", "test_file",
                        "validation_split_percentage", "image_root")


def uses_load_dataset(data_args: DataArguments) -> bool:
    """Whether the data comes through ``datasets.load_dataset`` (``--dataset_name`` or data files)."""
    return bool(getattr(data_args, "dataset_name", None) or data_files_of(data_args))


def load_source(data_args: DataArguments, image_column: str | None = None) -> DatasetDict:
    """The raw ``DatasetDict`` named by ``--dataset``, ``--dataset_name`` or the data files (train, validation,
    optionally test), with a validation split carved from train when there is none (``--dataset_name``/files only),
    relative paths of ``image_column`` resolved against ``--image_root``, and ``--max_train_samples`` /
    ``--max_eval_samples`` applied.

    Raises:
        ArgumentsError: the source cannot be read (a folder that is no ``DatasetDict``, an empty or missing split, a
            malformed MUStARD file, a file or Hub dataset that ``load_dataset`` cannot load, named with its path).
    """
    name = data_args.dataset
    problem = dataset_type_problem(name)
    if problem:
        raise ArgumentsError([problem])
    if uses_load_dataset(data_args):
        dataset = _load_with_datasets(data_args)
        name = source_name(data_args)
    elif name == "mustard":
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
    if data_args.image_root:
        dataset = _resolve_image_paths(dataset, image_column, data_args.image_root)
    if data_args.max_train_samples is not None:
        dataset["train"] = dataset["train"].select(range(min(data_args.max_train_samples, len(dataset["train"]))))
    if data_args.max_eval_samples is not None:
        for split in [s for s in dataset if s != "train"]:
            dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    return dataset


def _load_with_datasets(data_args: DataArguments) -> DatasetDict:
    """``load_dataset(--dataset_name, --dataset_config_name)`` or ``load_dataset(<loader>, data_files=...)``; then
    a validation split carved from train when the data has none."""
    from datasets import load_dataset

    files = data_files_of(data_args)
    if files:
        suffix = Path(files["train"]).suffix.lower()
        loader, kwargs = DATA_FILE_LOADERS.get(suffix), {"delimiter": "\t"} if suffix == ".tsv" else {}
        if loader is None:
            raise ArgumentsError([f"--train_file {files['train']}: unsupported extension {suffix!r}; pass a "
                                  f"{', '.join(DATA_FILE_LOADERS)} file."])
        where = "/".join(f"--{split}_file" for split in files)
        args = (loader,)
        kwargs["data_files"] = {split: str(Path(path).expanduser()) for split, path in files.items()}
    else:
        where = f"--dataset_name {data_args.dataset_name}"
        args = (data_args.dataset_name, data_args.dataset_config_name)
        kwargs = {"data_dir": data_args.data_dir} if data_args.data_dir else {}
    try:
        dataset = load_dataset(*args, **kwargs)
    except ArgumentsError:
        raise
    except Exception as error:  # network, a missing dataset or config, a malformed file, ...
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        offline = (" HF_HUB_OFFLINE is set: a Hub dataset must already be in the local cache (unset it, or pass a "
                   "local folder or files)." if hub_offline() and not files else
                   " If it is a Hub dataset, check the network (offline? set HF_HUB_OFFLINE=1 only with a cached "
                   "copy) and the id." if not files and not looks_like_path(data_args.dataset_name) else "")
        raise ArgumentsError([f"{where} could not be loaded with datasets.load_dataset ({type(error).__name__}: "
                              f"{reason}).{offline}"]) from None
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({"train": dataset})
    if "validation" not in dataset and "train" in dataset and len(dataset["train"]) > 1:
        percentage = data_args.validation_split_percentage
        parts = dataset["train"].train_test_split(test_size=percentage / 100, seed=VALIDATION_SPLIT_SEED)
        dataset["train"], dataset["validation"] = parts["train"], parts["test"]
        logger.info("%s has no validation split: %d of its %d training rows (%d%%, seed %d; "
                    "--validation_split_percentage) are held out as validation.", where, len(parts["test"]),
                    len(parts["train"]) + len(parts["test"]), percentage, VALIDATION_SPLIT_SEED)
    return dataset


def _resolve_image_paths(dataset: DatasetDict, image_column: str | None, image_root: str) -> DatasetDict:
    """Relative paths of ``image_column`` (a string column, or a ``datasets.Image`` column without embedded bytes)
    joined to ``image_root``, so that the rest of the pipeline reads them from anywhere."""
    from datasets import Image as ImageFeature

    if not image_column:
        raise ArgumentsError([f"--image_root {image_root} needs --image_column, the column of image paths it "
                              "resolves."])
    root = os.path.abspath(os.path.expanduser(image_root))

    def absolute(path: Any) -> Any:
        if isinstance(path, str) and path and not os.path.isabs(os.path.expanduser(path)):
            return os.path.join(root, path)
        return path

    def resolve(row: dict[str, Any]) -> dict[str, Any]:
        value = row[image_column]
        if isinstance(value, dict):
            return {image_column: {**value, "path": absolute(value.get("path"))} if value.get("bytes") is None
                    else value}
        return {image_column: absolute(value)}

    resolved = {}
    for split, rows in dataset.items():
        if image_column not in rows.column_names:
            raise ArgumentsError([f"--image_root {image_root}: split {split!r} has no --image_column "
                                  f"{image_column!r} (columns: {rows.column_names})."], subject="data")
        feature = rows.features[image_column]
        if isinstance(feature, ImageFeature):
            rows = rows.cast_column(image_column, ImageFeature(decode=False))
        rows = rows.map(resolve, desc=f"--image_root on {split}")
        if isinstance(feature, ImageFeature) and feature.decode:
            rows = rows.cast_column(image_column, ImageFeature())
        resolved[split] = rows
    return DatasetDict(resolved)


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
    return resolve_text_template("" if uses_load_dataset(data_args) else data_args.dataset, template)


def source_name(data_args: DataArguments) -> str:
    """How the card and ``mmoe_run.json`` name the data: ``--dataset_name`` (a Hub id as given, a local folder or
    file by its name), else the training file's name, else ``--dataset``. Never an absolute path."""
    named = getattr(data_args, "dataset_name", None)
    if named:
        if looks_like_path(named) or Path(named).expanduser().exists():
            return Path(named).expanduser().resolve().name or named
        return named
    files = data_files_of(data_args)
    if files:
        return Path(files["train"]).name
    return data_args.dataset


def source_identity(data_args: DataArguments, dataset: DatasetDict | None = None) -> dict[str, Any]:
    """What identifies the data for the stage fingerprints: the source, a hash of its files
    (:func:`source_fingerprint`), and the options that change the rows."""
    if uses_load_dataset(data_args):
        options = {name: getattr(data_args, name) for name in (*_LOAD_DATASET_FIELDS, "data_dir",
                                                                "max_train_samples", "max_eval_samples")}
        return {"source": source_name(data_args), "files": source_fingerprint(data_args, dataset), "options": options}
    options = None
    if data_args.dataset == "synthetic":  # the fields of the other sources are left out: older records still match
        options = {k: v for k, v in dataclasses.asdict(data_args).items() if k not in _LOAD_DATASET_FIELDS}
    return {"source": data_args.dataset, "files": source_fingerprint(data_args), "options": options}


def source_fingerprint(data_args: DataArguments, dataset: DatasetDict | None = None) -> str | None:
    """Identity of the files behind ``--dataset``: a hash of MUStARD's files or of a folder's ``state.json`` files
    (which hold ``datasets``' fingerprints); ``None`` for the synthetic benchmark, whose options determine it.
    With ``--train_file``/...: a hash of the files' content; with a local ``--dataset_name`` folder (or
    ``--data_dir``): of every file under it; with a Hub id: ``datasets``' fingerprints of the loaded ``dataset``."""
    if uses_load_dataset(data_args):
        return _load_dataset_fingerprint(data_args, dataset)
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


def _load_dataset_fingerprint(data_args: DataArguments, dataset: DatasetDict | None) -> str | None:
    from .records import dataset_fingerprint, file_hashes

    files = data_files_of(data_args)
    named = data_args.dataset_name
    if files:
        paths = {split: os.path.abspath(os.path.expanduser(path)) for split, path in files.items()}
    else:
        local = [Path(p).expanduser() for p in (named, data_args.data_dir) if p]
        folder = next((p for p in local if p.exists()), None)
        if folder is None:  # a Hub id: datasets' fingerprints of what was loaded
            return dataset_fingerprint(dataset) if dataset is not None else None
        found = [folder] if folder.is_file() else sorted(
            p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                     p.relative_to(folder).parts))
        paths = {p.relative_to(folder).as_posix() if p != folder else p.name: os.path.abspath(p) for p in found}
    hashes = file_hashes(paths.values())
    digest = hashlib.sha256()
    for key, path in sorted(paths.items()):
        digest.update(f"{key}\0{hashes[path]}\n".encode())
    return digest.hexdigest()[:16]
