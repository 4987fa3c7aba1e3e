"""Check every ``mmoe-train`` option before anything is trained, downloaded or written.

:func:`check_arguments` runs right after parsing (``mmoe.training.cli.train``) and reports every problem it
finds in one :class:`ArgumentsError`; each line names the option and says what to fix:

* ranges of the numeric options (``--lora_r 0``, ``--min_confidence 1.5``, ``--max_train_samples 0``, ...);
* that training can happen at all (``--num_train_epochs`` or ``--max_steps`` positive, stage epochs positive);
* ``--output_dir``: a folder that exists and is writable, or one that can be created (never an existing file);
* ``--backbone`` / ``--unimodal_backbone``: an existing model folder, a tiny test backbone, the default MiniLM or
  a valid Hub id; a path that does not exist fails here rather than as a Hub error after the network times out;
* ``--dataset`` / ``--data_dir``: the data can be found;
* ``--push_to_hub`` has a valid ``--hub_model_id`` (refused now, not after hours of training).
* precision: ``--bf16`` over a ``--backbone_dtype float16`` backbone on the CPU (:func:`precision_problems`).
* ``TrainingArguments`` flags the recipe overrides or cannot honour (checkpoints, resuming, the Trainer's own best-model
  selection, ``--label_names``, ...) set away from their defaults (:data:`UNSUPPORTED_TRAINER_FLAGS`); every other
  field is honoured (:data:`HONOURED_TRAINER_FIELDS`) or does not apply (:data:`NOT_APPLICABLE_TRAINER_FIELDS`).

:func:`hub_access_problem` (the Hub answers when pushing) runs once, in ``MMoETrainer.__init__``, since it needs
the network; the data is checked there too (:mod:`mmoe.training.pipeline_data`).

The range checks of :class:`~mmoe.training.arguments.ModelArguments` and
:class:`~mmoe.training.arguments.DataArguments` also run when those dataclasses are built (``__post_init__``),
so a script that builds them directly gets the same messages. Checks on the file system and on combinations of
options run only here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..configuration_mmoe import METHODS, POOLING_METHODS, REWEIGHTING_METHODS, ROUTER_INPUTS, ROUTER_OBJECTIVES

# This module imports nothing of ``arguments.py`` (which imports it): the checks take the argument objects duck-typed.

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
"""``--backbone``'s default (re-exported by :mod:`mmoe.training.arguments`)."""
TINY_BACKBONES = ("tiny-bert", "tiny-qwen2", "tiny-vilt", "tiny-llava")
"""Names ``resolve_backbone`` (:mod:`mmoe.training.backbones`, which imports this tuple) builds from a config."""
UNIMODAL_SOURCES = ("auto", "precomputed", "trained")
BUILTIN_DATASETS = ("synthetic", "mustard")
SELECTION_METRICS = ("macro_f1", "balanced_accuracy", "accuracy", "f1", "precision", "recall")
"""Choices of ``--selection_metric``, the default first: macro-F1 and balanced accuracy do not reward a model that
always answers one class, binary F1 does."""
MAX_SEED = 2**32 - 1  # numpy's seeding limit


class ArgumentsError(ValueError):
    """Invalid ``mmoe-train`` options, found before any training. The message has one line per problem."""

    def __init__(self, problems: list[str], subject: str = "options") -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems with the {subject}:\n" + "\n".join(
                f"  - {problem}" for problem in self.problems
            )
        super().__init__(message)


def raise_if_problems(problems: list[str]) -> None:
    if problems:
        raise ArgumentsError(problems)


# ------------------------------------------------------------------------------------------- number ranges
def _bounds_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    if (gt is not None or ge is not None) and (lt is not None or le is not None):
        left = f"({gt}" if gt is not None else f"[{ge}"
        right = f"{lt})" if lt is not None else f"{le}]"
        return f"in {left}, {right}"
    parts = []
    for symbol, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le)):
        if bound is not None:
            parts.append(f"{symbol} {bound}")
    return " and ".join(parts)


