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
