"""I2MoE (Xin et al., ICML 2025): ``n + 2`` interaction experts as LoRA adapters on one backbone, trained end to end.

This file is uploaded to the Hub as remote code: it imports only ``torch``, ``transformers``, ``peft`` (through its
siblings) and sibling modules by relative import.

I2MoE's own code deep-copies a fusion model per expert; here every expert is a LoRA adapter (with its own head) on
the shared backbone of :class:`~.modeling_mmoe.MMoEModel`:

- **experts**: ``uniqueness_<modality>`` for each of the ``n`` modalities, ``synergy`` and ``redundancy``;
- **modalities** are sets of input positions marked by ``modality_ids`` ``[B, T]`` (``-1``: no modality, such as
  special tokens, separators and padding); the modality named ``"image"`` is a vision-language backbone's image;
- **masking** a modality replaces its input embeddings with ``torch.randn_like`` vectors, as I2MoE does; the image of
  a vision-language backbone is masked at its pixels (``pixel_values`` replaced by standard-normal noise), because
  its features are computed inside the backbone from the pixels (LLaVA overwrites the placeholder embeddings with
  them, and finds the placeholders by comparing embeddings, so noise there would never reach the language model);
  a multimodal LLM's expanded image tokens carry the image's index in ``modality_ids`` (pooled for the reweighting
  model, left untouched by text masking). Text is masked through ``inputs_embeds``: a backbone without that input
  (BLIP-2's ``Blip2Model``) is refused unless ``interaction_loss_weight`` is 0;
- **reweighting** (``config.reweighting="mlp"``): an MLP over the per-modality mean-pooled last hidden states of the
  adapter-free backbone pass ``[B, n * H]`` gives scores ``[B, E]``; the weights are ``softmax(scores / T)`` and the
  prediction is the softmax of the weighted sum of the experts' logits (I2MoE sums logits, not probabilities;
  ``logits`` are the log of that prediction);
- **interaction losses** (training, ``interaction_loss_weight > 0``): every expert also runs on the ``n`` inputs with
  one modality masked, and :func:`~.losses.uniqueness_loss`, :func:`~.losses.synergy_loss` and
  :func:`~.losses.redundancy_loss` compare its outputs; ``loss = CE + lambda * mean of the n + 2 losses``.

One training step is one backbone call of ``(n + 2)(n + 1) + 1`` groups of ``B`` rows through the fused LoRA layers
(:mod:`.fused_lora`): the full and masked inputs of every expert, and the adapter-free pass for the reweighting model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from .backbone_utils import takes_inputs_embeds
from .configuration_mmoe import IMAGE_MODALITY, I2MoEConfig
from .losses import redundancy_loss, synergy_loss, uniqueness_loss
from .modeling_mmoe import MixtureModel, MixturePreTrainedModel, MMoEClassificationHead, MMoEExpertHeadsMixin


@dataclass
class I2MoESequenceClassifierOutput(ModelOutput):
    """Output of :class:`I2MoEForSequenceClassification` (``B`` examples, ``E = n + 2`` experts, ``C`` classes).

    Args:
        loss: scalar, when ``labels`` are given: cross-entropy of ``logits`` plus, in training,
            ``interaction_loss_weight * interaction_loss``.
        logits: ``[B, C]`` log class probabilities of the prediction (as for every model of this package):
            ``log_softmax`` of the weighted sum of the experts' logits (I2MoE fuses logits, not probabilities).
        expert_logits: ``[B, E, C]`` every expert's logits on the full input.
        expert_weights: ``[B, E]`` the reweighting model's per-sample expert weights; rows sum to 1. The
            interpretation: how much each interaction expert decides each prediction.
        interaction_loss: scalar, the mean of ``interaction_losses`` (training with ``interaction_loss_weight > 0``).
        interaction_losses: ``[E]`` each expert's interaction loss, in the order of the experts.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    expert_logits: torch.Tensor | None = None
    expert_weights: torch.Tensor | None = None
    interaction_loss: torch.Tensor | None = None
    interaction_losses: torch.Tensor | None = None


