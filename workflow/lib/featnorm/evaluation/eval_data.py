"""Adapters from `featnorm.data.eval_pipeline` (centre crop, one image per row) to the
evaluation code: labelled batches tagged by image shard for resumable feature extraction,
and `(pixels, token_ids, depth)` batches for the depth probe. The image transforms live in
`featnorm.data` only.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from torch.utils.data import DataLoader

from featnorm.data.eval_pipeline import EvalBatch, EvalStream, collate_eval
from featnorm.data.shards import ShardError, read_manifest
from featnorm.evaluation.features import ShardBatch


def eval_loader(paths: list[Path], batch_size: int, image_size: int, patch_size: int, num_registers: int,
                num_workers: int, with_depth: bool = False, depth_resize: str = "bilinear") -> Iterator[EvalBatch]:
    """`featnorm.data.eval_pipeline` batches over already resolved shard paths, in order."""
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
    stream = EvalStream(list(paths), image_size, patch_size, with_depth, image_size, 0, 1, depth_resize)
    collate = functools.partial(collate_eval, num_registers=num_registers, patch_size=patch_size)
    return iter(DataLoader(stream, batch_size=batch_size, num_workers=num_workers, collate_fn=collate))


def shard_counts(shards: list[Path]) -> list[int | None]:
    """Samples per shard from the split's manifest.json (None where unknown)."""
    counts: list[int | None] = []
    cache: dict[Path, dict] = {}
    for p in shards:
        if p.parent not in cache:
            try:
                cache[p.parent] = {s["name"]: s["samples"] for s in read_manifest(p.parent)["shards"]}
            except ShardError:
                cache[p.parent] = {}
        counts.append(cache[p.parent].get(p.name))
    return counts


def image_quota(counts: list[int | None], max_images: int | None) -> list[int | None]:
    """Per-shard image limits that keep the first `max_images` images in shard order."""
    if max_images is None:
        return [None] * len(counts)
    if any(c is None for c in counts):
        raise ValueError("a maximum number of images needs the shards' manifest.json (sample counts per shard)")
    out, left = [], max_images
    for c in counts:
        take = max(0, min(c, left))
        out.append(take)
        left -= take
    return out


def _limited(batches, limit: int | None):
    """Cut a stream of EvalBatches after `limit` images."""
    seen = 0
    for b in batches:
        if limit is not None and seen >= limit:
            return
        n = b.pixels.shape[0]
        if limit is not None and seen + n > limit:
            keep = limit - seen
            b.pixels, b.token_ids, b.labels, b.keys = b.pixels[:keep], b.token_ids[:keep], b.labels[:keep], b.keys[:keep]
            if b.depth is not None:
                b.depth = b.depth[:keep]
            n = keep
        seen += n
        yield b


def shard_batches(shards: list[Path], counts: list[int | None], done: set[str], *, batch_size: int = 256,
                  image_size: int = 256, patch_size: int = 16, num_registers: int = 0, num_workers: int = 4,
                  max_images: int | None = None) -> Iterator[ShardBatch]:
    """Labelled evaluation batches, one image shard at a time (its decoding spread over the
    loader workers), skipping the shards named in `done`; each shard ends with a `last` batch."""
    for path, quota in zip(shards, image_quota(counts, max_images)):
        if path.name in done:
            continue
        if quota != 0:
            stream = eval_loader([path], batch_size, image_size, patch_size, num_registers, num_workers)
            for b in _limited(stream, quota):
                yield ShardBatch(path.name, b.pixels, b.token_ids, b.labels, last=False, keys=list(b.keys))
        yield ShardBatch(path.name, torch.zeros(0, 0, 0), torch.zeros(0, 0, 4, dtype=torch.long), None, last=True)


def depth_batches(shards: list[Path], counts: list[int | None], *, batch_size: int = 64, image_size: int = 256,
                  patch_size: int = 16, num_registers: int = 0, num_workers: int = 4, max_images: int | None = None,
                  seed: int | None = None, shuffle_batches: int = 8,
                  depth_resize: str = "bilinear") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`(pixels (B, L, P), token_ids (B, L, 4), depth (B, S, S))` batches of the first
    `max_images` images. With `seed` (training): shard order permuted (full splits only) and
    images shuffled within a window of `shuffle_batches` consecutive batches. `depth_resize`:
    see `featnorm.data.eval_pipeline.crop_resize_depth`."""
    quota = image_quota(counts, max_images)
    todo = [p for p, q in zip(shards, quota) if q != 0]
    limit = None if max_images is None else sum(q for q in quota)
    if seed is not None and max_images is None:
        todo = [todo[i] for i in np.random.default_rng(seed).permutation(len(todo))]
    stream = _limited(eval_loader(todo, batch_size, image_size, patch_size, num_registers, num_workers,
                                  with_depth=True, depth_resize=depth_resize), limit)
    if seed is None:
        for b in stream:
            yield b.pixels, b.token_ids, b.depth
        return
    rng = np.random.default_rng(seed)
    while True:
        window = list(itertools.islice(stream, shuffle_batches))
        if not window:
            return
        px = torch.cat([b.pixels for b in window])
        ids = torch.cat([b.token_ids for b in window])
        depth = torch.cat([b.depth for b in window])
        order = torch.from_numpy(rng.permutation(px.shape[0]))
        for i in range(0, len(order), batch_size):
            j = order[i : i + batch_size]
            yield px[j], ids[j], depth[j]
