"""Resize rule (SPEC 2 step 2), patchify and window split properties."""

from __future__ import annotations

import dataclasses
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
        assert min(H, W) >= 64
        # one multiple above max_side only where the short side was raised to two multiples
        assert max(H, W) <= (256 if min(H, W) > 64 else 256 + 32)
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


class _Side:
    """An rng stand-in: `integers(lo, hi)` records its bounds and returns a chosen side."""

    def __init__(self, side):
        self.side, self.calls = side, []

    def integers(self, lo, hi):
        self.calls.append((lo, hi))
        return self.side


def test_resize_draws_an_integer_side_up_to_the_rounded_mean_side():
    rng = _Side(64)
    random_resize_shape(100, 101, rng, 64, 256, 32)  # mean 100.5 rounds to even: 100
    random_resize_shape(101, 102, rng, 64, 256, 32)  # mean 101.5 -> 102
    random_resize_shape(600, 700, rng, 64, 256, 32)  # capped at max_side
    assert rng.calls == [(64, 101), (64, 103), (64, 257)]  # integers' upper bound is exclusive
    no_draw = _Side(None)
    assert random_resize_shape(64, 65, no_draw, 64, 256, 32) == (64, 64) and no_draw.calls == []  # round(64.5) = 64
    with pytest.raises(ValueError, match="keep_image"):
        random_resize_shape(50, 60, no_draw, 64, 256, 32)
    sides = {sum(random_resize_shape(300, 300, np.random.default_rng(i), 64, 256, 1)) // 2 for i in range(3000)}
    assert sides == set(range(64, 257)), "every integer side of the range is drawn, both ends included"


def test_resize_rounds_exact_half_multiples_to_even():
    # a 256 x 256 image drawn at side 144 is 4.5 multiples of 32 -> 4; at 176, 5.5 -> 6; at 208, 6.5 -> 6
    assert random_resize_shape(256, 256, _Side(144), 64, 256, 32) == (128, 128)
    assert random_resize_shape(256, 256, _Side(176), 64, 256, 32) == (192, 192)
    assert random_resize_shape(256, 256, _Side(208), 64, 256, 32) == (192, 192)


def test_resize_pixel_cap_truncates_sides_before_rounding():
    """With the pixel cap below max_side**2 (max_side 250 holds 15 whole 16-px patches: 240**2
    pixels), 209 x 277 at side 243 is scaled to 208.47 x 276.30; truncated to 208 x 276 the
    height is 6.5 multiples of 32, rounded to even: 192 (untruncated it would be 224)."""
    assert random_resize_shape(209, 277, _Side(243), 64, 250, 32, max_pixels=240 * 240) == (192, 224)
    assert random_resize_shape(209, 277, _Side(243), 64, 250, 32) == (224, 224), "no cap below 250**2 pixels"


def test_resize_adds_a_multiple_to_both_sides_until_the_short_side_has_two():
    # 200 x 1000 at side 64: 21.3 x 106.7 px -> 1 x 3 multiples -> 2 x 4: 64 x 128 (aspect kept
    # better than clamping the short side alone, which gave 64 x 96)
    assert random_resize_shape(200, 1000, _Side(64), 64, 256, 32) == (64, 128)
    assert random_resize_shape(1000, 200, _Side(64), 64, 256, 32) == (128, 64)
    # 64 x 2000 at side 256: 15.9 x 496 px -> 1 x 8 multiples (the long side capped) -> 2 x 9
    assert random_resize_shape(64, 2000, _Side(256), 64, 256, 32) == (64, 288)
    assert random_resize_shape(64, 2000, _Side(128), 64, 128, 32) == (64, 160)


@pytest.mark.parametrize("settings", ["paper", "demo"])
def test_elongated_images_beyond_max_side_still_fit_a_row(settings):
    """The +1 multiple can put the long side one multiple above max_side; such an image has
    at most 2 x (max_side / 32 + 1) windows and fits the rows of the paper's and the demo's
    settings with any drawn split, under both packers."""
    from featnorm.data.train_pipeline import PipelineSpec, item_from_pixels

    spec = PipelineSpec.defaults() if settings == "paper" else PipelineSpec.defaults(
        max_side=128, max_context_tokens=32, max_target_tokens=48, rows_per_pack=16)
    beyond = 0
    for h, w in [(64, 2000), (2000, 64), (200, 1000), (90, 700)]:
        hi = min(round((h + w) / 2), spec.max_side)
        for side in range(spec.min_side, hi + 1):
            H, W = random_resize_shape(h, w, _Side(side), spec.min_side, spec.max_side, 32, spec.max_pixels)
            beyond += max(H, W) > spec.max_side
            assert max(H, W) <= spec.max_side or (max(H, W) == spec.max_side + 32 and min(H, W) == 64)
            item = item_from_pixels(np.zeros((H, W, 3), np.uint8), (h, w, side), np.random.default_rng(side), spec)
            for n in range(item.lo, item.hi + 1):
                item.drawn = n
                for packing in ("first-fit", "best-fit"):
                    dataclasses.replace(spec, packing=packing).packer().add(item)
    assert beyond > 0


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


def test_context_window_range_rounds_half_to_even():
    assert context_window_range(10, 0.25, 0.5, 32) == (2, 5)  # round(2.5) = 2
    assert context_window_range(6, 0.25, 0.5, 32) == (2, 3)  # round(1.5) = 2
    assert context_window_range(18, 0.25, 0.5, 32) == (4, 9)  # round(4.5) = 4
    assert context_window_range(14, 0.25, 0.5, 32) == (4, 7)  # round(3.5) = 4


def test_context_window_range_takes_hi_when_lo_reaches_it():
    assert context_window_range(2, 0.25, 0.5, 32) == (1, 1)  # two windows: one context window
    assert context_window_range(16, 0.25, 0.5, 2) == (2, 2)  # lo 4 above the cap of 2
    assert context_window_range(4, 0.6, 0.6, 32) == (2, 2)


def test_context_window_range_raises_lo_so_targets_fit_or_says_what_to_change():
    assert context_window_range(64, 0.25, 0.5, 32, 40) == (24, 32)
    with pytest.raises(ValueError, match="max_target_tokens"):
        context_window_range(64, 0.25, 0.5, 32, 20)


def test_context_range_at_256_matches_spec():
    # 256 x 256 image: 64 windows -> at most 128 context tokens and at most 192 target tokens
    lo, hi = context_window_range(64, 0.25, 0.5, 128 // 4, 192 // 4)
    assert hi * 4 == 128 and (64 - lo) * 4 == 192
