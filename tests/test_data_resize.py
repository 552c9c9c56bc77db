"""Resize rule (SPEC 2 step 2), patchify and window split properties."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featnorm.data.patchify import patchify, pixels_to_unit, unit_to_pixels, unpatchify
from featnorm.data.resize import decode_resized, decode_resized_torchvision, keep_image, open_image, random_resize_shape
from featnorm.data.windows import context_window_range, split_windows, window_token_index


def test_resize_shape_is_multiple_bounded_and_keeps_aspect():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        h, w = int(rng.integers(40, 2000)), int(rng.integers(40, 2000))
        if not keep_image(h, w, 64):
            continue
        H, W = random_resize_shape(h, w, rng, 64, 256, 32)
        assert H % 32 == 0 and W % 32 == 0
        assert 64 <= H <= 256 and 64 <= W <= 256
        # pixel cap: rounding may add at most half a unit per side
        assert H * W <= (256 + 16) ** 2
        # aspect kept within the rounding (and the 2-unit / max_side clamps)
        if 64 < H < 256 and 64 < W < 256:
            assert abs(np.log((H / W) / (h / w))) <= np.log((H + 16) / (H - 16)) + np.log((W + 16) / (W - 16)) + 1e-9


def test_resize_side_never_exceeds_source_mean_side_by_more_than_rounding():
    rng = np.random.default_rng(1)
    for _ in range(500):
        h, w = int(rng.integers(64, 300)), int(rng.integers(64, 300))
        H, W = random_resize_shape(h, w, rng, 64, 256, 32)
        assert (H + W) / 2 <= max((h + w) / 2, 64) + 16 + 1e-9


def test_keep_image_drops_small_mean_side():
    assert not keep_image(50, 70, 64)
    assert keep_image(60, 68, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_resized_gives_requested_size(fmt):
    img = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    out = decode_resized(open_image(buf.getvalue()), (96, 160))
    assert out.shape == (96, 160, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", [(300, 500), (96, 160), (37, 61)])
def test_torchvision_decode_equals_pil_full_decode_and_bilinear_resize(fmt, size):
    rng = np.random.default_rng(1)
    # smooth content (JPEG-like), so that resampling filters are compared, not noise
    img = np.clip(np.cumsum(np.cumsum(rng.normal(size=(300, 500, 3)), 0), 1) / 20 + 128, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    data = buf.getvalue()
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize(size[::-1], Image.BILINEAR)).astype(int)
    out = decode_resized_torchvision(data, size)
    assert out.shape == (*size, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and diff.mean() < 0.05
    if size == (300, 500):
        assert diff.max() == 0  # no resize: the same libjpeg decode


def test_patchify_roundtrip_and_layout():
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    p = patchify(img, 16)
    assert p.shape == (4, 6, 768)
    assert np.array_equal(p[1, 2].reshape(16, 16, 3), img[16:32, 32:48])
    assert np.array_equal(unpatchify(p, 16), img)
    assert np.array_equal(unit_to_pixels(pixels_to_unit(img)).numpy(), img)
    assert float(pixels_to_unit(np.array([0, 255], np.uint8)).min()) == -1.0


def test_window_token_index_is_window_contiguous_and_complete():
    idx = window_token_index(4, 6, 2)
    assert idx.shape == (6, 4)
    assert sorted(idx.ravel().tolist()) == list(range(24))
    for win in idx:
        rows, cols = win // 6, win % 6
        assert rows.max() - rows.min() == 1 and cols.max() - cols.min() == 1
        assert rows.min() % 2 == 0 and cols.min() % 2 == 0


def test_split_windows_disjoint_and_complete_with_bounds():
    rng = np.random.default_rng(0)
    for t in [4, 6, 9, 16, 48, 64]:
        lo, hi = context_window_range(t, 0.25, 0.5, 32, 48)
        assert 1 <= lo <= hi <= min(t - 1, 32)
        assert t - lo <= 48
        n = int(rng.integers(lo, hi + 1))
        c, g = split_windows(t, n, rng.permutation(t))
        assert len(set(c.tolist()) & set(g.tolist())) == 0
        assert sorted(c.tolist() + g.tolist()) == list(range(t))
        assert len(c) == n


def test_context_range_at_256_matches_spec():
    # 256 x 256 image: 64 windows -> at most 128 context tokens and at most 192 target tokens
    lo, hi = context_window_range(64, 0.25, 0.5, 128 // 4, 192 // 4)
    assert hi * 4 == 128 and (64 - lo) * 4 == 192