class I2MoEReweighting(nn.Module):
    """I2MoE's reweighting model: per-modality features ``[B, n * H]`` -> expert scores ``[B, E]``.

    ``kind="mlp"``: dropout, linear, ReLU, dropout, linear (I2MoE's two-layer MLP). ``kind="global"``: one learned score
    vector ``[E]`` for every sample (the fixed-weight ablation; ``features`` is ignored and may be ``None``).
    Casts its input to its own dtype (float32 next to a bf16/fp16 backbone).
    """

    def __init__(self, input_size: int, num_experts: int, hidden_size: int, dropout: float, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "global":
            self.scores = nn.Parameter(torch.zeros(num_experts))
        else:
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(input_size, hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, num_experts),
            )

    def forward(self, features: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if self.kind == "global":
            return self.scores.unsqueeze(0).expand(batch_size, -1)
        return self.net(features.to(self.net[-1].weight.dtype))


def text_masking_problem(backbone: Any, text_modalities: list[str], interaction_loss_weight: float) -> str | None:
    """Why I2MoE cannot mask ``text_modalities`` with random vectors on ``backbone`` (a model or its config), or
    ``None`` when it can: masking replaces input embeddings, so the backbone must take ``inputs_embeds``. Only
    asked for when the interaction loss is on (``interaction_loss_weight > 0``)."""
    if interaction_loss_weight <= 0 or not text_modalities or takes_inputs_embeds(backbone):
        return None
    model_type = getattr(getattr(backbone, "config", backbone), "model_type", type(backbone).__name__)
    return (
        f"Backbone {model_type!r} takes no `inputs_embeds`, so I2MoE cannot mask its text modalities "
        f"{text_modalities} with random vectors (BLIP-2's Blip2Model embeds `input_ids` itself). Use LLaVA, ViLT or "
        "a text backbone, or an interaction loss weight of 0 (no masked passes: `interaction_loss_weight=0`, "
        "`--interaction_loss_weight 0` in mmoe-train)."
    )


class I2MoEPreTrainedModel(MixturePreTrainedModel):
    """:class:`~.modeling_mmoe.MixturePreTrainedModel` for an :class:`I2MoEConfig`."""

    config_class = I2MoEConfig


class I2MoEModel(MixtureModel):
    """:class:`~.modeling_mmoe.MixtureModel` for an :class:`I2MoEConfig` (``AutoModel`` of an I2MoE checkpoint): the
    backbone with its ``n + 2`` expert adapters and the pooling; ``pooled_output`` is the adapter-free pass."""

    config_class = I2MoEConfig

    def __init__(self, config: I2MoEConfig, backbone: Any | None = None) -> None:
        config.validate_i2moe()
        super().__init__(config, backbone=backbone)


class I2MoEForSequenceClassification(MMoEExpertHeadsMixin, I2MoEPreTrainedModel):
    """I2MoE over one shared backbone: ``n + 2`` LoRA experts with heads, and a reweighting model.

    Attributes:
        mmoe: :class:`I2MoEModel`, the backbone with one LoRA adapter per expert.
        expert_heads: ``ModuleDict`` expert name -> :class:`~.modeling_mmoe.MMoEClassificationHead`.
        reweighting: :class:`I2MoEReweighting`.
        modalities: the ``n`` modality names (``config.modalities``); experts: ``uniqueness_<m>``..., synergy,
            redundancy.

    Every call needs ``modality_ids`` ``[B, T]`` (index into ``modalities`` per input position, ``-1`` elsewhere), as
    ``mmoe.data.modalities.ModalityCollator`` builds them. Every text modality must have at least one position in
    every row.

    Example::

        model = I2MoEForSequenceClassification.from_backbone(
            "sentence-transformers/all-MiniLM-L6-v2", num_labels=2, modalities=["caption", "text"])
        out = model(**batch)            # batch from ModalityCollator
        out.expert_weights              # [B, 4]: uniqueness_caption, uniqueness_text, synergy, redundancy
    """

    config_class = I2MoEConfig

    def __init__(self, config: I2MoEConfig, backbone: Any | None = None) -> None:
        super().__init__(config)
        self.mmoe = I2MoEModel(config, backbone=backbone)
        self.experts = list(config.experts)
        self.modalities = list(config.modalities)
        self.hidden_size = self.mmoe.hidden_size
        self.copy_backbone_support(self.mmoe)
        if IMAGE_MODALITY in self.modalities and not self.mmoe.takes_images:
            raise ValueError(
                f"I2MoE modality {IMAGE_MODALITY!r} is the image of a vision-language backbone, but backbone "
                f"{config.backbone_config.model_type!r} takes no images. In the image-captioned route the caption is "
                "a text modality: name it after its column (e.g. modalities=['caption', 'text'])."
            )
        problem = text_masking_problem(
            self.mmoe.backbone.get_base_model(), [self.modalities[i] for i in self._text_modalities],
            config.interaction_loss_weight,
        )
        if problem:
            raise ValueError(problem)
        self.expert_heads = nn.ModuleDict(
            {name: MMoEClassificationHead(self.hidden_size, config.num_labels, config.classifier_dropout)
             for name in self.experts}
        )
        self.reweighting = I2MoEReweighting(
            self.hidden_size * len(self.modalities), len(self.experts), config.reweighting_hidden_size,
            config.reweighting_dropout, config.reweighting,
        )
        for module in (self.expert_heads, self.reweighting):  # float32 next to a bf16/fp16 backbone, as in MMoE
            if any(param.dtype in (torch.float16, torch.bfloat16) for param in module.parameters()):
                module.float()
        self.post_init()
        self.train_mixture()

    def train_mixture(self) -> I2MoEForSequenceClassification:
        """Every adapter, head and the reweighting model trainable, the backbone frozen (I2MoE trains them jointly)."""
        self._set_trainable({
            name for name, _ in self.named_parameters()
            if ".lora_" in name or name.startswith(("expert_heads.", "reweighting."))
        })
        return self

    # ------------------------------------------------------------------ modalities
    @property
    def _text_modalities(self) -> list[int]:
        return [index for index, name in enumerate(self.modalities) if name != IMAGE_MODALITY]

    def _check_modality_ids(self, modality_ids: torch.Tensor | None, backbone_inputs: dict[str, Any],
                            batch_size: int) -> torch.Tensor:
        if modality_ids is None:
            raise ValueError(
                f"I2MoE needs `modality_ids` [B, T]: the modality ({self.modalities}) of each input position, -1 "
                "elsewhere. Build batches with mmoe.data.modalities.ModalityCollator."
            )
        reference = backbone_inputs.get("input_ids", backbone_inputs.get("inputs_embeds"))
        if reference is None or modality_ids.shape[:2] != reference.shape[:2]:
            raise ValueError(
                f"`modality_ids` must have the shape of `input_ids` [B, T]; got {list(modality_ids.shape)} for "
                f"{list(reference.shape[:2]) if reference is not None else 'no input_ids'}."
            )
        if modality_ids.numel() and (modality_ids.min() < -1 or modality_ids.max() >= len(self.modalities)):
            raise ValueError(
                f"`modality_ids` must hold -1 or modality indices in [0, {len(self.modalities)}) "
                f"({self.modalities}); got values from {int(modality_ids.min())} to {int(modality_ids.max())}."
            )
        for index in self._text_modalities:
            empty = (~(modality_ids == index).any(dim=1)).nonzero().flatten()
            if len(empty):
                raise ValueError(
                    f"Modality {self.modalities[index]!r} has no input position in row(s) {empty[:5].tolist()} of "
                    "this batch (empty, or truncated away): I2MoE cannot mask or pool it. Give every row some text "
                    "in that column, or raise max_length."
                )
        return modality_ids

    def _grouped_inputs(self, backbone_inputs: dict[str, Any], modality_ids: torch.Tensor, variants: list[int | None],
                        batch_size: int) -> dict[str, Any]:
        """The backbone inputs of ``len(variants)`` groups: group ``g`` is the batch with modality ``variants[g]``
        masked (``None``: the full input). Text modalities are masked in the input embeddings (``inputs_embeds``
        replaces ``input_ids`` when any group masks one), the image at ``pixel_values``."""
        grouped = self.mmoe.repeat_batch(backbone_inputs, batch_size, len(variants))
        image = self.modalities.index(IMAGE_MODALITY) if IMAGE_MODALITY in self.modalities else None
        if any(v is not None and v != image for v in variants):
            embeds = backbone_inputs.get("inputs_embeds")
            if embeds is None:
                embeds = self.get_input_embeddings()(backbone_inputs["input_ids"])
            parts = []
            for variant in variants:
                if variant is None or variant == image:
                    parts.append(embeds)
                else:
                    where = (modality_ids == variant).unsqueeze(-1)
                    parts.append(torch.where(where, torch.randn_like(embeds), embeds))
            grouped["inputs_embeds"] = torch.cat(parts, dim=0)
            grouped.pop("input_ids", None)
        if image is not None and image in variants:
            pixels = backbone_inputs.get("pixel_values")
            if pixels is None:
                raise ValueError(f"Masking modality {IMAGE_MODALITY!r} needs `pixel_values`.")
            grouped["pixel_values"] = torch.cat(
                [torch.randn_like(pixels) if variant == image else pixels for variant in variants], dim=0
            )
        return grouped

    def modality_features(self, hidden: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        """The reweighting model's input: the mean of ``hidden`` ``[B, T', H]`` over each modality's positions,
        concatenated ``[B, n * H]``. Positions beyond ``modality_ids`` (``T' > T``: a fusion VLM's image patches)
        belong to the image modality."""
        extra = hidden.shape[1] - modality_ids.shape[1]
        if extra > 0:
            fill = self.modalities.index(IMAGE_MODALITY) if IMAGE_MODALITY in self.modalities else -1
            modality_ids = torch.cat([modality_ids, modality_ids.new_full((modality_ids.shape[0], extra), fill)], 1)
        elif extra < 0:
            modality_ids = modality_ids[:, : hidden.shape[1]]
        features = []
        for index in range(len(self.modalities)):
            weights = (modality_ids == index).to(hidden.dtype).unsqueeze(-1)  # [B, T', 1]
            features.append((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))
        return torch.cat(features, dim=-1)

    # ------------------------------------------------------------------ forward
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
        modality_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **backbone_kwargs: Any,
    ) -> I2MoESequenceClassifierOutput | tuple[torch.Tensor, ...]:
        """Run every expert (and, in training, every expert on each one-modality-masked input) and reweight.

        Args:
            input_ids, attention_mask, token_type_ids, position_ids: ``[B, T]``; inputs_embeds ``[B, T, H]``.
            pixel_values, pixel_mask, image_sizes, **backbone_kwargs: passed to vision-language backbones.
            modality_ids: ``[B, T]`` modality index of each input position, ``-1`` elsewhere.
            labels: ``[B]`` class indices; adds ``loss``.
            return_dict: ``False`` returns ``output.to_tuple()``.

        Returns:
            :class:`I2MoESequenceClassifierOutput`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        backbone_inputs = self.mmoe.backbone_inputs({
            "input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
            "position_ids": position_ids, "inputs_embeds": inputs_embeds, "pixel_values": pixel_values,
            "pixel_mask": pixel_mask, "image_sizes": image_sizes, **backbone_kwargs,
        })
        batch_size = self.mmoe.batch_size(backbone_inputs)
        self._check_labels(labels, None, batch_size)
        modality_ids = self._check_modality_ids(modality_ids, backbone_inputs, batch_size)

        with_losses = self.training and self.config.interaction_loss_weight > 0
        variants: list[int | None] = [None] + (list(range(len(self.modalities))) if with_losses else [])
        with_base = self.config.reweighting == "mlp"
        group_experts: list[str | None] = [name for name in self.experts for _ in variants]
        group_variants = list(variants) * len(self.experts)
        if with_base:
            group_experts.append(None)
            group_variants.append(None)
        grouped = self._grouped_inputs(backbone_inputs, modality_ids, group_variants, batch_size)
        hidden = self.mmoe.run_groups(grouped, group_experts)  # [G * B, T', H]
        pooled = self.mmoe.pool(hidden, grouped.get("attention_mask"))
        pooled = pooled.view(len(group_experts), batch_size, -1)  # [G, B, H]

        per_expert = len(variants)
        outputs = [  # outputs[e][v]: expert e's logits [B, C] with variant v (0: full input)
            [self.expert_heads[name](pooled[e * per_expert + v]) for v in range(per_expert)]
            for e, name in enumerate(self.experts)
        ]
        expert_logits = torch.stack([out[0] for out in outputs], dim=1)  # [B, E, C]
        features = None
        if with_base:
            features = self.modality_features(hidden[-batch_size:], modality_ids)
        scores = self.reweighting(features, batch_size)
        expert_weights = (scores.float() / self.config.reweighting_temperature).softmax(-1)
        # I2MoE sums the experts' logits; `logits` are the log-probabilities of that sum, like every model's here.
        logits = nn.functional.log_softmax((expert_weights.unsqueeze(-1) * expert_logits.float()).sum(1), dim=-1)

        interaction_loss = interaction_losses = None
        if with_losses:
            interaction_losses = self.interaction_losses(outputs)
            interaction_loss = interaction_losses.mean()
        loss = None
        if labels is not None:
            loss = nn.functional.nll_loss(logits, labels.long())  # the cross-entropy of the weighted logits
            if interaction_loss is not None:
                loss = loss + self.config.interaction_loss_weight * interaction_loss
        output = I2MoESequenceClassifierOutput(
            loss=loss, logits=logits, expert_logits=expert_logits, expert_weights=expert_weights,
            interaction_loss=interaction_loss, interaction_losses=interaction_losses,
        )
        return output if return_dict else output.to_tuple()

    def interaction_losses(self, outputs: list[list[torch.Tensor]]) -> torch.Tensor:
        """``[E]`` I2MoE's interaction loss of each expert from ``outputs[e][v]`` (expert ``e``'s logits ``[B, C]``
        on the full input, ``v = 0``, and with modality ``v - 1`` masked)."""
        n = len(self.modalities)
        losses = [uniqueness_loss(outputs[i][0].float(), [o.float() for o in outputs[i][1:]], i) for i in range(n)]
        synergy, redundancy = outputs[n], outputs[n + 1]
        losses.append(synergy_loss(synergy[0].float(), [o.float() for o in synergy[1:]]))
        losses.append(redundancy_loss(redundancy[0].float(), [o.float() for o in redundancy[1:]]))
        return torch.stack(losses)

    @torch.no_grad()
    def explain(self, **batch: Any) -> dict[str, Any]:
        """Per-example explanation of a batch (the model is put in eval mode): which experts decided it.

        Returns:
            ``{"experts": names, "expert_weights": [B, E], "expert_probabilities": [B, E, C],
            "expert_predictions": [B, E], "probabilities": [B, C], "predictions": [B]}`` (tensors on CPU).
        """
        self.eval()
        batch = {k: v for k, v in batch.items() if k not in ("labels", "interaction_labels")}
        out = self(**batch, return_dict=True)
        expert_probabilities = out.expert_logits.float().softmax(-1)
        probabilities = out.logits.float().softmax(-1)
        return {
            "experts": list(self.experts),
            "expert_weights": out.expert_weights.cpu(),
            "expert_probabilities": expert_probabilities.cpu(),
            "expert_predictions": expert_probabilities.argmax(-1).cpu(),
            "probabilities": probabilities.cpu(),
            "predictions": probabilities.argmax(-1).cpu(),
        }


I2MoEModel.register_for_auto_class("AutoModel")
I2MoEForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
I2MoEConfig.register_for_auto_class()
