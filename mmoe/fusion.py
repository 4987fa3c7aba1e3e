"""Fusion rules of MMoE as pure tensor functions.

Every rule turns per-expert logits ``[B, E, C]`` into **class probabilities** ``[B, C]`` (rows sum to 1),
following the paper (Yu et al., MMoE, section 3.3 and the ablations of table 4):

========== ==========================================================================================
``average``  mean over experts of ``softmax(f_i(x))``
``max``      ``softmax`` of the element-wise maximum over experts of the raw logits
``prior``    ``sum_i w_i softmax(f_i(x))`` with one fixed weight per expert (e.g. the training-set
             interaction frequencies), ``weights`` of shape ``[E]``
``router``   ``sum_i w_i(x) softmax(f_i(x))`` with per-example weights ``[B, E]`` from the router
``oracle``   ``softmax`` of the expert named by each example's gold interaction: ``weights`` is a
             ``LongTensor [B]`` of expert indices (or a one-hot ``[B, E]``)
========== ==========================================================================================

This module imports only ``torch`` and the names in :mod:`.configuration_mmoe` (where :data:`FUSION_METHODS` is
defined once): both are uploaded to the Hub next to ``modeling_mmoe.py``.
"""

from __future__ import annotations

import torch

from .configuration_mmoe import FUSION_METHODS

__all__ = ["FUSION_METHODS", "fuse"]


def _checking_values() -> bool:
    # Checks of tensor values are data-dependent branches, which `torch.compile(fullgraph=True)` cannot trace; a
    # compiled model's router weights are a softmax, valid by construction, so compiled code skips them.
    return not torch.compiler.is_compiling()


def _normalised(weights: torch.Tensor, what: str) -> torch.Tensor:
    if _checking_values() and (weights < 0).any():
        raise ValueError(f"fuse: {what} weights must be non-negative.")
    total = weights.sum(dim=-1, keepdim=True)
    if _checking_values() and (total <= 0).any():
        raise ValueError(f"fuse: {what} weights must not all be zero.")
    return weights / total


def fuse(expert_logits: torch.Tensor, method: str, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Fuse expert predictions into class probabilities.

    Args:
        expert_logits: ``[B, E, C]`` raw logits of each of the ``E`` experts.
        method: one of ``"average"``, ``"max"``, ``"prior"``, ``"router"``, ``"oracle"``.
        weights: ``[E]`` for ``prior``; ``[B, E]`` for ``router``; ``LongTensor [B]`` of expert indices
            (or one-hot ``[B, E]``) for ``oracle``; ignored by ``average`` and ``max``.
            Weights are renormalised to sum to 1 over experts.

    Returns:
        ``[B, C]`` probabilities (not log-probabilities); each row sums to 1.
    """
    if expert_logits.dim() != 3:
        raise ValueError(f"fuse: expected expert_logits of shape [B, E, C], got {tuple(expert_logits.shape)}.")
    batch_size, num_experts, _ = expert_logits.shape
    if method == "max":
        return torch.softmax(expert_logits.max(dim=1).values, dim=-1)
    probs = torch.softmax(expert_logits.float(), dim=-1).to(expert_logits.dtype)
    if method == "average":
        return probs.mean(dim=1)
    if method not in FUSION_METHODS:
        raise ValueError(f"fuse: unknown fusion method {method!r}; choose one of {list(FUSION_METHODS)}.")
    if weights is None:
        hint = {
            "prior": "one weight per expert, e.g. the training-set interaction frequencies",
            "router": "the router's per-example weights [B, E]",
            "oracle": "each example's gold interaction as an expert index [B]",
        }[method]
        raise ValueError(f"fuse: method {method!r} needs `weights` ({hint}).")
    weights = weights.to(expert_logits.device)
    if method == "oracle" and weights.dim() == 1:
        if weights.dtype.is_floating_point or weights.shape[0] != batch_size:
            raise ValueError("fuse: oracle weights must be a LongTensor [B] of expert indices or one-hot [B, E].")
        if _checking_values() and ((weights < 0) | (weights >= num_experts)).any():
            raise ValueError(f"fuse: oracle expert indices must lie in [0, {num_experts}).")
        weights = torch.nn.functional.one_hot(weights.long(), num_experts)
    elif method == "prior" and weights.dim() == 1:
        weights = weights.unsqueeze(0).expand(batch_size, -1)
    if tuple(weights.shape) != (batch_size, num_experts):
        raise ValueError(
            f"fuse: {method} weights must have shape {[batch_size, num_experts]}, got {list(weights.shape)}."
        )
    weights = _normalised(weights.to(probs.dtype), method)
    return torch.einsum("be,bec->bc", weights, probs)
