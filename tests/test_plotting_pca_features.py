"""PCA feature maps: components ordered by variance, oriented, scaled to [0, 1]."""

from __future__ import annotations

import numpy as np
import torch

from featnorm.plotting.pca_features import depth_label, pca_image, pca_rgb


def test_pca_rgb_recovers_the_strongest_directions_in_order():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 16
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    scores = torch.randn(n, 3, generator=g) * torch.tensor([10.0, 5.0, 2.0])
    x = scores @ basis[:, :3].T + 0.01 * torch.randn(n, d, generator=g) + 3.0
    rgb = pca_rgb(x, clip=0.0)
    assert rgb.shape == (n, 3) and rgb.min() >= 0 and rgb.max() <= 1
    for c in range(3):  # channel c is (up to sign and scale) the c-th score
        assert abs(np.corrcoef(rgb[:, c], scores[:, c].numpy())[0, 1]) > 0.99
        assert rgb[:, c].min() == 0 and rgb[:, c].max() == 1


def test_pca_signs_are_oriented_by_the_third_moment_so_sign_flips_do_not_matter():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 8, generator=g) ** 3  # skewed
    np.testing.assert_allclose(pca_rgb(x), pca_rgb(-x), atol=1e-9)


def test_degenerate_features_give_black_channels_not_nan():
    rgb = pca_image(torch.ones(4, 4, 5))
    assert rgb.shape == (4, 4, 3) and np.isfinite(rgb).all() and (rgb == 0).all()


def test_depth_labels():
    assert depth_label(-4, 12) == "output of block 9 of 12"
    assert depth_label(0, 12) == "patch embedding"
