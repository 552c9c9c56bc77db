"""The dataset-averaged loss map (plot-mean-loss): equal to a direct average of every predicted
token's loss recomputed one predictor row at a time, and the per-channel loss image's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featnorm.ijepa import IJEPA
from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.mean_loss import (
    channel_loss_image,
    channel_patch_shape,
    dataset_mean_loss,
    make_mean_loss_figure,
    save_mean_loss,
)
from featnorm.plotting.run_results import FigureInputError
from featnorm.plotting.style import quantile_scale
from featnorm.plotting.synthetic_runs import synthetic_image, tiny_config
from predictor_reference import one_row_at_a_time, record_predictor_calls


def _images(n, size=64):
    return [SourceImage(f"im{i}", synthetic_image(size, 10 + i)) for i in range(n)]


@pytest.mark.parametrize("forward", ["training", "predict-all"])
def test_mean_loss_map_equals_a_direct_average_over_images_masks_and_copies(forward):
    cfg = tiny_config("t", out_norm="layernorm", target_norm="layernorm", dim=48)
    torch.manual_seed(0)
    model = IJEPA(cfg.model).eval()
    with record_predictor_calls(model) as calls:
        res = dataset_mean_loss(model, cfg, _images(5), masks=2, batch_size=4, seed=3, forward=forward)
    assert len(calls) == 3  # 2 images (4 rows) per forward: 2 + 2 + 1
    assert res.num_images == 5 and (res.gh, res.gw) == (8, 8)
    loss_sum, count = np.zeros(64), np.zeros(64)
    channel_sum = np.zeros((64, 48))
    for call in calls:
        for _, keys, losses in one_row_at_a_time(model, call["batch"], call):
            for (_, _, r, c), ch in zip(keys, losses.double().numpy()):
                loss_sum[r * 8 + c] += ch.mean()
                channel_sum[r * 8 + c] += ch
                count[r * 8 + c] += 1
    np.testing.assert_array_equal(res.count, count)
    with np.errstate(invalid="ignore"):
        expected = np.where(count > 0, loss_sum / count, np.nan).reshape(8, 8)
    np.testing.assert_allclose(res.mean_map(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.channel_mean(), (channel_sum / np.maximum(count, 1)[:, None]).reshape(8, 8, 48),
                               rtol=1e-4, atol=1e-6)
    if forward == "training":  # 4 copies x 3 windows x 4 tokens per mask
        assert count.sum() == 5 * 2 * 4 * 3 * 4


def test_channel_patch_shape_is_the_references_reshape():
    assert channel_patch_shape(384, 16) == (8, 16)  # ViT-S: 8 x 16 x 3
    assert channel_patch_shape(96, 16) == (2, 16)  # the demo model
    assert channel_patch_shape(48, 8) == (2, 8)
    with pytest.raises(FigureInputError, match="encoder width"):
        channel_patch_shape(32, 8)


def test_channel_image_lays_each_tokens_channels_out_as_an_rgb_patch():
    gh, gw, d, p = 2, 3, 48, 8  # h x w = 2 x 8: rows repeated 4 times, columns once
    values = np.arange(gh * gw * d, dtype=np.float64).reshape(gh, gw, d)
    img = channel_loss_image(values, p)
    assert img.shape == (gh * p, gw * p, 3)
    for r in range(gh):
        for c in range(gw):
            patch = img[r * p : (r + 1) * p, c * p : (c + 1) * p]
            for y in range(p):
                for x in range(p):
                    k = ((y // 4) * 8 + x) * 3  # channel-last, row-major, nearest over 4 rows
                    np.testing.assert_array_equal(patch[y, x], values[r, c, k : k + 3])
            # a patch's average over pixels and colours is the token's mean channel loss
            assert patch.mean() == pytest.approx(values[r, c].mean())


def test_quantile_scale_maps_the_1st_and_99th_percentiles_to_0_and_1():
    x = np.linspace(0, 100, 10001)
    y = quantile_scale(x)
    assert y.min() == 0 and y.max() == 1
    assert y[5000] == pytest.approx(0.5) and y[100] == pytest.approx(0.0) and y[9900] == pytest.approx(1.0)
    assert np.isnan(quantile_scale(np.array([1.0, 2.0, np.nan]))[2])


def test_images_of_another_size_are_refused(tmp_path):
    cfg = tiny_config("t", dim=48)
    model = IJEPA(cfg.model).eval()
    images = _images(1) + [SourceImage("big", synthetic_image(128, 0))]
    with pytest.raises(FigureInputError, match="one size"):
        dataset_mean_loss(model, cfg, images, masks=1, batch_size=1)
    res = dataset_mean_loss(model, cfg, _images(2), masks=1, batch_size=2)
    paths = [tmp_path / "m.png", tmp_path / "m.pdf"]
    make_mean_loss_figure({"a": res, "b": res}, paths)
    npz = np.load(save_mean_loss(tmp_path / "m.npz", {"a": res}))
    assert all(p.stat().st_size > 0 for p in paths)
    assert npz["a/channel_image"].shape == (64, 64, 3) and npz["a/mean"].shape == (8, 8)
