"""RankMe smooth rank (Garrido et al., 2023)."""

from __future__ import annotations

import torch


def smooth_rank(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe of `(N, d)` embeddings, in float64.

    p_k = sigma_k / ||sigma||_1 + eps over the singular values sigma (RankMe paper, eq. 1);
    RankMe = exp(-sum_k p_k log p_k). A matrix with k equal non-zero singular values scores k.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"smooth_rank expects an (N, d) tensor, got shape {tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.detach().to(torch.float64))
    p = s / s.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
