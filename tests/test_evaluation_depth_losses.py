"""Scale-and-shift-invariant depth loss and aligned metrics."""

import pytest
import torch

from featnorm.evaluation.depth_losses import (
    align_to_ground_truth,
    depth_metrics,
    depth_probe_loss,
    normalize_depth,
)


def _depth(b=3, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(1, 5, w).expand(b, h, w) + torch.rand(b, 1, 1, generator=g) * 3
    return base + 0.3 * torch.rand(b, h, w, generator=g)


def test_loss_is_zero_for_perfect_prediction():
    gt = _depth()
    loss, parts = depth_probe_loss(gt.clone(), gt)
    assert loss.item() == pytest.approx(0, abs=1e-6)
    assert parts["grad"].item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("scale,shift", [(2.5, -1.0), (0.01, 7.0), (100.0, 0.0)])
def test_loss_unchanged_by_scaling_and_shifting_prediction(scale, shift):
    gt = _depth(seed=1)
    pred = _depth(seed=2)
    base, _ = depth_probe_loss(pred, gt)
    moved, _ = depth_probe_loss(pred * scale + shift, gt)
    assert base.item() > 0.01
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)


def test_loss_ignores_invalid_pixels():
    gt = _depth(seed=3)
    pred = gt.clone()
    gt_holes = gt.clone()
    gt_holes[:, :5, :7] = 0
    valid = gt_holes > 0
    pred[:, :5, :7] = 123.0  # garbage where there is no ground truth
    loss, _ = depth_probe_loss(pred, gt_holes, valid)
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_rmse_is_zero_for_ground_truth_and_absrel_delta_perfect():
    gt = _depth(seed=4)
    m = depth_metrics(gt.clone(), gt)
    assert torch.allclose(m["rmse"], torch.zeros(3), atol=1e-5)
    assert torch.allclose(m["absrel"], torch.zeros(3), atol=1e-6)
    assert torch.equal(m["delta1"], torch.ones(3))


def test_rmse_is_in_metres_after_alignment_and_invariant_to_prediction_affine():
    gt = _depth(seed=5)
    pred = _depth(seed=6)
    a = depth_metrics(pred, gt)["rmse"]
    b = depth_metrics(3 * pred + 2, gt)["rmse"]
    assert torch.allclose(a, b, rtol=1e-4)
    aligned = align_to_ground_truth(pred, gt)
    manual = ((aligned - gt) ** 2).flatten(1).mean(1).sqrt()
    assert torch.allclose(a, manual)


def test_normalize_depth_has_zero_median_and_unit_mean_abs_deviation():
    x = _depth(seed=7) * 4 + 1
    n, shift, scale = normalize_depth(x)
    assert n.flatten(1).median(1).values.abs().max() < 1e-5
    assert torch.allclose(n.flatten(1).abs().mean(1), torch.ones(3), atol=1e-4)
    assert torch.allclose(n * scale + shift, x, atol=1e-4)
