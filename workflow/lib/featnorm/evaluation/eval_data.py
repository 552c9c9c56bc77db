"""Evaluation batches from image shards: centre crop, `image_size` square, one image per row.

Built from `featnorm.data`'s readers and transforms (shard reading, centre crop + resize,
patchify). A row holds the encoder's register tokens (if any) and then the image's
`(image_size / patch_size)^2` patches in row-major order; ids follow `featnorm.tokens`
(sample id 0 in every row: rows never share attention). Pixels are in [-1, 1].

Two consumers:
- `shard_batches`: labelled batches tagged with their image shard (feature extraction,
  resumable per shard), shards split across DataLoader workers.
- `depth_batches`: `(pixels, token_ids, depth)` with the depth map cropped and resized
  exactly like the image (depth probe), optionally shuffled by a seed.
"""

from __future__ import annotations

import io
import itertools
import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from featnorm.data.patchify import patchify, pixels_to_unit
from featnorm.data.resize import center_crop_box, center_crop_resize, open_image
from featnorm.data.shards import BadInputLog, ShardError, iter_samples, read_manifest
from featnorm.data.train_pipeline import image_bytes
from featnorm.evaluation.features import ShardBatch
from featnorm.tokens import NUM_IDS, PAD_ID, REGISTER, ROW, COL, SAMPLE

log = logging.getLogger(__name__)

DEPTH_KEY = "depth.npy"


def eval_row_ids(grid: int, num_registers: int = 0) -> torch.Tensor:
    """`(num_registers + grid * grid, 4)` ids of one evaluation row."""
    ids = torch.full((num_registers + grid * grid, NUM_IDS), PAD_ID, dtype=torch.long)
    ids[:, SAMPLE] = 0
    ids[:num_registers, REGISTER] = torch.arange(num_registers)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ids[num_registers:, ROW] = rows.flatten()
    ids[num_registers:, COL] = cols.flatten()
    return ids


def image_to_row(image: np.ndarray, patch_size: int, num_registers: int = 0) -> torch.Tensor:
    """`(S, S, 3)` uint8 -> `(num_registers + (S/p)^2, p*p*3)` float pixels (registers zero)."""
    patches = patchify(image, patch_size)
    px = pixels_to_unit(patches.reshape(-1, patches.shape[-1]))
    if num_registers:
        px = torch.cat([px.new_zeros(num_registers, px.shape[1]), px])
    return px


