"""Packer invariants, exact reconstruction of images from packed rows, efficiency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featnorm.data.packing import Packer, packing_efficiency, packs_to_batch, segment_lengths
from featnorm.data.patchify import unit_to_pixels, unpatchify
from featnorm.data.resize import random_resize_shape
from featnorm.data.train_pipeline import PipelineSpec, item_from_pixels
from featnorm.tokens import COL, PAD_ID, REGISTER, ROW, SAMPLE

P = 8  # small patches keep the tests fast


def _images(n, rng, max_side=128, unit=16):
    out = []
    for _ in range(n):
        h, w = random_resize_shape(int(rng.integers(40, 400)), int(rng.integers(40, 400)), rng, 32, max_side, unit)
        out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return out


def _pack_all(images, spec, rows, seed=0):
    rng = np.random.default_rng(seed)
    packer = spec.packer(rows)
    packs = []
    for i, img in enumerate(images):
        packer.add(item_from_pixels(img, i, rng, spec))
        if packer.ready():
            packs.append(packer.pack())
    packs += list(packer.flush())
    return packs


def _spec(num_registers=0):
    return PipelineSpec.defaults(patch_size=P, window_size=2, num_registers=num_registers, min_side=32, max_side=128,
                        max_context_tokens=128, max_target_tokens=192, rows_per_pack=8)


def _check_pack(pack, spec, images):
    lc, lt = spec.segments
    batch = packs_to_batch([pack])
    ids, pix = batch.token_ids, batch.pixels
    assert ids.shape == (pack.pixels.shape[0], lc + lt, 4) and batch.context_length == lc
    pad = ids[..., SAMPLE] == PAD_ID
    # padding: every id PAD and zero pixels (0 -> -1 after scaling)
    assert (ids[pad] == PAD_ID).all()
    assert (pack.pixels[pad.numpy()] == 0).all()
    assert not pad.all(dim=1).any(), "no all-padding rows"
    not_patch = pad | (ids[..., REGISTER] != PAD_ID)
    assert (pix[not_patch] == 0).all() and pix.abs().max() <= 1.0, "float pixels: 0 on padding/registers, within [-1, 1]"
    seen = {}
    for sid, key in enumerate(pack.keys):
        m = ids[..., SAMPLE] == sid
        rows = m.any(1).nonzero().ravel()
        assert len(rows) == 1, "an image is never split across rows"
        r = int(rows[0])
        patch = m[r] & (ids[r, :, REGISTER] == PAD_ID)
        reg = m[r] & (ids[r, :, REGISTER] != PAD_ID)
        assert int(reg.sum()) == spec.num_registers
        if spec.num_registers:
            assert (ids[r, reg][:, ROW] == PAD_ID).all() and (pack.pixels[r, reg.numpy()] == 0).all()
            first = int(m[r].nonzero()[0])
            assert reg[first] and first % 4 == 0, "registers open the image's context part"
        img = images[key]
        gh, gw = img.shape[0] // P, img.shape[1] // P
        pos = patch.nonzero().ravel()
        rc = ids[r, pos][:, [ROW, COL]]
        assert len(pos) == gh * gw
        grid = torch.zeros(gh, gw, P * P * 3, dtype=torch.uint8)
        grid[rc[:, 0], rc[:, 1]] = unit_to_pixels(pix[r, pos])
        assert len({(int(a), int(b)) for a, b in rc}) == gh * gw, "every patch exactly once"
        assert np.array_equal(unpatchify(grid.numpy(), P), img), "packed row -> original resized image"
        # window-contiguous and aligned in both segments
        for seg in (pos[pos < lc], pos[pos >= lc]):
            assert len(seg) % 4 == 0
            for k in range(0, len(seg), 4):
                w = seg[k : k + 4]
                assert int(w[0]) % 4 == 0 and (w - w[0]).tolist() == [0, 1, 2, 3]
                rr, cc = ids[r, w, ROW], ids[r, w, COL]
                assert int(rr.min()) % 2 == 0 and int(cc.min()) % 2 == 0
                assert int(rr.max() - rr.min()) == 1 and int(cc.max() - cc.min()) == 1
        ctx = int((pos < lc).sum()) // 4
        assert ctx == pack.num_context[sid]
        seen[key] = True
    return seen


@pytest.mark.parametrize("num_registers", [0, 3])
def test_packer_places_every_image_once_exactly_and_window_contiguous(num_registers):
    spec = _spec(num_registers)
    images = _images(120, np.random.default_rng(num_registers))
    packs = _pack_all(images, spec, rows=8)
    seen = {}
    for pack in packs:
        s = _check_pack(pack, spec, images)
        assert not set(s) & set(seen), "no image in two packs"
        seen.update(s)
    assert sorted(seen) == list(range(len(images))), "no image lost"


def test_context_counts_stay_within_allowed_range():
    spec = _spec()
    images = _images(150, np.random.default_rng(5))
    rng = np.random.default_rng(0)
    packer = spec.packer(8)
    items = {}
    packs = []
    for i, img in enumerate(images):
        it = item_from_pixels(img, i, rng, spec)
        items[i] = it
        packer.add(it)
        if packer.ready():
            packs.append(packer.pack())
    packs += list(packer.flush())
    for pack in packs:
        for key, n in zip(pack.keys, pack.num_context):
            assert items[key].lo <= n <= items[key].hi


def test_packing_is_deterministic():
    spec = _spec()
    images = _images(60, np.random.default_rng(2))
    a = packs_to_batch(_pack_all(images, spec, 8, seed=3))
    b = packs_to_batch(_pack_all(images, spec, 8, seed=3))
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.pixels, b.pixels)


def test_packs_to_batch_offsets_sample_ids():
    spec = _spec()
    packs = _pack_all(_images(80, np.random.default_rng(4)), spec, 8)
    batch = packs_to_batch(packs)
    s = batch.token_ids[..., SAMPLE]
    assert len(torch.unique(s[s != PAD_ID])) == sum(p.num_images for p in packs)


def test_segment_lengths_round_registers_to_windows():
    assert segment_lengths(128, 192, 2, 0) == (128, 192)
    assert segment_lengths(128, 192, 2, 8) == (136, 192)
    assert segment_lengths(128, 192, 2, 3) == (132, 192)


def _pack_paper_like_sizes(rebalance, n=3000, seed=0):
    """Paper settings (256 max side, 128 + 192 tokens, 64 rows): per full pack the efficiency
    `(context, target)`, and per packed image `(packed, drawn, windows)`. Only sizes matter,
    so zero pixels keep it fast."""
    from featnorm.data.packing import PackItem
    from featnorm.data.windows import context_window_range

    rng = np.random.default_rng(seed)
    packer = Packer(64, 128, 192, 2, 3, rebalance=rebalance)
    effs, counts, drawn = [], [], {}
    for i in range(n):
        a = rng.choice([4 / 3, 1.0, 3 / 4, 1.5])
        h, w = (256, int(256 * a)) if a >= 1 else (int(256 / a), 256)
        H, W = random_resize_shape(h, w, rng, 64, 256, 32)
        gh, gw = H // 16, W // 16
        t = gh * gw // 4
        lo, hi = context_window_range(t, 0.25, 0.5, 32, 48)
        drawn[i] = (int(rng.integers(lo, hi + 1)), t)
        packer.add(PackItem(np.zeros((gh * gw, 3), np.uint8), gh, gw, rng.permutation(t), lo, hi, drawn[i][0], key=i))
        if packer.ready():
            pack = packer.pack()
            effs.append(packing_efficiency(pack.token_ids, 128))
            counts += [(c, *drawn[k]) for k, c in zip(pack.keys, pack.num_context)]
    return np.array(effs[1:]), np.array(counts)


def test_packing_efficiency_at_paper_settings():
    e, counts = _pack_paper_like_sizes(rebalance=True)
    assert e[:, 0].mean() >= 0.95 and e[:, 1].mean() >= 0.95, e.mean(0)
    packed, drawn = (counts[:, 0] / counts[:, 2]).mean(), (counts[:, 1] / counts[:, 2]).mean()
    assert packed > drawn, "rebalancing moves target windows into the context"


def test_packing_without_rebalance_keeps_every_drawn_context_count():
    e, counts = _pack_paper_like_sizes(rebalance=False)
    assert (counts[:, 0] == counts[:, 1]).all(), "every image keeps its drawn number of context windows"
    assert (counts[:, 0] / counts[:, 2]).mean() == (counts[:, 1] / counts[:, 2]).mean()
    assert e[:, 1].mean() >= 0.9, e.mean(0)  # best fit still fills rows (the target segment binds)


def test_packing_rebalance_is_threaded_from_the_config():
    from featnorm.config import RunConfig

    cfg = RunConfig()
    assert PipelineSpec.from_config(cfg).packer().rebalance is False  # the reference's default
    cfg.data.packing_rebalance = True
    assert PipelineSpec.from_config(cfg).packer().rebalance is True


def test_packer_rejects_image_that_can_never_fit():
    from featnorm.data.packing import PackItem

    packer = Packer(4, 8, 8, 2, 3)
    with pytest.raises(ValueError, match="can never fit"):
        packer.add(PackItem(np.zeros((64, 3), np.uint8), 8, 8, np.arange(16), 4, 8, 6, key="big"))
