"""Losses used by MMoE models. Imports only ``torch`` (uploaded to the Hub as remote code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0) -> torch.Tensor:
    """Multi-class focal loss (Lin et al., 2017), averaged over the batch.

    ``FL = mean_b( alpha * (1 - p_b)^gamma * -log p_b )`` with ``p_b = softmax(logits_b)[targets_b]``.
    MMoE trains its router with ``alpha=1, gamma=2`` (paper, appendix H); ``gamma=0`` is cross-entropy.

    Args:
        logits: ``[B, K]`` unnormalised scores.
        targets: ``[B]`` class indices in ``[0, K)``.
    """
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return (alpha * (1.0 - log_p.exp()).pow(gamma) * -log_p).mean()


def fused_nll_loss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Negative log-likelihood of fused class probabilities ``[B, C]`` at ``labels [B]``, averaged."""
    return -(probs.float().gather(1, labels.long().unsqueeze(1)).squeeze(1).clamp_min(eps).log()).mean()


# ---------------------------------------------------------------------------------------------- I2MoE
# I2MoE's interaction losses (Xin et al., ICML 2025; `InteractionMoE.py` of its code). Each compares one expert's
# outputs (logits [B, C]) on the full input with its outputs when one modality is replaced by random vectors.


def uniqueness_loss(full: torch.Tensor, masked: list[torch.Tensor], modality: int, margin: float = 1.0) -> torch.Tensor:
    """Uniqueness expert of ``modality``: masking that modality must move its output (the triplet's negative),
    masking any other must not (the positives). The mean over the other modalities of
    ``TripletMarginLoss(margin, p=2)(anchor=full, positive=masked[j], negative=masked[modality])``.

    Args:
        full: ``[B, C]`` the expert's output on the full input.
        masked: ``n`` tensors ``[B, C]``, the output with modality ``j`` masked.
        modality: the index of the expert's own modality.
    """
    negative = masked[modality]
    positives = [out for j, out in enumerate(masked) if j != modality]
    losses = [F.triplet_margin_loss(full, positive, negative, margin=margin, p=2, eps=1e-7) for positive in positives]
    return torch.stack(losses).mean()


def _mean_cosine(full: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return (F.normalize(full, p=2, dim=1) * F.normalize(other, p=2, dim=1)).sum(dim=1).mean()


def synergy_loss(full: torch.Tensor, masked: list[torch.Tensor]) -> torch.Tensor:
    """Synergy expert: its output must change whatever is masked; the mean cosine similarity between the full and
    each masked output (minimised). ``full`` ``[B, C]``, ``masked`` ``n`` tensors ``[B, C]``."""
    return torch.stack([_mean_cosine(full, out) for out in masked]).mean()


def redundancy_loss(full: torch.Tensor, masked: list[torch.Tensor]) -> torch.Tensor:
    """Redundancy expert: its output must not change when any one modality is masked; the mean of
    ``1 - cosine similarity`` between the full and each masked output. Shapes as in :func:`synergy_loss`."""
    return torch.stack([1 - _mean_cosine(full, out) for out in masked]).mean()
