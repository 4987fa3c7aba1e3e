"""What MMoE needs to know about a backbone: its width, how to pool it, where LoRA goes.

Imports only ``torch``, ``transformers`` and ``peft`` (uploaded to the Hub next to ``modeling_mmoe.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import PreTrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES,
)

_HIDDEN_SIZE_FIELDS = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")

# Families whose LoRA targets peft does not list, or lists for a different module layout.
_EXTRA_LORA_TARGETS = {"vilt": ["query", "value"]}

# Vision-side LoRA targets of multimodal LLMs (``default_lora_target_modules(..., include_vision=True)``):
# attention of the vision tower (CLIP/SigLIP ``q_proj``/``v_proj``, BLIP ``qkv``), BLIP-2's Q-Former
# ``query``/``value`` and the vision-to-language projector.
_VISION_TOWER_PATTERN = r".*(vision_tower|vision_model)\..*\.(q_proj|v_proj|qkv)"
_VISION_BRIDGE_PATTERN = r".*(qformer\..*\.(query|value)|multi_modal_projector\.linear_[12]|language_projection)"

# Backbones whose ``AutoModel`` returns the language model's *causal-LM* output (logits, no
# ``last_hidden_state``): MMoE asks them for ``output_hidden_states`` and pools the last layer's states.
LANGUAGE_MODEL_HIDDEN_STATES_TYPES = ("blip-2",)


def is_multimodal_llm(config: PreTrainedConfig) -> bool:
    """True for LLaVA/BLIP-2-style models: a vision tower feeding a language model (``text_config``)."""
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES and hasattr(config, "text_config")


def is_vision_language(config: PreTrainedConfig) -> bool:
    """True for backbones that take images: multimodal LLMs, fusion VLMs such as ViLT, anything with a
    ``vision_config``. Text backbones (BERT, Qwen2, Llama, ...) return False."""
    return (
        is_multimodal_llm(config)
        or config.model_type in MODEL_FOR_VISUAL_QUESTION_ANSWERING_MAPPING_NAMES
        or getattr(config, "vision_config", None) is not None
    )


def needs_language_model_hidden_states(config: PreTrainedConfig) -> bool:
    """True when the backbone's ``AutoModel`` output carries the states only in
    ``language_model_outputs.hidden_states`` (BLIP-2's ``Blip2Model``)."""
    return config.model_type in LANGUAGE_MODEL_HIDDEN_STATES_TYPES


def takes_inputs_embeds(backbone: Any) -> bool:
    """Whether a backbone's ``forward`` accepts ``inputs_embeds`` (I2MoE masks text modalities there; BLIP-2's
    ``Blip2Model`` takes ``input_ids`` only). ``backbone``: a model, a model class, or a config (its ``AutoModel``
    class; ``True`` for a config ``AutoModel`` does not know)."""
    if isinstance(backbone, PreTrainedConfig):
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        try:
            backbone = MODEL_MAPPING[type(backbone)]
        except KeyError:
            return True
    return "inputs_embeds" in inspect.signature(backbone.forward).parameters


def is_decoder_only(config: PreTrainedConfig) -> bool:
    """True when the backbone reads left to right, so its summary of a sequence sits at the last token."""
    if is_multimodal_llm(config):
        return True
    model_type = config.model_type
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def resolve_pooling(pooling: str, config: PreTrainedConfig) -> str:
    """Turn ``"auto"`` into ``"last"`` for decoders and ``"first"`` for everything else."""
    if pooling != "auto":
        return pooling
    return "last" if is_decoder_only(config) else "first"


def resolve_hidden_size(config: PreTrainedConfig, override: int | None = None) -> int:
    """Width of the backbone's ``last_hidden_state``.

    Multimodal LLMs return the language model's states, so their ``text_config`` is searched first.

    Raises:
        ValueError: when no standard field names it; the message says to set ``backbone_hidden_size``.
    """
    if override:
        return int(override)
    candidates = []
    if hasattr(config, "text_config") and config.text_config is not None:
        candidates.append(config.text_config)
    candidates.append(config)
    for candidate in candidates:
        for field in _HIDDEN_SIZE_FIELDS:
            value = getattr(candidate, field, None)
            if isinstance(value, int) and value > 0:
                return value
    raise ValueError(
        f"MMoE cannot find the hidden size of backbone type {config.model_type!r} (looked for "
        f"{list(_HIDDEN_SIZE_FIELDS)} in its config). Pass `backbone_hidden_size=<width of last_hidden_state>` "
        "to MMoEConfig / from_backbone."
    )


def default_lora_target_modules(config: PreTrainedConfig, include_vision: bool = False) -> list[str] | str:
    """LoRA target modules for a backbone family.

    Text backbones use peft's table (e.g. BERT ``query``/``value``, Qwen2/Llama ``q_proj``/``v_proj``).
    ViLT (one transformer over text tokens and image patches) adapts ``query``/``value`` of every layer,
    so both modalities pass through the adapters. Multimodal LLMs (LLaVA, BLIP-2) adapt only the language
    model's attention by default (a regex), leaving the vision tower frozen; ``include_vision=True`` returns a
    regex that also adapts the vision tower's attention, BLIP-2's Q-Former and the projector. Pass the result
    (or your own list) as ``MMoEConfig(lora_target_modules=...)``. Unknown families fall back to
    ``"all-linear"``.
    """
    model_type = config.model_type
    if is_multimodal_llm(config):
        text_type = config.text_config.model_type
        names = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(text_type, ["q_proj", "v_proj"])
        language = rf".*language_model.*\.({'|'.join(names)})"
        if include_vision:
            return f"{language}|{_VISION_TOWER_PATTERN}|{_VISION_BRIDGE_PATTERN}"
        return language
    if model_type in _EXTRA_LORA_TARGETS:
        return list(_EXTRA_LORA_TARGETS[model_type])
    if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])
    return "all-linear"


def pool_hidden_states(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str
) -> torch.Tensor:
    """Summarise a sequence into one vector.

    Args:
        hidden_states: ``[B, T, H]``.
        attention_mask: ``[B, T]`` (1 = real token) or ``None``. Left or right padding both work.
        pooling: ``"first"``, ``"last"`` (last non-padding token) or ``"mean"`` (over non-padding tokens).

    Returns:
        ``[B, H]``.
    """
    if pooling == "first":
        return hidden_states[:, 0]
    if attention_mask is None:
        return hidden_states[:, -1] if pooling == "last" else hidden_states.mean(dim=1)
    if attention_mask.shape[:2] != hidden_states.shape[:2]:
        raise ValueError(
            f"MMoE pooling: attention_mask has shape {list(attention_mask.shape)} but the backbone returned "
            f"{hidden_states.shape[1]} positions; the backbone changes the sequence length (e.g. image tokens are "
            "inserted inside the model), so set pooling='first' or pass a mask that matches its output."
        )
    mask = attention_mask.to(hidden_states.dtype)
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device, dtype=mask.dtype)
        last = (mask * (positions + 1)).argmax(dim=1)
        return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]
    if pooling == "mean":
        return (hidden_states * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    raise ValueError(f"MMoE pooling: unknown pooling {pooling!r}; use 'first', 'last' or 'mean'.")
