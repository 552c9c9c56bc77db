"""LiDAR (Thilak et al., ICLR 2024): the smooth rank of the LDA matrix."""

from __future__ import annotations

import torch


def _inv_sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    vals = vals.clamp_min(torch.finfo(m.dtype).tiny)
    return (vecs * vals.rsqrt()) @ vecs.T


def lidar_score(features: torch.Tensor, delta: float = 1e-6, eps: float = 1e-6) -> float:
    """LiDAR of `(n samples, q augmentations, d)` features, computed in float64.

    Sigma_b: covariance of the per-sample means (denominator n - 1); Sigma_w: covariance of
    each augmentation around its sample's mean (denominator n (q - 1)) plus delta I;
    M = Sigma_w^-1/2 Sigma_b Sigma_w^-1/2; p = lambda / sum(lambda) + eps with the eigenvalues
    clipped at 0; LiDAR = exp(-sum p log p).
    """
    if features.ndim != 3:
        raise ValueError(f"lidar_score expects (n, q, d) features, got shape {tuple(features.shape)}")
    n, q, d = features.shape
    if n < 2 or q < 2:
        raise ValueError(f"lidar_score needs at least 2 samples and 2 augmentations, got n={n}, q={q}")
    x = features.detach().to(torch.float64)
    means = x.mean(dim=1)  # (n, d)
    centred_b = means - means.mean(dim=0)
    sigma_b = centred_b.T @ centred_b / (n - 1)
    centred_w = (x - means[:, None]).reshape(n * q, d)
    sigma_w = centred_w.T @ centred_w / (n * (q - 1)) + delta * torch.eye(d, dtype=torch.float64, device=x.device)
    w = _inv_sqrt_psd(sigma_w)
    m = w @ sigma_b @ w
    lam = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0)
    p = lam / lam.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
