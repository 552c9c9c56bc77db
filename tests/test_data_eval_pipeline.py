"""Depth maps of the evaluation pipeline: centre crop, then the reference's antialiased
bilinear resize (torchvision `Resize` on a tensor) or nearest neighbour."""

import numpy as np
import pytest
import torch
import torchvision

from featnorm.data.eval_pipeline import crop_resize_depth


def _depth(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (1 + 4 * rng.random((h, w))).astype(np.float32)


@pytest.mark.parametrize("shape,size", [((48, 64), 16), ((64, 48), 32), ((30, 30), 30), ((20, 28), 40)])
def test_bilinear_depth_resize_equals_torchvision_resize_of_the_centre_crop(shape, size):
    depth = _depth(*shape)
    ours = crop_resize_depth(depth, size, "bilinear")
    # the reference: crop box (h - s) // 2, (w - s) // 2, then torchvision.transforms.Resize((s, s))
    h, w = shape
    s = min(h, w)
    crop = torch.from_numpy(depth)[None, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    ref = torchvision.transforms.Resize((size, size))(crop)[0].numpy()
    assert ours.shape == (size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_nearest_depth_resize_invents_no_values():
    depth = _depth(40, 60, seed=1)
    out = crop_resize_depth(depth, 16, "nearest")
    assert out.shape == (16, 16)
    assert np.isin(out, depth[:, 10:50]).all()  # every value comes from the centre crop
    bilinear = crop_resize_depth(depth, 16, "bilinear")
    assert not np.isin(bilinear, depth).all()  # bilinear mixes neighbours


def test_unknown_depth_resize_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="'bicubic'"):
        crop_resize_depth(_depth(), 16, "bicubic")
