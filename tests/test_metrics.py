"""RankMe and LiDAR against independent float64 computations and known cases."""

import math

import numpy as np
import pytest
import torch

from featnorm.metrics import lidar_score, smooth_rank


def _rankme_reference(x: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return math.exp(-np.sum(p * np.log(p)))


def _lidar_reference(f: np.ndarray, delta: float = 1e-6, eps: float = 1e-6) -> float:
    """Written from Thilak et al.: scatter sums in loops, LDA matrix through scipy-free numpy."""
    f = f.astype(np.float64)
    n, q, d = f.shape
    mu_x = f.mean(axis=1)
    mu = mu_x.mean(axis=0)
    sb = np.zeros((d, d))
    for i in range(n):
        v = (mu_x[i] - mu)[:, None]
        sb += v @ v.T
    sb /= n - 1
    sw = np.zeros((d, d))
    for i in range(n):
        for j in range(q):
            v = (f[i, j] - mu_x[i])[:, None]
            sw += v @ v.T
    sw = sw / (n * (q - 1)) + delta * np.eye(d)
    w_vals, w_vecs = np.linalg.eigh(sw)
    w_inv_sqrt = w_vecs @ np.diag(w_vals**-0.5) @ w_vecs.T
    lam = np.linalg.eigvalsh(w_inv_sqrt @ sb @ w_inv_sqrt)
    lam = np.clip(lam, 0, None)
    p = lam / lam.sum() + eps
    return math.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("shape", [(200, 32), (16, 64), (50, 50)])
def test_smooth_rank_matches_independent_float64(shape):
    g = np.random.default_rng(0)
    x = g.standard_normal(shape) @ np.diag(np.linspace(0.01, 3, shape[1]))
    assert smooth_rank(torch.tensor(x, dtype=torch.float32)) == pytest.approx(_rankme_reference(x), rel=1e-5)


@pytest.mark.parametrize("k", [1, 3, 10, 32])
def test_smooth_rank_of_k_equal_singular_values_is_k(k):
    g = np.random.default_rng(k)
    u, _ = np.linalg.qr(g.standard_normal((100, 100)))
    v, _ = np.linalg.qr(g.standard_normal((48, 48)))
    s = np.zeros((100, 48))
    s[np.arange(k), np.arange(k)] = 2.5
    x = torch.tensor(u @ s @ v.T)
    assert smooth_rank(x) == pytest.approx(k, rel=1e-3)


def test_smooth_rank_returns_python_float_and_rejects_wrong_rank():
    assert isinstance(smooth_rank(torch.randn(10, 4)), float)
    with pytest.raises(ValueError, match="smooth_rank"):
        smooth_rank(torch.randn(2, 3, 4))


@pytest.mark.parametrize("n,q,d", [(40, 5, 8), (30, 4, 16)])
def test_lidar_matches_independent_float64(n, q, d):
    g = np.random.default_rng(1)
    clean = g.standard_normal((n, d)) * np.linspace(0.1, 2, d)
    f = clean[:, None] + 0.3 * g.standard_normal((n, q, d))
    got = lidar_score(torch.tensor(f, dtype=torch.float32))
    assert got == pytest.approx(_lidar_reference(f.astype(np.float32)), rel=1e-4)
    assert isinstance(got, float)


def _clustered(num_clusters: int, n: int = 120, q: int = 6, d: int = 32, seed: int = 0) -> torch.Tensor:
    """n samples drawn from num_clusters far-apart centres, augmentations as small noise."""
    g = torch.Generator().manual_seed(seed)
    centres = 50.0 * torch.randn(num_clusters, d, generator=g)
    which = torch.arange(n) % num_clusters
    samples = centres[which] + 0.05 * torch.randn(n, d, generator=g)
    return samples[:, None] + 0.05 * torch.randn(n, q, d, generator=g)


def test_lidar_grows_with_number_of_well_separated_clusters():
    scores = [lidar_score(_clustered(c)) for c in (2, 4, 8, 16)]
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    # c clusters span c - 1 between-sample directions that dominate the LDA matrix.
    assert scores[0] == pytest.approx(1, abs=0.5)
    assert scores[2] == pytest.approx(7, rel=0.3)


def test_lidar_rejects_too_few_samples_or_augmentations():
    with pytest.raises(ValueError):
        lidar_score(torch.randn(1, 5, 4))
    with pytest.raises(ValueError):
        lidar_score(torch.randn(5, 1, 4))
    with pytest.raises(ValueError):
        lidar_score(torch.randn(5, 4))
