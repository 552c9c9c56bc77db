"""Packer invariants (first fit and best fit), exact reconstruction of images from packed rows,
the first-fit placement rule, efficiency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featnorm.config import ConfigError, RunConfig, load_run_config
from featnorm.data.packing import PackItem, packing_efficiency, packs_to_batch, segment_lengths
from featnorm.data.packing_best_fit import BestFitPacker
from featnorm.data.packing_first_fit import FirstFitPacker
from featnorm.data.patchify import unit_to_pixels, unpatchify
from featnorm.data.resize import random_resize_shape
from featnorm.data.train_pipeline import PipelineSpec, item_from_pixels
from featnorm.data.windows import context_window_range
from featnorm.tokens import COL, PAD_ID, REGISTER, ROW, SAMPLE

P = 8  # small patches keep the tests fast
PACKINGS = [("first-fit", False), ("best-fit", False), ("best-fit", True)]  # (data.packing, packing_rebalance)


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


def _spec(num_registers=0, packing="first-fit", rebalance=False):
    return PipelineSpec.defaults(patch_size=P, window_size=2, num_registers=num_registers, min_side=32, max_side=128,
                                 max_context_tokens=128, max_target_tokens=192, rows_per_pack=8, packing=packing,
                                 packing_rebalance=rebalance)


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


@pytest.mark.parametrize("packing,rebalance", PACKINGS)
@pytest.mark.parametrize("num_registers", [0, 3])
def test_packer_places_every_image_once_exactly_and_window_contiguous(num_registers, packing, rebalance):
    spec = _spec(num_registers, packing, rebalance)
    images = _images(120, np.random.default_rng(num_registers))
    packs = _pack_all(images, spec, rows=8)
    seen = {}
    for pack in packs:
        s = _check_pack(pack, spec, images)
        assert not set(s) & set(seen), "no image in two packs"
        seen.update(s)
    assert sorted(seen) == list(range(len(images))), "no image lost"


@pytest.mark.parametrize("packing,rebalance", PACKINGS)
def test_context_counts_stay_within_allowed_range(packing, rebalance):
    spec = _spec(packing=packing, rebalance=rebalance)
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
            if not rebalance:
                assert n == items[key].drawn, "without rebalancing every image keeps its drawn split"


@pytest.mark.parametrize("packing,rebalance", PACKINGS)
def test_packing_is_deterministic(packing, rebalance):
    spec = _spec(packing=packing, rebalance=rebalance)
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


def _item(key, context_windows, target_windows):
    """An image of 1 x T windows (2 x 2T patches, zero pixels) that drew `context_windows`."""
    t = context_windows + target_windows
    return PackItem(np.zeros((4 * t, 3), np.uint8), 2, 2 * t, np.arange(t), 1, t - 1, context_windows, key=key)


def _rows(pack):
    """Keys of the images in each row of a pack, in placement order."""
    s = pack.token_ids[..., SAMPLE]
    return [[pack.keys[i] for i in dict.fromkeys(int(x) for x in row if x != PAD_ID)] for row in s]


def test_first_fit_puts_each_image_in_the_first_row_where_both_segments_fit():
    """3 rows of 4 context + 6 target windows; images as (context, target) windows. E fits
    row 0 and row 2; first fit takes row 0 (best fit would take the fuller row 2). F fits no
    row: the pack is emitted with F's arrival and F opens the next pack."""
    packer = FirstFitPacker(3, 16, 24, 2, 3)
    sequence = [("A", 2, 2), ("B", 4, 6), ("C", 1, 1), ("D", 3, 4), ("E", 1, 1), ("F", 1, 3), ("G", 2, 2)]
    ready_after = []
    for key, c, t in sequence:
        packer.add(_item(key, c, t))
        ready_after.append(packer.ready())
    assert ready_after == [False] * 5 + [True, True], "a pack is emitted exactly when an image fits no row"
    first = packer.pack()
    assert not packer.ready()
    assert _rows(first) == [["A", "C", "E"], ["B"], ["D"]]
    assert first.pixels.shape[0] == 3, "an emitted pack has all its rows"
    assert first.num_context == [2, 1, 1, 4, 3], "every image keeps its drawn context windows"
    rest = list(packer.flush())
    assert len(rest) == 1 and _rows(rest[0]) == [["F", "G"]], "the last pack keeps only its non-empty rows"
    assert list(packer.flush()) == []


