"""Damaged samples are skipped, counted and reported; training continues."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from featnorm.data import PipelineSpec, TrainLoader, depth_batches, num_images
from featnorm.data.demo_classification import jpeg_bytes, render
from featnorm.data.nyu import npy_bytes
from featnorm.data.shards import ShardWriter

SPEC = PipelineSpec.defaults(min_side=64, max_side=128, max_context_tokens=32, max_target_tokens=48, rows_per_pack=4, shuffle_buffer=8)


def _good(i):
    return jpeg_bytes(render(i % 10, np.random.default_rng(i)))


def _write(out, samples, shard_bytes=1 << 30):
    with ShardWriter(out, "train", shard_bytes) as w:
        for s in samples:
            w.write(s)


def test_corrupt_jpeg_and_missing_image_are_skipped_and_reported(tmp_path, caplog):
    samples = [{"__key__": f"{i:04d}", "jpg": _good(i), "cls": "0"} for i in range(20)]
    samples[3]["jpg"] = b"\xff\xd8\xff\xe0 this is not a jpeg"
    samples[7]["jpg"] = samples[7]["jpg"][: len(samples[7]["jpg"]) // 3]  # truncated JPEG data
    del samples[11]["jpg"]
    _write(tmp_path, samples)
    loader = TrainLoader(tmp_path, SPEC, batch_size=4, seed=0)
    with caplog.at_level(logging.WARNING):
        n = sum(num_images(b) for b in loader.epoch_batches(0))
    bad = {(shard, key) for shard, key, _ in loader.bad_inputs.records}
    assert ("train-00000.tar", "0003") in bad and ("train-00000.tar", "0011") in bad
    assert n == 20 - len(bad) and len(bad) in (2, 3)  # PIL may decode a truncated JPEG leniently
    assert "0003" in caplog.text and "train-00000.tar" in caplog.text


def test_truncated_tar_keeps_earlier_samples_and_reports(tmp_path):
    samples = [{"__key__": f"{i:04d}", "jpg": _good(i), "cls": "0"} for i in range(12)]
    _write(tmp_path / "a", samples[:6])
    _write(tmp_path / "b", samples[6:])
    tar = tmp_path / "b" / "train-00000.tar"
    data = tar.read_bytes()
    (tmp_path / "a" / "train-00001.tar").write_bytes(data[: len(data) // 2])  # cut in a member
    import json

    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    m["shards"].append({"name": "train-00001.tar", "samples": 6, "bytes": 0, "sha256": ""})
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(m))
    loader = TrainLoader(tmp_path / "a", SPEC, batch_size=4, seed=0)
    n = sum(num_images(b) for b in loader.epoch_batches(0))
    assert 6 <= n < 12
    assert any(shard == "train-00001.tar" and "truncated" in reason for shard, _, reason in loader.bad_inputs.records)


def test_undecodable_depth_is_skipped_and_reported(tmp_path, caplog):
    img = jpeg_bytes(render(0, np.random.default_rng(0)))
    dep = npy_bytes(np.ones((10, 10), np.float32))
    samples = [
        {"__key__": "0000", "jpg": img, "depth.npy": dep},
        {"__key__": "0001", "jpg": img, "depth.npy": b"garbage"},
        {"__key__": "0002", "jpg": img, "depth.npy": dep},
    ]
    _write(tmp_path, samples)
    with caplog.at_level(logging.WARNING):
        batches = list(depth_batches(tmp_path, batch_size=8, image_size=64))
    assert sum(len(b.keys) for b in batches) == 2
    assert "0001" in caplog.text and "train-00000.tar" in caplog.text


def test_missing_shard_stops_at_once(tmp_path):
    from featnorm.data.shards import ShardError

    with pytest.raises(ShardError, match="nothere-00000.tar"):
        TrainLoader(str(tmp_path / "nothere-00000.tar"), SPEC, batch_size=4)
