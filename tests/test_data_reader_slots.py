"""Readers (rank x DataLoader worker slots) split the samples of a shard list."""

from __future__ import annotations

import pytest

from featnorm.data.reader_slots import reader_slot, slot_shard_samples
from featnorm.data.shards import ShardWriter


def _shards(tmp_path, counts):
    paths = []
    for s, n in enumerate(counts):
        w = ShardWriter(tmp_path / f"s{s}", "train", shard_bytes=1 << 30)
        for k in range(n):
            w.write({"__key__": f"{s}-{k:03d}", "cls": b"0"})
        w.close()
        paths.append(tmp_path / f"s{s}" / "train-00000.tar")
    return paths


@pytest.mark.parametrize("counts,slots", [([3, 4, 5, 2], 2), ([3, 4], 3), ([5], 4), ([1, 2, 3], 3)])
def test_slots_together_read_every_sample_exactly_once(tmp_path, counts, slots):
    shards = _shards(tmp_path, counts)
    keys = [s["__key__"] for slot in range(slots) for s in slot_shard_samples(shards, slot, slots)]
    assert sorted(keys) == sorted(f"{s}-{k:03d}" for s, n in enumerate(counts) for k in range(n))


def test_with_enough_shards_each_slot_reads_whole_shards(tmp_path):
    shards = _shards(tmp_path, [2, 2, 2, 2])
    assert [s["__key__"] for s in slot_shard_samples(shards, 1, 2)] == ["1-000", "1-001", "3-000", "3-001"]


def test_main_process_is_worker_zero_of_one():
    assert reader_slot(0, 1) == (0, 1)
    assert reader_slot(3, 4) == (3, 4)