def number_problem(
    option: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    integer: bool = False,
    optional: bool = False,
    hint: str = "",
) -> str | None:
    """A message when ``value`` of ``--option`` is not a finite number within the bounds, else ``None``.

    ``optional``: ``None`` is allowed (the option was not given). ``integer``: whole numbers only.
    """
    if value is None:
        return None if optional else f"--{option} needs a value."
    kind = "an integer" if integer else "a number"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or (integer and value != int(value)):
        return f"--{option} must be {kind}, got {value!r}.{(' ' + hint) if hint else ''}"
    ok = (
        (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (lt is None or value < lt)
        and (le is None or value <= le)
    )
    if ok:
        return None
    return f"--{option} must be {_bounds_text(gt, ge, lt, le)}, got {value!r}.{(' ' + hint) if hint else ''}"


def _collect(*problems: str | None) -> list[str]:
    return [problem for problem in problems if problem]


def choice_problem(option: str, value: Any, choices: tuple[str, ...]) -> str | None:
    if value in choices:
        return None
    return f"--{option} must be one of {', '.join(choices)}; got {value!r}."


def model_argument_problems(args: Any) -> list[str]:
    """Ranges and choices of the model options (no file system access)."""
    return _collect(
        None if isinstance(args.backbone, str) and args.backbone.strip() else "--backbone must not be empty.",
        number_problem("lora_r", args.lora_r, gt=0, integer=True, hint="The paper uses 16."),
        number_problem("lora_alpha", args.lora_alpha, gt=0, hint="The paper uses 32 (twice --lora_r)."),
        number_problem("lora_dropout", args.lora_dropout, ge=0, lt=1),
        number_problem("router_hidden_size", args.router_hidden_size, ge=0, integer=True,
                       hint="Use 0 for a linear router."),
        number_problem("router_dropout", args.router_dropout, ge=0, lt=1),
        number_problem("router_focal_gamma", args.router_focal_gamma, ge=0, hint="0 is plain cross-entropy."),
        number_problem("router_focal_alpha", args.router_focal_alpha, gt=0),
        choice_problem("pooling", args.pooling, POOLING_METHODS),
        choice_problem("router_input", args.router_input, ROUTER_INPUTS),
        choice_problem("router_objective", args.router_objective, ROUTER_OBJECTIVES),
        choice_problem("reweighting", args.reweighting, REWEIGHTING_METHODS),
        number_problem("interaction_loss_weight", args.interaction_loss_weight, ge=0,
                       hint="I2MoE uses 0.01; 0 turns the interaction losses off."),
        number_problem("reweighting_temperature", args.reweighting_temperature, gt=0),
        number_problem("reweighting_hidden_size", args.reweighting_hidden_size, gt=0, integer=True),
    )


def modalities_problem(args: Any) -> str | None:
    """``--modalities`` names: unique; two for MMoE (two unimodal predictors), at least two for I2MoE."""
    if args.modalities is None:
        return None
    names = list(args.modalities)
    if len(set(names)) != len(names):
        return f"--modalities must be unique, got {names}."
    if args.method == "i2moe" and len(names) < 2:
        return (f"--modalities needs at least two modalities for I2MoE, got {names}: its experts are defined by "
                "masking one modality at a time.")
    if args.method == "mmoe" and len(names) != 2:
        return (f"--modalities names {len(names)} modalities ({names}) but MMoE's categorization compares two "
                "unimodal predictions; name two (e.g. --modalities caption text; several columns can share one "
                "modality through the template), or use --method i2moe, which takes any number.")
    return None


def modality_template_problems(args: Any, template: str) -> list[str]:
    """The modalities are columns of the text template (or the image), at least two."""
    from ..configuration_mmoe import IMAGE_MODALITY
    from ..data.modalities import resolve_modalities, template_fields

    problems = []
    columns = template_fields(template)
    try:
        modalities = resolve_modalities(args.method, template, args.image_column, args.modalities)
    except ValueError as error:
        return [str(error)]
    known = columns + ([IMAGE_MODALITY] if args.image_column else [])
    unknown = [name for name in modalities if name not in known]
    if unknown:
        image = (f"; {IMAGE_MODALITY!r} is the image of a vision-language backbone and needs --image_column"
                 if IMAGE_MODALITY in unknown else "")
        problems.append(
            f"--modalities: {unknown} are not columns of the text template {template!r} (its columns: "
            f"{columns}){image}. Name template columns with --modalities, or change --text_template."
        )
    elif len(modalities) < 2:
        problems.append(
            f"--method {args.method} needs at least two modalities; the text template {template!r} has only "
            f"{modalities}. "
            "Put the caption and the text into the template (e.g. --text_template '{caption} | {text}')."
        )
    return problems


IN_MEMORY_DATASET_HINT = (
    "--dataset takes a name or folder; to train on an in-memory DatasetDict use "
    "MMoETrainer(train_dataset=ds['train'], eval_dataset=ds['validation'])"
)


def dataset_type_problem(dataset: Any) -> str | None:
    """``--dataset`` is a name or a folder (a ``str`` or a path), never a dataset object."""
    if isinstance(dataset, (str, os.PathLike)):
        return None
    return f"{IN_MEMORY_DATASET_HINT} (got a {type(dataset).__name__})."


def data_source_problems(args: Any) -> list[str]:
    """Ranges of the data-source options (no file system access)."""
    return _collect(
        dataset_type_problem(args.dataset),
        number_problem("synthetic_num_train", args.synthetic_num_train, gt=0, integer=True),
        number_problem("synthetic_num_validation", args.synthetic_num_validation, gt=0, integer=True),
        number_problem("synthetic_num_test", args.synthetic_num_test, gt=0, integer=True),
        number_problem("synthetic_label_noise", args.synthetic_label_noise, ge=0, lt=0.5,
                       hint="It is the share of flipped labels; at 0.5 the labels carry no signal."),
        number_problem("synthetic_seed", args.synthetic_seed, ge=0, le=MAX_SEED, integer=True),
        number_problem("max_train_samples", args.max_train_samples, ge=1, integer=True, optional=True,
                       hint="Leave it out to keep every training row."),
        number_problem("max_eval_samples", args.max_eval_samples, ge=1, integer=True, optional=True,
                       hint="Leave it out to keep every evaluation row."),
        number_problem("validation_split_percentage", getattr(args, "validation_split_percentage", 10), ge=1, le=50,
                       integer=True, hint="It is the share of the training rows held out as validation."),
        *_source_conflict_problems(args),
    )


DATA_FILE_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""The ``datasets`` loader of each data file extension (``--train_file`` ...), as transformers' examples choose it."""
DATA_FILE_OPTIONS = ("train_file", "validation_file", "test_file")


def data_files_of(args: Any) -> dict[str, str]:
    """``{"train": path, "validation": path, "test": path}`` of the data file options that are set."""
    return {option.split("_")[0]: getattr(args, option) for option in DATA_FILE_OPTIONS if getattr(args, option, None)}


def _source_conflict_problems(args: Any) -> list[str]:
    """One source at a time: ``--dataset`` (when not the default), ``--dataset_name``, or data files."""
    files = [f"--{option}" for option in DATA_FILE_OPTIONS if getattr(args, option, None)]
    named = getattr(args, "dataset_name", None)
    problems = []
    if (named or files) and isinstance(args.dataset, (str, os.PathLike)) and args.dataset != "synthetic":
        given = "--dataset_name" if named else "/".join(files)
        problems.append(f"--dataset {args.dataset} and {given} name two data sources; give one of them.")
    if named and files:
        problems.append(f"--dataset_name {named} and {'/'.join(files)} name two data sources; give one of them.")
    if files and not getattr(args, "train_file", None):
        problems.append(f"{'/'.join(files)} need(s) --train_file, the training rows.")
    if getattr(args, "dataset_config_name", None) and not named:
        problems.append("--dataset_config_name needs --dataset_name, the dataset it configures.")
    return problems


def _data_file_problems(args: Any) -> list[str]:
    """Each data file exists, has a supported extension, and all share one loader."""
    problems, loaders = [], {}
    for split, path in data_files_of(args).items():
        option, suffix = f"--{split}_file", Path(path).suffix.lower()
        if suffix not in DATA_FILE_LOADERS:
            problems.append(f"{option} {path}: unsupported extension {suffix or '(none)'!r}; pass a "
                            f"{', '.join(DATA_FILE_LOADERS)} file.")
        elif not Path(path).expanduser().is_file():
            problems.append(f"{option} {path} is not an existing file; check the path (relative to {Path.cwd()}).")
        else:
            loaders[option] = (DATA_FILE_LOADERS[suffix], suffix == ".tsv")
    if len(set(loaders.values())) > 1:
        problems.append(f"The data files have different formats ({', '.join(loaders)}); give every split in the "
                        "same format.")
    return problems


def _dataset_name_problems(args: Any) -> list[str]:
    """A ``--dataset_name`` meant as a path exists; ``--image_root`` is a folder."""
    problems = []
    named = getattr(args, "dataset_name", None)
    if named and looks_like_path(named) and not Path(named).expanduser().exists():
        problems.append(f"--dataset_name {named} is not an existing folder or file; check the path (relative to "
                        f"{Path.cwd()}), or pass a Hub id ('org/name').")
    root = getattr(args, "image_root", None)
    if root and not Path(root).expanduser().is_dir():
        problems.append(f"--image_root {root} is not an existing folder; check the path.")
    return problems


def input_option_problems(args: Any) -> list[str]:
    """Ranges and choices of how rows become inputs and of categorization (no file system access)."""
    return _collect(
        None if args.label_column else "--label_column must name the column of class labels.",
        choice_problem("method", args.method, METHODS),
        modalities_problem(args),
        number_problem("num_labels", args.num_labels, ge=2, integer=True, optional=True,
                       hint="A classifier needs at least 2 classes; leave it out to read it from the data."),
        number_problem("max_length", args.max_length, gt=0, integer=True),
        choice_problem("unimodal_source", args.unimodal_source, UNIMODAL_SOURCES),
        number_problem("num_folds", args.num_folds, ge=2, integer=True,
                       hint="Cross-fitting needs at least 2 folds so that no row is predicted by a model that saw it."),
        number_problem("unimodal_num_train_epochs", args.unimodal_num_train_epochs, gt=0),
        number_problem("min_confidence", args.min_confidence, ge=0, le=1, optional=True,
                       hint="It is a probability margin (paper: 0.1); leave it out to keep every row."),
        number_problem("min_minority_fraction", args.min_minority_fraction, gt=0, le=0.5, optional=True,
                       hint="It is the minority label's share after rebalancing (paper: 0.2)."),
    )


STAGE_EPOCH_OPTIONS = (
    "baseline_num_train_epochs", "expert_num_train_epochs", "router_num_train_epochs", "i2moe_num_train_epochs",
)
METHOD_EPOCH_OPTIONS = {
    "mmoe": ("baseline_num_train_epochs", "expert_num_train_epochs", "router_num_train_epochs"),
    "i2moe": ("baseline_num_train_epochs", "i2moe_num_train_epochs"),
}
"""The stages each method runs: only their epochs can stand in for ``--num_train_epochs``."""


def recipe_problems(args: Any) -> list[str]:
    """Every check of :class:`~mmoe.training.arguments.MMoETrainingArguments` that needs no file system."""
    return input_option_problems(args) + training_argument_problems(args)


def training_argument_problems(args: Any) -> list[str]:
    """Ranges and choices of the training options and whether any training can happen (no file system access)."""
    problems = _collect(
        number_problem("learning_rate", args.learning_rate, gt=0),
        number_problem("router_learning_rate", args.router_learning_rate, gt=0),
        number_problem("min_expert_examples", args.min_expert_examples, ge=0, integer=True),
        number_problem("expert_min_steps", args.expert_min_steps, ge=0, integer=True),
        number_problem("per_device_train_batch_size", args.per_device_train_batch_size, ge=1, integer=True),
        number_problem("per_device_eval_batch_size", args.per_device_eval_batch_size, ge=1, integer=True),
        number_problem("gradient_accumulation_steps", args.gradient_accumulation_steps, ge=1, integer=True),
        number_problem("seed", args.seed, ge=0, le=MAX_SEED, integer=True),
        number_problem("data_seed", args.data_seed, ge=0, le=MAX_SEED, integer=True, optional=True),
        number_problem("max_steps", args.max_steps, integer=True),
        number_problem("num_train_epochs", args.num_train_epochs),
        choice_problem("selection_metric", args.selection_metric, SELECTION_METRICS),
    )
    for seed in args.seeds or []:
        problems += _collect(number_problem("seeds", seed, ge=0, le=MAX_SEED, integer=True))
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        problems.append(f"--seeds lists a seed twice ({args.seeds}); each seed gets its own seed-<n> folder.")
    for option in STAGE_EPOCH_OPTIONS:
        problems += _collect(
            number_problem(option, getattr(args, option), gt=0, optional=True,
                           hint="Leave it out to use --num_train_epochs.")
        )
    steps_ok = isinstance(args.max_steps, int) and args.max_steps > 0
    epochs_ok = isinstance(args.num_train_epochs, (int, float)) and args.num_train_epochs > 0
    if not steps_ok and not epochs_ok:
        falling_back = [option for option in METHOD_EPOCH_OPTIONS.get(args.method, STAGE_EPOCH_OPTIONS)
                        if getattr(args, option) is None]
        if falling_back:
            problems.append(
                f"Nothing would be trained: --num_train_epochs is {args.num_train_epochs} and --max_steps is "
                f"{args.max_steps}. Set --num_train_epochs > 0 (e.g. 3) or --max_steps > 0 (e.g. 100); stages "
                f"without their own epochs use --num_train_epochs ({', '.join('--' + o for o in falling_back)} "
                "not set)."
            )
    if args.push_to_hub and not args.hub_model_id:
        problems.append(
            "--push_to_hub needs --hub_model_id <org/name> (the repository to create or update); add it, or drop "
            "--push_to_hub and publish later with `mmoe-card --output_dir <folder> --push_to_hub --hub_model_id ...`."
        )
    problems += _collect(hub_id_problem("hub_model_id", args.hub_model_id))
    return problems


# ------------------------------------------------------------------------------------------- Trainer flags
_NO_CHECKPOINTS = ("stages keep their best epoch in memory and write only their adapters and records, never "
                   "Trainer checkpoints; a finished stage is resumed from its records (rerun with the same "
                   "--output_dir)")
_SELECTION = "stages select their best epoch themselves, by --selection_metric; use --selection_metric instead"
_OWN_METRICS = "each stage scores its validation predictions with mmoe's own metrics (--selection_metric)"

UNSUPPORTED_TRAINER_FLAGS: dict[str, str] = {
    "save_strategy": _NO_CHECKPOINTS + "; leave --save_strategy at no.",
    "save_steps": _NO_CHECKPOINTS + ".",
    "save_total_limit": _NO_CHECKPOINTS + ".",
    "save_only_model": _NO_CHECKPOINTS + ".",
    "save_on_each_node": _NO_CHECKPOINTS + ".",
    "enable_jit_checkpoint": _NO_CHECKPOINTS + ".",
    "resume_from_checkpoint": "there are no Trainer checkpoints to resume from; rerun with the same --output_dir: "
                              "finished stages are skipped (--overwrite_output_dir redoes them).",
    "ignore_data_skip": "it applies only when resuming from a checkpoint; rerun with the same --output_dir instead "
                        "(finished stages are skipped).",
    "restore_callback_states_from_checkpoint": "it applies only when resuming from a checkpoint; rerun with the "
                                               "same --output_dir instead (finished stages are skipped).",
    "load_best_model_at_end": _SELECTION + " (the best epoch is always restored).",
    "metric_for_best_model": _SELECTION + ".",
    "greater_is_better": _SELECTION + " (every selection metric is maximised).",
    "eval_strategy": "stages evaluate every epoch to select their best epoch; leave --eval_strategy at epoch.",
    "eval_steps": "stages evaluate once per epoch to select their best epoch (--eval_strategy epoch).",
    "label_names": "each stage names its own label field (labels, or interaction_labels for the router).",
    "label_smoothing_factor": "the stages compute their own losses (the router's objective, I2MoE's interaction "
                              "losses); the Trainer's label smoothing would replace them.",
    "prediction_loss_only": _OWN_METRICS + ", which needs the predictions.",
    "include_for_metrics": _OWN_METRICS + ", which read predictions and labels only.",
    "batch_eval_metrics": _OWN_METRICS + " over the whole split, not batch by batch.",
    "eval_do_concat_batches": _OWN_METRICS + " over the concatenated predictions.",
    "hub_strategy": "only the finished output folder is pushed (--push_to_hub), once, after the last stage; "
                    "stages push nothing.",
    "hub_always_push": "only the finished output folder is pushed (--push_to_hub), once, after the last stage.",
    "hub_revision": "--push_to_hub pushes to the main branch; to push to a branch, publish the finished folder "
                    "with `mmoe-card --output_dir <folder> --push_to_hub --hub_model_id ... --hub_revision ...`.",
}
"""``TrainingArguments`` fields that the recipe overrides or cannot honour, each with the reason: setting one away
from its default (``MMoETrainingArguments``' own default where it redeclares the field) is refused, never ignored."""

NOT_APPLICABLE_TRAINER_FIELDS: dict[str, str] = {
    "remove_unused_columns": "the collators read the raw rows, so every stage passes False; either value trains the "
                             "same.",
    "do_train": "bookkeeping of transformers' example scripts: mmoe-train always trains every stage.",
    "do_eval": "bookkeeping of transformers' example scripts: every stage is always evaluated on validation.",
    "do_predict": "bookkeeping of transformers' example scripts: the test split is always evaluated when present.",
    "local_rank": "set by the distributed launcher (torchrun, accelerate), not by the user.",
}
"""``TrainingArguments`` fields that do not apply to the recipe or are bookkeeping (accepted, with no effect)."""

HONOURED_TRAINER_FIELDS: tuple[str, ...] = (
    # where the run goes (each stage's Trainer logs under <output_dir>/runs/<stage>)
    "output_dir",
    # the optimisation, passed to every stage's Trainer (learning rate and epochs unless a stage has its own)
    "per_device_train_batch_size", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type",
    "lr_scheduler_kwargs", "warmup_steps", "optim", "optim_args", "optim_target_modules", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "gradient_accumulation_steps", "average_tokens_across_devices",
    "max_grad_norm", "auto_find_batch_size", "neftune_noise_alpha", "seed", "data_seed", "full_determinism",
    # precision, memory and kernels
    "bf16", "fp16", "bf16_full_eval", "fp16_full_eval", "tf32", "activation_checkpointing",
    "activation_checkpointing_kwargs", "gradient_checkpointing", "gradient_checkpointing_kwargs", "torch_compile",
    "torch_compile_backend", "torch_compile_mode", "use_liger_kernel", "liger_kernel_config", "use_cache",
    "torch_empty_cache_steps",
    # logging and reporting (the run name gets the stage's name appended)
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter",
    "include_num_input_tokens_seen", "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name",
    "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "skip_memory_metrics", "debug",
    # evaluation (every epoch; these say how)
    "per_device_eval_batch_size", "eval_delay", "eval_on_start", "eval_use_gather_object", "eval_accumulation_steps",
    # the Hub: the finished output folder is pushed once, after the last stage
    "push_to_hub", "hub_token", "hub_private_repo", "hub_model_id",
    # devices, data loading, distribution
    "use_cpu", "accelerator_config", "parallelism_config", "dataloader_drop_last", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "dataloader_in_order", "train_sampling_strategy", "length_column_name",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph", "ddp_backend",
    "ddp_timeout", "fsdp", "fsdp_config", "deepspeed",
)
"""``TrainingArguments`` fields that reach every stage's ``Trainer`` as the user set them (``stage_arguments``)."""


def _plain_value(value: Any) -> Any:
    """``IntervalStrategy.EPOCH`` -> ``"epoch"``: ``TrainingArguments.__post_init__`` turns some strings into enums."""
    import enum

    return value.value if isinstance(value, enum.Enum) else value


def trainer_field_default(args: Any, name: str) -> Any:
    """The dataclass default of field ``name`` of ``args``' class (``MMoETrainingArguments`` redeclares a few)."""
    import dataclasses

    spec = type(args).__dataclass_fields__[name]
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return spec.default_factory()  # type: ignore[misc]
    return None


def unsupported_trainer_flag_problems(args: Any) -> list[str]:
    """One problem per :data:`UNSUPPORTED_TRAINER_FLAGS` field set away from its default, with the reason.

    Not part of :func:`training_argument_problems` (run by ``MMoETrainingArguments.__post_init__``): each stage's own
    copy of the arguments (``stage_arguments``) sets ``label_names`` and ``eval_strategy`` itself."""
    problems = []
    for name, reason in UNSUPPORTED_TRAINER_FLAGS.items():
        if name not in getattr(type(args), "__dataclass_fields__", {}):
            continue  # a transformers version without the field
        value, default = _plain_value(getattr(args, name)), _plain_value(trainer_field_default(args, name))
        if value == default or (not value and not default and value is not False and default is not False):
            continue  # None / [] / "" are the same "not set"
        problems.append(f"--{name} {_flag_text(value)} is not supported by mmoe-train: {reason}")
    return problems


def _flag_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(_plain_value(item)) for item in value)
    return str(_plain_value(value))


