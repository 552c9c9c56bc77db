"""Which samples each reader reads: a reader is one DataLoader worker of one rank, its slot
`rank * num_workers + worker` among `world_size * num_workers` slots.

With at least as many shards as slots, whole shards are dealt out (shard i to slot
i mod slots); with fewer, every slot reads all shards and keeps every slots-th sample, so no
reader idles. Together the slots read every sample exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch.utils.data import get_worker_info

from .shards import BadInputLog, iter_samples


def reader_slot(rank: int, world_size: int) -> tuple[int, int]:
    """`(slot, slots)` of the calling DataLoader worker (the main process counts as worker 0 of 1)."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers


def slot_shard_samples(shards: list[str | Path], slot: int, slots: int, bad: BadInputLog | None = None) -> Iterator[dict]:
    """The samples slot `slot` of `slots` reads from `shards`, in the order given."""
    per_shard = len(shards) >= slots
    j = 0
    for i, shard in enumerate(shards):
        if per_shard and i % slots != slot:
            continue
        for sample in iter_samples(shard, bad):
            if per_shard or j % slots == slot:
                yield sample
            j += 1