def crop_resize_depth(depth: np.ndarray, size: int) -> np.ndarray:
    """The image's centre crop and bilinear resize, applied to an `(H, W)` depth map."""
    top, left, s = center_crop_box(*depth.shape[:2])
    crop = np.ascontiguousarray(depth[top : top + s, left : left + s], dtype=np.float32)
    return np.array(Image.fromarray(crop, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float32)


def decode_eval_sample(sample: dict, image_size: int, patch_size: int, num_registers: int, kind: str) -> dict:
    """One shard sample -> `{"pixels", "label"}` (kind 'labels') or `{"pixels", "depth"}` ('depth')."""
    data = image_bytes(sample)
    if data is None:
        raise ValueError(f"no image key among {sorted(k for k in sample if not k.startswith('__'))}")
    img = open_image(data)
    out = {"pixels": image_to_row(center_crop_resize(img, image_size), patch_size, num_registers)}
    if kind == "depth":
        if DEPTH_KEY not in sample:
            raise ValueError(f"no {DEPTH_KEY} entry")
        depth = np.load(io.BytesIO(sample[DEPTH_KEY]), allow_pickle=False)
        if depth.ndim == 3:
            depth = depth[..., 0] if depth.shape[-1] == 1 else depth[0]
        if depth.shape[:2] != (img.size[1], img.size[0]):
            # depth maps at another resolution than the image: bring them to the image's size first
            depth = np.asarray(Image.fromarray(depth.astype(np.float32), mode="F").resize(img.size, Image.BILINEAR))
        out["depth"] = torch.from_numpy(crop_resize_depth(depth, image_size))
    else:
        cls = sample.get("cls")
        out["label"] = int(cls.decode().strip()) if cls is not None else -1
    return out


class _EvalStream(IterableDataset):
    """Shard samples -> decoded eval rows, batched per shard; shards split over workers."""

    def __init__(self, shards: list[tuple[str, Path, int | None]], batch_size: int, image_size: int,
                 patch_size: int, num_registers: int, kind: str, seed: int | None = None):
        self.shards, self.batch_size, self.kind, self.seed = shards, batch_size, kind, seed
        self.image_size, self.patch_size, self.num_registers = image_size, patch_size, num_registers

    def _collate(self, name: str, rows: list[dict], last: bool) -> dict:
        grid = self.image_size // self.patch_size
        b = len(rows)
        out = {"shard": name, "last": last,
               "pixels": torch.stack([r["pixels"] for r in rows]) if b else torch.zeros(0, self.num_registers + grid * grid, self.patch_size**2 * 3),
               "token_ids": eval_row_ids(grid, self.num_registers).expand(b, -1, -1).clone()}
        if self.kind == "depth":
            out["depth"] = torch.stack([r["depth"] for r in rows]) if b else torch.zeros(0, self.image_size, self.image_size)
        else:
            out["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return out

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        bad = BadInputLog()
        rng = np.random.default_rng(self.seed) if self.seed is not None else None
        for i, (name, path, limit) in enumerate(self.shards):
            if i % nw != wid:
                continue
            rows: list[dict] = []
            samples = iter_samples(path, bad)
            if limit is not None:
                samples = itertools.islice(samples, limit)
            if rng is not None:  # depth-probe training: shuffle within the shard
                samples = list(samples)
                samples = iter([samples[j] for j in rng.permutation(len(samples))])
            for sample in samples:
                try:
                    rows.append(decode_eval_sample(sample, self.image_size, self.patch_size, self.num_registers, self.kind))
                except Exception as e:  # noqa: BLE001 - a bad sample is reported, not fatal
                    bad.add(name, sample.get("__key__", "?"), f"{type(e).__name__}: {e}")
                    continue
                if len(rows) == self.batch_size:
                    yield self._collate(name, rows, last=False)
                    rows = []
            yield self._collate(name, rows, last=True)


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


def _quota(counts: list[int | None], max_images: int | None) -> list[int | None]:
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


def _loader(stream: IterableDataset, num_workers: int) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=False)


def shard_batches(shards: list[Path], counts: list[int | None], done: set[str], *, batch_size: int = 256,
                  image_size: int = 256, patch_size: int = 16, num_registers: int = 0, num_workers: int = 4,
                  max_images: int | None = None) -> Iterator[ShardBatch]:
    """Labelled evaluation batches of the shards whose names are not in `done`."""
    quota = _quota(counts, max_images)
    todo = [(p.name, p, q) for p, q in zip(shards, quota) if p.name not in done]
    stream = _EvalStream(todo, batch_size, image_size, patch_size, num_registers, "labels")
    for b in _loader(stream, min(num_workers, len(todo))):
        yield ShardBatch(b["shard"], b["pixels"], b["token_ids"], b["labels"], b["last"])


def depth_batches(shards: list[Path], counts: list[int | None], *, batch_size: int = 64, image_size: int = 256,
                  patch_size: int = 16, num_registers: int = 0, num_workers: int = 4, max_images: int | None = None,
                  seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`(pixels (B, L, P), token_ids (B, L, 4), depth (B, S, S))` batches; with `seed`, shard
    order and samples within each shard are shuffled (a different seed per epoch)."""
    quota = _quota(counts, max_images)
    todo = [(p.name, p, q) for p, q in zip(shards, quota)]
    if seed is not None:
        todo = [todo[i] for i in np.random.default_rng(seed).permutation(len(todo))]
    stream = _EvalStream(todo, batch_size, image_size, patch_size, num_registers, "depth", seed)
    for b in _loader(stream, min(num_workers, len(todo))):
        if b["pixels"].shape[0]:
            yield b["pixels"], b["token_ids"], b["depth"]