def test_first_fit_matches_a_plain_simulation_of_the_rule():
    """300 random images into 4 rows of 4 + 6 windows: the packs equal those of a direct
    simulation (first row where both segments fit; none fits -> emit all rows, restart)."""
    rng = np.random.default_rng(0)
    packer = FirstFitPacker(4, 16, 24, 2, 3)
    got, expected = [], []
    rows, free = [[] for _ in range(4)], [[4, 6] for _ in range(4)]
    for i in range(300):
        c, t = int(rng.integers(1, 5)), int(rng.integers(1, 7))
        packer.add(_item(i, c, t))
        r = next((r for r in range(4) if free[r][0] >= c and free[r][1] >= t), None)
        if r is None:
            expected.append(rows)
            rows, free, r = [[] for _ in range(4)], [[4, 6] for _ in range(4)], 0
        rows[r].append(i)
        free[r][0] -= c
        free[r][1] -= t
        if packer.ready():
            got.append(_rows(packer.pack()))
    got += [_rows(p) for p in packer.flush()]
    expected.append([row for row in rows if row])
    assert len(expected) > 10 and got == expected


def test_first_fit_refuses_an_image_larger_than_a_row():
    packer = FirstFitPacker(2, 16, 24, 2, 3)
    with pytest.raises(ValueError, match="can never fit"):
        packer.add(_item("big", 5, 1))
    with pytest.raises(ValueError, match="can never fit"):
        packer.add(_item("big", 1, 7))
    packer.add(_item("ok", 4, 6))  # exactly one row
    assert len(packer) == 1 and not packer.ready()


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


def _pack_paper_like_sizes(packer, n=3000, seed=0):
    """Paper settings (256 max side, 128 + 192 tokens, 64 rows): per full pack the efficiency
    `(context, target)`, and per packed image `(packed, drawn, windows)`. Only sizes matter,
    so zero pixels keep it fast."""
    rng = np.random.default_rng(seed)
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


def test_best_fit_rebalance_fills_both_segments_at_paper_settings():
    e, counts = _pack_paper_like_sizes(BestFitPacker(64, 128, 192, 2, 3, rebalance=True))
    assert e[:, 0].mean() >= 0.95 and e[:, 1].mean() >= 0.95, e.mean(0)
    packed, drawn = (counts[:, 0] / counts[:, 2]).mean(), (counts[:, 1] / counts[:, 2]).mean()
    assert packed > drawn, "rebalancing moves target windows into the context"


@pytest.mark.parametrize("packer", [BestFitPacker(64, 128, 192, 2, 3, rebalance=False), FirstFitPacker(64, 128, 192, 2, 3)],
                         ids=["best-fit", "first-fit"])
def test_packing_without_rebalance_keeps_every_drawn_context_count(packer):
    e, counts = _pack_paper_like_sizes(packer)
    assert (counts[:, 0] == counts[:, 1]).all(), "every image keeps its drawn number of context windows"
    assert (counts[:, 0] / counts[:, 2]).mean() == (counts[:, 1] / counts[:, 2]).mean()
    assert e[:, 1].mean() >= 0.9, e.mean(0)  # both fill rows (the target segment binds)


def test_packing_mode_is_threaded_from_the_config():
    cfg = RunConfig()
    assert isinstance(PipelineSpec.from_config(cfg).packer(), FirstFitPacker)  # the reference's default
    cfg.data.packing = "best-fit"
    assert PipelineSpec.from_config(cfg).packer().rebalance is False
    cfg.data.packing_rebalance = True
    packer = PipelineSpec.from_config(cfg).packer()
    assert isinstance(packer, BestFitPacker) and packer.rebalance is True


def test_rebalance_with_first_fit_is_a_one_line_config_error(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("data: {packing: first-fit, packing_rebalance: true}\n")
    with pytest.raises(ConfigError, match="packing_rebalance: true needs data.packing: best-fit") as e:
        load_run_config(f)
    assert "\n" not in str(e.value)
    f.write_text("data: {packing: next-fit}\n")
    with pytest.raises(ConfigError, match="data.packing"):
        load_run_config(f)


@pytest.mark.parametrize("packer", [BestFitPacker(4, 8, 8, 2, 3), FirstFitPacker(4, 8, 8, 2, 3)], ids=["best-fit", "first-fit"])
def test_packer_rejects_image_that_can_never_fit(packer):
    with pytest.raises(ValueError, match="can never fit"):
        packer.add(PackItem(np.zeros((64, 3), np.uint8), 8, 8, np.arange(16), 4, 8, 6, key="big"))
