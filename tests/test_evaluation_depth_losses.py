"""Depth-probe loss and aligned metrics: the reference's formula (only the ground truth is
normalised; the raw prediction is mapped back with the ground truth's shift and scale),
checked against an independent float64 computation, and MiDaS's invariant variant as option."""

import numpy as np
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


def _reference_float64(pred: np.ndarray, gt: np.ndarray, eps: float = 1e-7, grad_weight: float = 0.2):
    """The reference's loss and per-image RMSE written out in numpy float64."""
    b = gt.shape[0]
    flat = gt.reshape(b, -1)
    shift = np.sort(flat, axis=1)[:, (flat.shape[1] - 1) // 2]  # torch.median: the lower median
    scale = np.abs(flat - shift[:, None]).mean(1)
    gt_n = (gt - shift[:, None, None]) / (scale[:, None, None] + eps)
    d = pred - gt_n
    ssi = np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5).mean()
    grad = 0.0
    for s in range(4):
        r = d[:, :: 2**s, :: 2**s]
        grad += np.abs(np.diff(r, axis=2)).mean() + np.abs(np.diff(r, axis=1)).mean()
    in_metres = pred * scale[:, None, None] + shift[:, None, None]
    rmse = np.sqrt(((in_metres - gt) ** 2).reshape(b, -1).mean(1))
    return ssi + grad_weight * grad, rmse


def test_loss_and_rmse_match_an_independent_float64_computation():
    gt = _depth(seed=11)
    pred = torch.randn(gt.shape, generator=torch.Generator().manual_seed(12))  # raw head output, normalised units
    loss, _ = depth_probe_loss(pred, gt)
    rmse = depth_metrics(pred, gt)["rmse"]
    ref_loss, ref_rmse = _reference_float64(pred.double().numpy(), gt.double().numpy())
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(rmse.numpy(), ref_rmse, rtol=1e-5)


def test_loss_is_zero_when_the_raw_prediction_is_the_normalised_ground_truth():
    gt = _depth()
    gt_n, _, _ = normalize_depth(gt)
    loss, parts = depth_probe_loss(gt_n.clone(), gt)
    assert loss.item() == pytest.approx(0, abs=1e-6)
    assert parts["grad"].item() == pytest.approx(0, abs=1e-6)
    assert torch.allclose(depth_metrics(gt_n, gt)["rmse"], torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("scale,shift", [(2.5, -1.0), (0.01, 7.0), (1.0, 0.5)])
def test_prediction_off_by_a_scale_or_shift_is_penalised(scale, shift):
    gt = _depth(seed=1)
    gt_n, _, _ = normalize_depth(gt)
    loss, _ = depth_probe_loss(gt_n * scale + shift, gt)
    assert loss.item() > 0.05
    rmse = depth_metrics(gt_n * scale + shift, gt)["rmse"]
    assert (rmse > 0.01).all()
    # the un-normalised ground truth itself (metres) is a wrong raw prediction too
    assert depth_probe_loss(gt.clone(), gt)[0].item() > 0.5


@pytest.mark.parametrize("scale,shift", [(2.5, -1.0), (0.01, 7.0), (100.0, 0.0)])
def test_normalize_prediction_option_is_invariant_to_scaling_and_shifting_prediction(scale, shift):
    gt = _depth(seed=1)
    pred = _depth(seed=2)
    base, _ = depth_probe_loss(pred, gt, normalize_prediction=True)
    moved, _ = depth_probe_loss(pred * scale + shift, gt, normalize_prediction=True)
    assert base.item() > 0.01
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)
    a = depth_metrics(pred, gt, normalize_prediction=True)["rmse"]
    b = depth_metrics(pred * scale + shift, gt, normalize_prediction=True)["rmse"]
    assert torch.allclose(a, b, rtol=1e-4)
    # the default is not invariant
    assert not torch.allclose(depth_metrics(pred, gt)["rmse"], depth_metrics(pred * scale + shift, gt)["rmse"], rtol=1e-2)


def test_loss_ignores_invalid_pixels():
    gt = _depth(seed=3)
    gt_holes = gt.clone()
    gt_holes[:, :5, :7] = 0
    valid = gt_holes > 0
    pred, _, _ = normalize_depth(gt_holes, valid)
    pred[:, :5, :7] = 123.0  # garbage where there is no ground truth
    loss, _ = depth_probe_loss(pred, gt_holes, valid)
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_rmse_is_zero_for_ground_truth_and_absrel_delta_perfect_with_normalized_prediction():
    gt = _depth(seed=4)
    m = depth_metrics(gt.clone(), gt, normalize_prediction=True)
    assert torch.allclose(m["rmse"], torch.zeros(3), atol=1e-5)
    assert torch.allclose(m["absrel"], torch.zeros(3), atol=1e-6)
    assert torch.equal(m["delta1"], torch.ones(3))


def test_rmse_is_in_metres_of_the_raw_prediction_mapped_back():
    gt = _depth(seed=5)
    pred = torch.randn(gt.shape, generator=torch.Generator().manual_seed(6))
    aligned = align_to_ground_truth(pred, gt)
    _, shift, scale = normalize_depth(gt)
    assert torch.allclose(aligned, pred * scale + shift)
    manual = ((aligned - gt) ** 2).flatten(1).mean(1).sqrt()
    assert torch.allclose(depth_metrics(pred, gt)["rmse"], manual)


def test_normalize_depth_has_zero_median_and_unit_mean_abs_deviation():
    x = _depth(seed=7) * 4 + 1
    n, shift, scale = normalize_depth(x)
    assert n.flatten(1).median(1).values.abs().max() < 1e-5
    assert torch.allclose(n.flatten(1).abs().mean(1), torch.ones(3), atol=1e-4)
    assert torch.allclose(n * scale + shift, x, atol=1e-4)