# ------------------------------------------------------------------------------------------- file system
def hub_id_problem(option: str, repo_id: str | None) -> str | None:
    """A message when ``repo_id`` (given) is not a valid Hub repository id."""
    if not repo_id:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        return f"--{option} {repo_id!r} is not a valid Hub repository id ('org/name'): {error}"
    return None


def looks_like_path(value: str) -> bool:
    """Whether ``value`` is meant as a file system path rather than a Hub id: it starts with ``.``, ``/``,
    ``~`` or a drive letter, uses backslashes, or has more than one path separator (Hub ids have at most one)."""
    if value.startswith((".", "/", "~", "\\")) or (len(value) > 1 and value[1] == ":"):
        return True
    separators = [sep for sep in (os.sep, os.altsep, "\\") if sep]
    return value.count("/") > 1 or any(sep != "/" and sep in value for sep in separators)


def backbone_problem(option: str, value: str | None) -> str | None:
    """A message when ``--backbone``-like ``value`` can be neither a local model folder nor fetched from the Hub."""
    if value is None or value in TINY_BACKBONES or value == DEFAULT_BACKBONE:
        return None
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            return f"--{option} {value} is a file; pass the folder a model was saved to (with save_pretrained)."
        if not (path / "config.json").is_file():
            return (
                f"--{option} {value} has no config.json; pass the folder a model was saved to (with "
                "save_pretrained), not a parent folder or a checkpoint of another format."
            )
        return None
    if looks_like_path(value):
        return (
            f"backbone folder not found: {value} (--{option}). Check the path (relative to "
            f"{Path.cwd()}), or pass a Hub id such as {DEFAULT_BACKBONE} or one of {', '.join(TINY_BACKBONES)}."
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as error:
        return (
            f"--{option} {value!r} is neither an existing folder, one of {', '.join(TINY_BACKBONES)} nor a valid "
            f"Hub id ('org/name'): {error}"
        )
    return _offline_problem(option, value)


def _offline_problem(option: str, repo_id: str) -> str | None:
    """With ``HF_HUB_OFFLINE=1`` a Hub id must already be in the local cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return None
    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return None
    return (
        f"--{option} {repo_id!r} is not in the local Hub cache and HF_HUB_OFFLINE is set; download it first "
        "(unset HF_HUB_OFFLINE) or pass a local folder."
    )


def output_dir_problem(output_dir: str | None, option: str = "output_dir") -> str | None:
    """A message when ``output_dir`` is a file, or a folder that cannot be written or created. Creates nothing."""
    if not output_dir:
        return f"--{option} must name a folder."
    path = Path(output_dir)
    if path.exists():
        if not path.is_dir():
            return (
                f"--{option} {output_dir} is an existing file, not a folder; pass a folder path (it is created "
                "when missing). The file was left untouched."
            )
        if not os.access(path, os.W_OK | os.X_OK):
            return f"--{option} {output_dir} is not writable; pick another folder or fix its permissions."
        return None
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"--{option} {output_dir} cannot be created: {parent} is a file, not a folder."
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--{option} {output_dir} cannot be created: {parent} is not writable; pick another folder."
    return None


def dataset_problems(args: Any) -> list[str]:
    """``--dataset`` is built in or a saved ``DatasetDict`` folder; ``--data_dir`` exists (and holds MUStARD); or
    the data files exist in a supported format, a ``--dataset_name`` path exists, ``--image_root`` is a folder."""
    problems = []
    if dataset_type_problem(args.dataset):
        return problems  # reported by data_source_problems; a dataset object is no path to look at
    if getattr(args, "dataset_name", None) or data_files_of(args):
        problems += _dataset_name_problems(args) + _data_file_problems(args)
        hub_id = "/" in (args.dataset_name or "") and not Path(args.dataset_name).expanduser().exists()
        if args.data_dir is not None and not hub_id and not Path(args.data_dir).is_dir():  # a Hub id's is remote
            problems.append(f"--data_dir {args.data_dir} is not an existing folder; check the path.")
        return problems
    problems += _dataset_name_problems(args)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        problems.append(f"--data_dir {args.data_dir} is not an existing folder; check the path.")
    if args.dataset == "mustard":
        if not args.data_dir:
            problems.append(
                "--dataset mustard needs --data_dir <folder with mustard_train.json, mustard_validation.json, "
                "image_captions_cogvlm2.jsonl and the unimodal prediction files>."
            )
        elif Path(args.data_dir).is_dir():
            from ..data import mustard

            required = [name for split, name in mustard.SPLIT_FILES.items() if split not in mustard.OPTIONAL_SPLITS]
            required += [mustard.CAPTIONS_FILE, mustard.TEXT_PREDICTIONS_FILE, mustard.VISION_PREDICTIONS_FILE]
            missing = [name for name in required if not (Path(args.data_dir) / name).is_file()]
            if missing:
                problems.append(f"--data_dir {args.data_dir} lacks the MUStARD file(s) {missing}.")
    elif args.dataset not in BUILTIN_DATASETS:
        folder = Path(args.dataset)
        if not folder.is_dir():
            problems.append(
                f"--dataset {args.dataset!r} is neither 'synthetic', 'mustard' nor an existing folder written by "
                "DatasetDict.save_to_disk; check the path."
            )
        elif not (folder / "dataset_dict.json").is_file():
            problems.append(
                f"--dataset {args.dataset} is a folder without dataset_dict.json; save a DatasetDict with "
                "train/validation(/test) splits there with DatasetDict.save_to_disk."
            )
    return problems


# ------------------------------------------------------------------------------------------- precision
def training_on_cpu(training_args: Any) -> bool:
    """Whether the stages will train on the CPU: ``--use_cpu``, or no accelerator that the Trainer would pick."""
    if getattr(training_args, "use_cpu", False):
        return True
    import torch

    accelerators = (torch.cuda.is_available(),
                    getattr(getattr(torch, "xpu", None), "is_available", lambda: False)(),
                    getattr(getattr(torch.backends, "mps", None), "is_available", lambda: False)())
    return not any(accelerators)


def precision_problems(model_args: Any, training_args: Any) -> list[str]:
    """Precision options that cannot train on this machine. Probed on a CPU (torch 2.13): float32, bfloat16 and
    float16 backbones train in float32, under ``--bf16`` (a bfloat16 or float32 backbone) and under ``--fp16``;
    ``--bf16`` over a float16 backbone fails in the first forward pass (``RuntimeError: mixed dtype (CPU)``)."""
    bf16 = bool(getattr(training_args, "bf16", False))
    dtype = getattr(model_args, "backbone_dtype", None)
    if bf16 and dtype == "float16" and training_on_cpu(training_args):
        return [
            "--bf16 with --backbone_dtype float16 cannot train on the CPU (bfloat16 autocast over float16 weights "
            "fails with 'mixed dtype (CPU)'); float16 backbones need a GPU. On the CPU use --backbone_dtype "
            "bfloat16 --bf16, or a float32 backbone (--backbone_dtype float32, or leave it out) with or without --bf16."
        ]
    return []


def training_arguments_error_message(error: Exception) -> str:
    """``TrainingArguments``' own refusal (raised while it is built) as a one-line mmoe-train problem."""
    message = " ".join(str(error).split())
    if message.startswith("--load_best_model_at_end"):  # transformers refuses it first (save/eval strategies differ)
        reason = UNSUPPORTED_TRAINER_FLAGS["load_best_model_at_end"]
        return f"--load_best_model_at_end is not supported by mmoe-train: {reason}"
    if "bf16" in message and "use_cpu" in message:
        return (
            "--bf16 needs a GPU with bfloat16 support, and none was found; to train in bfloat16 on the CPU add "
            "--use_cpu (with --backbone_dtype bfloat16 or float32), or drop --bf16."
        )
    if "fp16" in message and ("gpu" in message.lower() or "device" in message.lower()):
        return (
            f"--fp16 cannot be used on this machine ({message}); drop --fp16, or on the CPU use --use_cpu --bf16 "
            "--backbone_dtype bfloat16."
        )
    return message


# ------------------------------------------------------------------------------------------- the Hub
HUB_CHECK_TIMEOUT = 20.0
"""Seconds that :func:`hub_access_problem` waits for the Hub to answer."""


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")


def hub_access_problem(training_args: Any, timeout: float | None = None) -> str | None:
    """With ``--push_to_hub``: the Hub answers and the token is accepted (``HfApi.whoami``, at most ``timeout``
    seconds), checked before any training rather than after it. ``HF_HUB_OFFLINE=1`` is refused at once."""
    if not getattr(training_args, "push_to_hub", False) or not getattr(training_args, "hub_model_id", None):
        return None
    later = ("or drop --push_to_hub and publish the finished folder later with `mmoe-card --output_dir <folder> "
             "--push_to_hub --hub_model_id ...`.")
    if hub_offline():
        return f"--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset HF_HUB_OFFLINE, {later}"
    import concurrent.futures

    from huggingface_hub import HfApi

    token = getattr(training_args, "hub_token", None)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(HfApi(token=token).whoami).result(timeout=HUB_CHECK_TIMEOUT if timeout is None else timeout)
    except concurrent.futures.TimeoutError:
        return (f"--push_to_hub: the Hub did not answer within {HUB_CHECK_TIMEOUT if timeout is None else timeout:g} "
                f"s; check the network, {later}")
    except Exception as error:  # network errors, an invalid or missing token
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        return (f"--push_to_hub: cannot reach the Hub or log in to it ({type(error).__name__}: {reason}); check the "
                f"network and the token (`hf auth login`, or --hub_token), {later}")
    finally:
        pool.shutdown(wait=False)
    return None


def check_arguments(model_args: Any, data_args: Any | None, training_args: Any, template: str | None = None) -> None:
    """Raise :class:`ArgumentsError` listing every invalid option; touch nothing on disk or on the Hub.

    ``data_args`` (the CLI's data source) may be ``None`` when the datasets are given as objects; ``template`` is the
    resolved text template (default: ``training_args.text_template``, else the data source's default)."""
    from ..data.collators import resolve_text_template

    problems = model_argument_problems(model_args) + recipe_problems(training_args)
    problems += unsupported_trainer_flag_problems(training_args)
    problems += _collect(
        output_dir_problem(training_args.output_dir),
        backbone_problem("backbone", model_args.backbone),
        backbone_problem("unimodal_backbone", training_args.unimodal_backbone),
    )
    problems += precision_problems(model_args, training_args)
    if data_args is not None:
        problems += data_source_problems(data_args) + dataset_problems(data_args)
    # the built-in datasets imply a template; data loaded with load_dataset (--dataset_name, files) does not
    loaded = data_args is not None and any(
        getattr(data_args, name, None) for name in ("dataset_name", "train_file", "validation_file", "test_file"))
    dataset_name = data_args.dataset if data_args is not None and not loaded else ""
    problems += modality_template_problems(
        training_args, template or resolve_text_template(dataset_name, training_args.text_template)
    )
    raise_if_problems(sorted(set(problems), key=problems.index))


__all__ = [
    "ArgumentsError",
    "HONOURED_TRAINER_FIELDS",
    "NOT_APPLICABLE_TRAINER_FIELDS",
    "UNSUPPORTED_TRAINER_FLAGS",
    "TINY_BACKBONES",
    "backbone_problem",
    "check_arguments",
    "data_source_problems",
    "recipe_problems",
    "dataset_problems",
    "hub_access_problem",
    "looks_like_path",
    "model_argument_problems",
    "number_problem",
    "output_dir_problem",
    "precision_problems",
    "training_argument_problems",
    "unsupported_trainer_flag_problems",
]
