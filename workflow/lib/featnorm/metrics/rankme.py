"""RankMe smooth rank (Garrido et al., 2023)."""

from __future__ import annotations

import torch


def smooth_rank(embeddings: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(entropy) of the L1-normalised singular values of `(N, d)` embeddings, in float64."""
    if embeddings.ndim != 2:
        raise ValueError(f"smooth_rank expects an (N, d) tensor, got shape {tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.detach().to(torch.float64))
    p = s / s.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return float(torch.exp(-(p * torch.log(p + eps)).sum()))
