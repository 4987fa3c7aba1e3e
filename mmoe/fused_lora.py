"""Fused expert passes: every expert's rows through each LoRA layer with one base matmul and one batched LoRA product.

MMoE runs the same input through ``E`` experts (one LoRA adapter each) and, for the router, through the bare
backbone. peft can run such a mixed batch (``adapter_names=``), but it loops over the adapters in Python inside
every layer, with a gather and two small matmuls per adapter. Here the batch is laid out in groups of equal size,
one per expert (and a last one without adapter), and every adapted ``Linear`` computes::

    result = base_layer(x)                                   # one GEMM over all (E [+1]) * B rows
    delta  = bmm(bmm(x_experts, A^T), B^T) * scaling         # A: [E, r, in], B: [E, out, r]: one batched product
    result[:E * B] += delta                                  # the adapter-free group keeps the base output

The adapters stay peft LoRA adapters: same modules, same weights, same save format; this module only reads their
``lora_A`` / ``lora_B`` weights. Gradients flow through ``torch.stack`` back to each expert's own weights, so the
path trains too. While no plan is set (``FusedPlan.experts is None``) a layer behaves exactly as peft's.

This file is uploaded to the Hub as remote code: it imports only ``torch`` and ``peft``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from torch import nn


class FusedPlan:
    """What the current forward pass runs: the experts, in group order, and whether a last, adapter-free group
    follows them. ``experts is None`` means "no fused pass in progress"."""

    def __init__(self) -> None:
        self.experts: tuple[str, ...] | None = None
        self.with_base = False


class FusedLoraLinear(LoraLinear):
    """A peft LoRA ``Linear`` that, while a :class:`FusedPlan` is set, applies every expert to its own group of
    rows in one batched product. The class is swapped in place (``module.__class__``), so the module keeps its
    parameters, its state-dict keys and everything peft knows about it."""

    _mmoe_plan: FusedPlan

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        plan = self._mmoe_plan
        if plan.experts is None or self.merged or self.disable_adapters:
            return super().forward(x, *args, **kwargs)
        experts = plan.experts
        num_experts = len(experts)
        rows = x.shape[0] // (num_experts + int(plan.with_base))  # rows per group
        result = self.base_layer(x, *args, **kwargs)
        lora_a = torch.stack([self.lora_A[name].weight for name in experts])  # [E, r, in]
        lora_b = torch.stack([self.lora_B[name].weight for name in experts])  # [E, out, r]
        adapted = x[: num_experts * rows]
        hidden = self.lora_dropout[experts[0]](adapted).to(lora_a.dtype)
        hidden = hidden.reshape(num_experts, -1, hidden.shape[-1])  # [E, rows * ..., in]
        delta = torch.bmm(torch.bmm(hidden, lora_a.transpose(1, 2)), lora_b.transpose(1, 2))  # [E, rows * ..., out]
        delta = (delta * self.scaling[experts[0]]).reshape(result[: num_experts * rows].shape).to(result.dtype)
        if not torch.is_grad_enabled():  # inference: add in place, no copy of the adapter-free group
            result[: num_experts * rows] += delta
            return result
        if plan.with_base:
            return torch.cat([result[: num_experts * rows] + delta, result[num_experts * rows:]], dim=0)
        return result + delta


def install_fused_lora(model: nn.Module, experts: Sequence[str]) -> FusedPlan | None:
    """Prepare every LoRA layer of ``model`` (a peft model holding ``experts``) for fused passes.

    Returns the shared :class:`FusedPlan`, or ``None`` when the model has LoRA layers the fused path does not cover
    (embedding or convolution LoRA, DoRA and other variants, experts with different ranks or scalings); callers
    then keep peft's own mixed batch.
    """
    lora_layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    if not lora_layers:
        return None
    for module in lora_layers:
        if type(module) not in (LoraLinear, FusedLoraLinear) or getattr(module, "lora_variant", None):
            return None
        if any(name not in module.lora_A for name in experts):
            return None
        if len({module.r[name] for name in experts}) != 1 or len({module.scaling[name] for name in experts}) != 1:
            return None
    plan = FusedPlan()
    for module in lora_layers:
        module.__class__ = FusedLoraLinear
        module._mmoe_plan = plan
    return plan
