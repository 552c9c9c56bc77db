"""Training loader (determinism, worker split, resume), eval/depth pipelines, LiDAR set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from featnorm.data import PipelineSpec, TrainLoader, depth_batches, eval_batches, num_images
from featnorm.data.demo_classification import write_classification_demo
from featnorm.data.demo_depth import write_nyu_mat
from featnorm.data.imagefolder import pack_imagefolder
from featnorm.data.nyu import pack_nyu_mat
from featnorm.data.shards import iter_samples, resolve_shards
from featnorm.tokens import PAD_ID, SAMPLE

SPEC = PipelineSpec.defaults(patch_size=16, window_size=2, min_side=64, max_side=128, max_context_tokens=32,
                    max_target_tokens=48, rows_per_pack=4, shuffle_buffer=16)
# the default (first fit, as the reference) and the look-ahead best fit with and without rebalancing
SPECS = {"first-fit": SPEC, "best-fit": dataclasses.replace(SPEC, packing="best-fit"),
         "best-fit-rebalance": dataclasses.replace(SPEC, packing="best-fit", packing_rebalance=True)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    write_classification_demo(root / "cls", seed=1, n_train=80, n_val=12)
    pack_imagefolder(root / "cls" / "train", root / "train", "train", shard_bytes=120_000)
    pack_imagefolder(root / "cls" / "val", root / "val", "val")
    write_nyu_mat(root / "nyu.mat", seed=0, n_train=6, n_test=3, height=60, width=80)
    pack_nyu_mat(root / "nyu.mat", root / "nyu", "test")
    return root


def _batches(loader, n=None):
    out = []
    for b in loader.epoch_batches(loader.epoch):
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def test_same_seed_same_batches_other_seed_differs(shards):
    a = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=3))
    b = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=3))
    c = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=4))
    assert len(a) == len(b) and all(torch.equal(x.pixels, y.pixels) and torch.equal(x.token_ids, y.token_ids) for x, y in zip(a, b))
    assert not torch.equal(a[0].token_ids, c[0].token_ids)


@pytest.mark.parametrize("packing", list(SPECS))
def test_epoch_sees_every_image_once_and_batches_are_well_formed(shards, packing):
    loader = TrainLoader(shards / "train", SPECS[packing], batch_size=8, seed=0)
    total = 0
    batches = _batches(loader)
    for i, b in enumerate(batches):
        s = b.token_ids[..., SAMPLE]
        n = num_images(b)
        assert sorted(torch.unique(s[s != PAD_ID]).tolist()) == list(range(n))
        assert b.pixels.dtype == torch.float32 and float(b.pixels.abs().max()) <= 1.0
        assert b.context_length == 32 and b.token_ids.shape[1] == 80
        assert not (s == PAD_ID).all(1).any()
        if i < len(batches) - 1:
            assert b.pixels.shape[0] == 8
        total += n
    assert total == 80 == loader.dataset_size


def test_torchvision_decode_gives_the_same_batches_up_to_the_resampling_filter(shards):
    pil = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=0), n=2)
    tv_spec = PipelineSpec.defaults(**{**SPEC.__dict__, "decode": "torchvision"})
    tv = _batches(TrainLoader(shards / "train", tv_spec, batch_size=8, seed=0), n=2)
    for a, b in zip(pil, tv):
        assert torch.equal(a.token_ids, b.token_ids)  # sizes, splits and packing do not depend on the decoder
        diff = (a.pixels - b.pixels).abs()
        assert diff.mean() < 0.05  # a few grey levels: PIL's draft is another antialiasing filter
        assert diff.max() > 0  # the torchvision path really ran


def test_uint8_batches_are_the_float_batches_before_scaling(shards):
    from featnorm.data.packing import to_unit_pixels

    f = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=0), n=2)
    u = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=0, pixels="uint8", pin_memory=True), n=2)
    for a, b in zip(f, u):
        assert b.pixels.dtype == torch.uint8 and torch.equal(a.token_ids, b.token_ids)
        assert torch.equal(to_unit_pixels(b.pixels, b.token_ids), a.pixels)


@pytest.mark.parametrize("num_workers,world_size", [(2, 1), (1, 2), (2, 2)])
def test_workers_and_ranks_split_images_without_duplicates(shards, num_workers, world_size):
    keys = []
    for rank in range(world_size):
        loader = TrainLoader(shards / "train", SPEC, batch_size=8, seed=0, num_workers=num_workers, rank=rank, world_size=world_size)
        for d in loader.packs(0):
            keys += list(d["keys"])
    assert len(keys) == len(set(keys)) == 80


def test_multiworker_batches_are_reproducible(shards):
    a = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=5, num_workers=2))
    b = _batches(TrainLoader(shards / "train", SPEC, batch_size=8, seed=5, num_workers=2))
    assert all(torch.equal(x.token_ids, y.token_ids) and torch.equal(x.pixels, y.pixels) for x, y in zip(a, b))


@pytest.mark.parametrize("packing", list(SPECS))
def test_resume_continues_with_the_same_batches(shards, packing):
    spec = SPECS[packing]
    ref = TrainLoader(shards / "train", spec, batch_size=8, seed=2)
    it = iter(ref)
    full = [next(it) for _ in range(14)]  # crosses into epoch 1
    first = TrainLoader(shards / "train", spec, batch_size=8, seed=2)
    it = iter(first)
    for _ in range(5):
        next(it)
    state = first.state_dict()
    assert state["batch_in_epoch"] == 5 and state["epoch"] == 0
    resumed = TrainLoader(shards / "train", spec, batch_size=8, seed=2)
    resumed.load_state_dict(state)
    it = iter(resumed)
    rest = [next(it) for _ in range(9)]
    for x, y in zip(full[5:], rest):
        assert torch.equal(x.token_ids, y.token_ids) and torch.equal(x.pixels, y.pixels)
    assert resumed.state_dict()["epoch"] >= 1


def test_eval_batches_center_crop_one_image_per_row(shards):
    batches = list(eval_batches(shards / "val", batch_size=5))
    assert sum(len(b.keys) for b in batches) == 12
    b = batches[0]
    assert b.pixels.shape == (5, 256, 768) and b.token_ids.shape == (5, 256, 4)
    assert b.token_ids[0, 17].tolist() == [0, PAD_ID, 1, 1]
    assert b.token_ids[3, 0, SAMPLE] == 3 and (b.labels >= 0).all()
    assert b.packed().context_length == 256
    r = next(iter(eval_batches(shards / "val", batch_size=5, num_registers=2)))
    assert r.pixels.shape == (5, 258, 768) and r.token_ids[0, 1].tolist() == [0, 1, PAD_ID, PAD_ID]
    assert torch.equal(r.pixels[:, 2:], b.pixels)


def test_depth_batches_crop_image_and_depth_alike(shards):
    b = next(iter(depth_batches(shards / "nyu", batch_size=3, image_size=64, patch_size=16)))
    assert b.pixels.shape == (3, 16, 768) and b.depth.shape == (3, 64, 64)
    raw = next(iter(iter_samples(resolve_shards(shards / "nyu")[0])))
    d = np.load(__import__("io").BytesIO(raw["depth.npy"]))  # (60, 80): crop columns 10..70
    assert np.isclose(float(b.depth[0].min()), float(d[:, 10:70].min()), atol=1e-5) or float(b.depth[0].min()) >= float(d[:, 10:70].min())
    assert float(b.depth[0].max()) <= float(d[:, 10:70].max()) + 1e-5


def test_settings_that_cannot_split_an_image_stop_the_loader_instead_of_skipping_it(shards):
    from featnorm.data.windows import UnsplittableImage

    spec = dataclasses.replace(SPEC, max_target_tokens=8)  # 2 target windows: 128 px images cannot split
    loader = TrainLoader(shards / "train", spec, batch_size=8, seed=0)
    with pytest.raises(UnsplittableImage, match="max_target_tokens"):
        _batches(loader)
    assert not loader.bad_inputs.records, "not reported as bad inputs"
