"""Training losses: weighted regression of the fusion score, and a multi-positive symmetric InfoNCE."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def regression_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against soft targets in [0, 1], weighted per pair (crowd pairs count less)."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1e-8)


def contrastive_loss(text_embeddings: torch.Tensor, image_embeddings: torch.Tensor, positive: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where `positive[i, j]` says text i matches image j (several may match).

    The same image can stand in a batch more than once (several captions), so each row's loss is
    minus the log of the total probability of its positives, not of one diagonal entry.
    """
    scale = logit_scale.float().clamp(max=4.6052).exp()  # at most 100, as in CLIP
    logits = scale * text_embeddings.float() @ image_embeddings.float().T
    positive = positive.bool()

    def multi_positive_nll(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        log_all = torch.logsumexp(scores, dim=1)
        log_positive = torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=1)
        return (log_all - log_positive).mean()

    return 0.5 * (multi_positive_nll(logits, positive) + multi_positive_nll(logits.T, positive.T))
