"""PCA feature maps: components ordered by variance, oriented, scaled to [0, 1]."""

from __future__ import annotations

import numpy as np
import torch

import torchvision
from matplotlib.colors import hsv_to_rgb as mpl_hsv_to_rgb

from featnorm.plotting.pca_features import (
    blur_half,
    depth_label,
    hsv_image,
    hsv_to_rgb,
    pca_image,
    pca_rgb,
    upsample_bilinear,
    whitened_pca,
)


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


def test_hsv_to_rgb_equals_matplotlibs_on_the_unit_cube():
    hsv = np.random.default_rng(0).random((2000, 3))
    hsv[:10, 1] = 0  # greys
    hsv[10:20, 0] = 1.0  # hue 1 wraps to red
    np.testing.assert_allclose(hsv_to_rgb(hsv), mpl_hsv_to_rgb(hsv), atol=1e-12)


def test_blur_half_is_the_mean_of_the_features_and_torchvisions_gaussian_blur():
    x = torch.randn(7, 9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blurred = torchvision.transforms.GaussianBlur(3, sigma=0.5)(x.permute(2, 0, 1)).permute(1, 2, 0)
    torch.testing.assert_close(blur_half(x), (x + blurred) / 2)


def test_whitened_pca_gives_uncorrelated_unit_variance_components_of_the_top_subspace():
    g = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(12, 12, generator=g))[0]
    scores = torch.randn(500, 3, generator=g) * torch.tensor([9.0, 4.0, 2.0])
    x = scores @ basis[:, :3].T + 0.01 * torch.randn(500, 12, generator=g)
    w = whitened_pca(x)
    np.testing.assert_allclose(np.cov(w, rowvar=False), np.eye(3), atol=1e-9)
    for c in range(3):
        assert abs(np.corrcoef(w[:, c], scores[:, c].numpy())[0, 1]) > 0.99
    np.testing.assert_allclose(whitened_pca(-x), w, atol=1e-9)  # orientation fixed


def test_hsv_image_and_upsampling_stay_in_range_and_keep_the_grid():
    grid = torch.randn(6, 5, 16, generator=torch.Generator().manual_seed(3))
    rgb = hsv_image(grid)
    assert rgb.shape == (6, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    big = upsample_bilinear(rgb, 4)
    assert big.shape == (24, 20, 3) and big.min() >= 0 and big.max() <= 1
    # bilinear: a linear ramp over the grid stays linear between the patch centres
    yy, xx = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    ramp = np.stack([0.1 * yy + 0.05 * xx] * 3, -1)
    up = upsample_bilinear(ramp, 4)
    Y, X = np.meshgrid((np.arange(24) + 0.5) / 4 - 0.5, (np.arange(20) + 0.5) / 4 - 0.5, indexing="ij")
    inside = (Y >= 0) & (Y <= 5) & (X >= 0) & (X <= 4)
    np.testing.assert_allclose(up[..., 0][inside], (0.1 * Y + 0.05 * X)[inside], atol=1e-6)
