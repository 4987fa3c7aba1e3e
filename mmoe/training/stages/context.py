"""What the stages of one seed share: the options, the run folder, the backbone, the collators, the label set."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from transformers import AutoConfig, set_seed

from ...configuration_mmoe import DEFAULT_EXPERTS, I2MOE_OPTIONS, IMAGE_MODALITY, ROUTER_OPTIONS, SHARED_OPTIONS
from ...data.collators import MMoECollator
from ...data.modalities import (
    ModalityCollator,
    MultimodalModalityCollator,
    resolve_modalities,
    unimodal_views,
)
from ...data.multimodal_collator import MultimodalCollator, build_collator, load_processor
from ...modeling_i2moe import I2MoEForSequenceClassification, text_masking_problem
from ...modeling_mmoe import MMoEForSequenceClassification
from ...version import __version__
from ..arguments import MMoETrainingArguments, stage_options
from ..backbones import backbone_load_kwargs, resolve_backbone
from ..pipeline_data import num_labels_of
from ..records import STAGE_VERSIONS, folder_fingerprint, stage_fingerprint
from ..runtime import agree, is_main_process, main_process_first, training_device
from ..validation import TINY_BACKBONES, ArgumentsError

I2MOE = "i2moe"
_MMOE_FIELDS = frozenset(option.name for option in SHARED_OPTIONS + ROUTER_OPTIONS)
_I2MOE_FIELDS = frozenset(option.name for option in SHARED_OPTIONS + I2MOE_OPTIONS)


class StageContext:
    """Everything the stages of one seed share.

    Args:
        model_args: the backbone, how it loads, and the model options (``ModelArguments`` or any object with those
            attributes; :meth:`model_options` reads them).
        args: the recipe (:class:`~mmoe.training.arguments.MMoETrainingArguments`).
        run_dir: this seed's folder (``output_dir``, or ``output_dir/seed-<n>`` with several seeds).
        seed: this run's training seed.
        template: the resolved text template.
        data_fingerprint: the identity of the data (:func:`mmoe.training.records.dataset_fingerprint`).
    """

    def __init__(
        self,
        model_args: Any,
        args: MMoETrainingArguments,
        run_dir: Path,
        seed: int,
        template: str,
        data_fingerprint: str | None,
    ) -> None:
        self.model_args, self.args = model_args, args
        self.run_dir, self.seed = Path(run_dir), seed
        self.template, self.data_fingerprint = template, data_fingerprint
        self.overwrite = bool(args.overwrite_output_dir)
        self.callbacks: list[Any] = []  # the user's TrainerCallbacks, attached to every stage's Trainer
        self.device = training_device(args)  # sets up the process group under a launcher
        with main_process_first():  # a tiny backbone is written once, by the main process
            self.backbone = resolve_backbone(model_args.backbone, Path(args.output_dir))
        self.backbone_config = AutoConfig.from_pretrained(self.backbone)
        self.fingerprints: dict[str, str] = {}  # stage -> fingerprint of its inputs, filled as stages run
        self.processor = load_processor(self.backbone, self.backbone_config)
        self.experts = list(DEFAULT_EXPERTS)  # the interaction categories (and MMoE's experts)
        self.method = args.method
        try:
            self.modalities = resolve_modalities(self.method, template, args.image_column, args.modalities)
        except ValueError as error:
            raise ArgumentsError([str(error)]) from None
        self.unimodal_views = self._unimodal_views()
        self.num_labels: int = 0  # set from the data by run_categorize
        self.id2label: dict[int, str] | None = None
        self._check_inputs()

    def _unimodal_views(self) -> dict[str, str]:
        """The two modalities whose unimodal predictions categorize the data (both methods categorize, so that
        their reports share the per-interaction blocks and an I2MoE run reuses an MMoE run's categorization)."""
        modalities = self.modalities
        if self.method == I2MOE:
            try:
                modalities = resolve_modalities("mmoe", self.template, self.args.image_column)
            except ValueError:
                modalities = self.modalities[:2]
        return unimodal_views(modalities)

    def _check_inputs(self) -> None:
        """Fail now, not after categorization, when backbone, image column, modalities or length do not fit."""
        self.collator()
        if self.method == I2MOE:
            try:
                self.modality_collator()  # the processor must mark I2MoE's modality spans
            except ValueError as error:
                raise ArgumentsError([f"--method i2moe: {error}"]) from None
            problem = text_masking_problem(
                self.backbone_config, [name for name in self.modalities if name != IMAGE_MODALITY],
                self.model_args.interaction_loss_weight,
            )
            if problem:
                raise ArgumentsError([f"--method i2moe ({self.model_args.backbone}): {problem}"])
        positions = getattr(self.backbone_config, "max_position_embeddings", None)
        if isinstance(positions, int) and self.args.max_length > positions:
            raise ArgumentsError([
                f"--max_length {self.args.max_length} exceeds the {positions} positions of backbone "
                f"{self.model_args.backbone!r} (max_position_embeddings); use --max_length {positions} or less."
            ])

    # ------------------------------------------------------------------ batches
    def collator(self, interactions: bool = False) -> MMoECollator | MultimodalCollator:
        """Text backbones get the caption route's text collator, vision-language backbones the image one."""
        return build_collator(
            self.processor,
            self.backbone_config,
            image_column=self.args.image_column,
            text_template=self.template,
            max_length=self.args.max_length,
            label_column=self.args.label_column,
            interaction_column="interaction" if interactions else None,
            experts=self.experts,
        )

    def modality_collator(self, interactions: bool = False) -> ModalityCollator | MultimodalModalityCollator:
        """I2MoE's batches: :meth:`collator`'s plus ``modality_ids`` ``[B, T]`` for ``self.modalities``."""
        base = self.collator(interactions)
        fields = {field.name: getattr(base, field.name) for field in dataclasses.fields(base)}
        if isinstance(base, MultimodalCollator):
            return MultimodalModalityCollator(**fields, modalities=self.modalities)
        return ModalityCollator(**fields, modalities=self.modalities)

    def set_label_space(self, dataset: DatasetDict) -> None:
        """``num_labels`` (the option, or from the label column) and the class names of a ``ClassLabel``."""
        self.num_labels = num_labels_of(dataset, self.args.label_column, self.args.num_labels)
        names = getattr(dataset["train"].features.get(self.args.label_column), "names", None)
        self.id2label = dict(enumerate(names)) if names else None

    # ------------------------------------------------------------------ models
    def model_options(self) -> dict[str, Any]:
        """The config fields of every model of the run (:data:`mmoe.configuration_mmoe.MODEL_OPTIONS`)."""
        return self.model_args.config_options()

    def new_model(self, experts: list[str], with_router: bool = False) -> MMoEForSequenceClassification:
        """A fresh MMoE model with ``experts``, seeded. ``with_router=False`` (the baseline's and the experts' stages,
        which never run the router) leaves out the router's own adapter: building it draws random numbers, which
        would change the other layers' initialisation with ``router_input``, an option those stages do not
        depend on."""
        set_seed(self.seed)
        options = {k: v for k, v in self.model_options().items() if k in _MMOE_FIELDS}
        if options.get("router_input") == "adapter" and not with_router:
            options["router_input"] = "backbone"
        return MMoEForSequenceClassification.from_backbone(self.backbone, experts=experts, **options,
                                                           **self._label_kwargs())

    def new_i2moe_model(self) -> I2MoEForSequenceClassification:
        set_seed(self.seed)
        options = {k: v for k, v in self.model_options().items() if k in _I2MOE_FIELDS}
        return I2MoEForSequenceClassification.from_backbone(self.backbone, modalities=self.modalities, **options,
                                                            **self._label_kwargs())

    def _label_kwargs(self) -> dict[str, Any]:
        return {"num_labels": self.num_labels, "id2label": self.id2label,
                "backbone_kwargs": backbone_load_kwargs(self.model_args)}

    # ------------------------------------------------------------------ fingerprints
    def stage_inputs(self, stage: str, previous: str | None = None, **extra: Any) -> dict[str, Any]:
        """What ``stage`` depends on: its code version, the seed, the previous stage's fingerprint, the options whose
        ``stage`` metadata names it or every stage (recipe and model), the data, the content of the backbone when it
        is a folder (:func:`~mmoe.training.records.folder_fingerprint`; ``None`` for a Hub id) and ``extra``.

        Called by every process at the same point of each stage: the main process hashes (once per backbone, then
        from the cache) and shares the result."""
        inputs = {
            "stage": stage, "stage_version": STAGE_VERSIONS[stage], "mmoe_version": __version__, "seed": self.seed,
            "previous": self.fingerprints.get(previous) if previous else None,
            "training": stage_options(self.args, stage),
            # categorization trains unimodal predictors, not the mixture: of the model options only the backbone counts
            "model": ({"backbone": self.model_args.backbone} if stage == "categorize"
                      else stage_options(self.model_args, stage)),
            "template": self.template, "data": self.data_fingerprint, **extra,
        }
        inputs.update(agree(self._content_inputs(stage) if is_main_process() else None))
        self.fingerprints[stage] = stage_fingerprint(inputs)
        return inputs

    def _content_inputs(self, stage: str) -> dict[str, str | None]:
        """The content fingerprints of the backbone folder and, for categorization, of a ``--unimodal_backbone``
        folder (a tiny test backbone's name or a Hub id: ``None``)."""
        content = {"backbone_content": folder_fingerprint(self.backbone)}
        unimodal = self.args.unimodal_backbone
        if stage == "categorize" and unimodal:
            named_tiny = unimodal in TINY_BACKBONES and not Path(unimodal).exists()
            folder = None if named_tiny else resolve_backbone(unimodal, Path(self.args.output_dir))
            content["unimodal_backbone_content"] = folder_fingerprint(folder)
        return content
