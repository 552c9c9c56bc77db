"""The training pipeline: shards -> decoded, resized, split images -> packed batches.

Usage (the trainer)::

    loader = TrainLoader.from_config(run_cfg, rank=0, world_size=1)
    loader.load_state_dict(ckpt["data"])         # optional: resume exactly
    for batch in loader:                         # infinite; epochs follow each other
        ...                                      # batch: PackedBatch, batch_size rows
        ckpt["data"] = loader.state_dict()       # state after the last batch handed out

State (`state_dict()`): `{"epoch": e, "batch_in_epoch": b, "images_seen": n, "seed": s}`.
`epoch` counts passes over the data; `batch_in_epoch` is how many batches of that epoch
were already handed out. A loader given that state regenerates epoch e with the same
seed and silently drops its first b batches (cheap packing work, but images are decoded
again), so the batches after a resume are exactly those an uninterrupted run would have
seen. `images_seen` is the running image count (epochs counted in images: one epoch =
`loader.dataset_size` images, from manifest.json, None without a manifest).
`loader.bad_inputs` collects (shard, key, reason) of every skipped sample.

Determinism: epoch e shuffles the shard list with seed (seed, e); shards are split by
distributed rank, then by DataLoader worker (`slot = rank * workers + worker`, shard
`i` goes to slot `i % slots`); with fewer shards than slots every slot reads all shards and
keeps sample `j` when `j % slots == slot`, so no image is seen twice in an epoch. Each slot
has its own shuffle buffer and augmentation stream seeded by (seed, e, slot), and the
DataLoader hands out worker results in a fixed round-robin order, so the batch sequence
depends only on the seed, the shards and the number of workers and ranks.

Batches hold exactly `batch_size` rows (rows of several packs of `rows_per_pack` rows)
except the last of an epoch, which may be smaller; no row is all padding. Sample ids are
renumbered 0..n-1 within each batch, so `num_images(batch)` = max sample id + 1. Note for
multi-GPU: ranks may get different batch counts per epoch; stop all ranks at the smallest.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..batch import PackedBatch
from ..config import RunConfig
from ..tokens import PAD_ID, SAMPLE
from .packing import PackItem, RowPacker, segment_lengths, to_unit_pixels
from .packing_best_fit import BestFitPacker
from .packing_first_fit import FirstFitPacker
from .patchify import patchify
from .reader_slots import reader_slot, slot_shard_samples
from .resize import decode_resized, decode_resized_torchvision, keep_image, open_image, random_resize_shape
from .shards import BadInputLog, manifest_num_samples, resolve_shards
from .windows import UnsplittableImage, context_window_range

log = logging.getLogger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class PipelineSpec:
    """Everything the per-image transform and the packer need (from DataConfig + model)."""

    patch_size: int
    window_size: int
    num_registers: int
    min_side: int
    max_side: int
    context_ratio_min: float
    context_ratio_max: float
    max_context_tokens: int
    max_target_tokens: int
    rows_per_pack: int
    shuffle_buffer: int
    packing: str  # "first-fit" (the reference) or "best-fit" (featnorm.data.packing)
    packing_rebalance: bool  # best-fit only; False: every image keeps its drawn context count
    decode: str = "pil"  # "pil" or "torchvision" (featnorm.data.resize)

    @classmethod
    def defaults(cls, **changes) -> "PipelineSpec":
        """The paper's settings (RunConfig's defaults, the one place they live), with `changes`."""
        return dataclasses.replace(cls.from_config(RunConfig()), **changes)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "PipelineSpec":
        d, m = cfg.data, cfg.model
        return cls(
            patch_size=m.patch_size,
            window_size=m.window_size,
            num_registers=m.encoder.num_registers,
            min_side=d.min_side,
            max_side=d.max_side,
            context_ratio_min=d.context_ratio_min,
            context_ratio_max=d.context_ratio_max,
            max_context_tokens=d.max_context_tokens,
            max_target_tokens=d.max_target_tokens,
            rows_per_pack=d.rows_per_pack,
            shuffle_buffer=d.shuffle_buffer,
            packing=d.packing,
            packing_rebalance=d.packing_rebalance,
            decode=d.decode,
        )

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * 3

    @property
    def segments(self) -> tuple[int, int]:
        return segment_lengths(self.max_context_tokens, self.max_target_tokens, self.window_size, self.num_registers)

    @property
    def max_pixels(self) -> int:
        """The resize's pixel cap: the whole patches of a max_side square (as the reference)."""
        return (self.max_side // self.patch_size) ** 2 * self.patch_size**2

    def packer(self, rows: int | None = None) -> RowPacker:
        lc, lt = self.segments
        args = (rows or self.rows_per_pack, lc, lt, self.window_size, self.patch_dim, self.num_registers)
        if self.packing == "first-fit":
            if self.packing_rebalance:
                raise ValueError("packing_rebalance needs packing='best-fit' (first fit keeps every drawn split)")
            return FirstFitPacker(*args)
        if self.packing == "best-fit":
            return BestFitPacker(*args, rebalance=self.packing_rebalance)
        raise ValueError(f"packing must be 'first-fit' or 'best-fit', got {self.packing!r}")


def image_bytes(sample: dict) -> bytes | None:
    for k in IMAGE_KEYS:
        if k in sample:
            return sample[k]
    return None


def make_item(data: bytes, key: str, rng: np.random.Generator, spec: PipelineSpec) -> PackItem | None:
    """Steps 1-4 for one encoded image: None if it is too small (step 1). Raises on
    undecodable data (the caller reports it)."""
    img = open_image(data)
    w, h = img.size
    if not keep_image(h, w, spec.min_side):
        return None
    unit = spec.patch_size * spec.window_size
    size = random_resize_shape(h, w, rng, spec.min_side, spec.max_side, unit, spec.max_pixels)
    pixels = decode_resized(img, size) if spec.decode == "pil" else decode_resized_torchvision(data, size)
    return item_from_pixels(pixels, key, rng, spec)


def item_from_pixels(pixels: np.ndarray, key, rng: np.random.Generator, spec: PipelineSpec) -> PackItem:
    """Steps 3-4 for a resized `(H, W, 3)` uint8 image."""
    p, ws = spec.patch_size, spec.window_size
    patches = patchify(pixels, p)
    gh, gw = patches.shape[:2]
    t = (gh // ws) * (gw // ws)
    w2 = ws * ws
    lo, hi = context_window_range(
        t, spec.context_ratio_min, spec.context_ratio_max, spec.max_context_tokens // w2, spec.max_target_tokens // w2
    )
    drawn = int(rng.integers(lo, hi + 1))
    perm = rng.permutation(t)
    return PackItem(patches.reshape(gh * gw, -1), gh, gw, perm, lo, hi, drawn, key)


def slot_samples(shards, epoch: int, seed: int, slot: int, slots: int, bad: BadInputLog) -> Iterator[dict]:
    """The raw samples one (rank, worker) slot reads in an epoch, before shuffling: the
    shards in an order drawn per epoch, split among the slots (`reader_slots`)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    return slot_shard_samples([shards[i] for i in order], slot, slots, bad)


def shuffled(it: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A seeded shuffle buffer of `size` items."""
    buf: list = []
    for x in it:
        buf.append(x)
        if len(buf) >= size:
            k = int(rng.integers(len(buf)))
            buf[k], buf[-1] = buf[-1], buf[k]
            yield buf.pop()
    order = rng.permutation(len(buf))
    for k in order:
        yield buf[k]


class PackStream(IterableDataset):
    """One epoch of packs (dicts of numpy arrays, uint8 pixels) for one rank; splits its
    shards among DataLoader workers."""

    def __init__(self, shards: list, spec: PipelineSpec, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        self.shards, self.spec, self.seed, self.epoch = shards, spec, seed, epoch
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict]:
        slot, slots = reader_slot(self.rank, self.world_size)
        bad = BadInputLog()
        spec = self.spec
        shuffle_rng = np.random.default_rng([self.seed, self.epoch, slot, 0])
        aug_rng = np.random.default_rng([self.seed, self.epoch, slot, 1])
        packer = spec.packer()
        reported = 0

        def out(pack) -> dict:
            nonlocal reported
            d = {
                "pixels": pack.pixels,
                "token_ids": pack.token_ids,
                "context_length": pack.context_length,
                "num_images": pack.num_images,
                "keys": pack.keys,
                "bad": bad.records[reported:],
            }
            reported = len(bad.records)
            return d

        samples = shuffled(slot_samples(self.shards, self.epoch, self.seed, slot, slots, bad), spec.shuffle_buffer, shuffle_rng)
        for sample in samples:
            key = sample["__key__"]
            data = image_bytes(sample)
            if data is None:
                bad.add(sample["__shard__"], key, f"no image member (has {sorted(k for k in sample if not k.startswith('__'))})")
                continue
            try:
                item = make_item(data, f"{sample['__shard__']}/{key}", aug_rng, spec)
            except UnsplittableImage:
                raise  # the data settings, not the image, are at fault
            except Exception as e:  # PIL raises many types for damaged files
                bad.add(sample["__shard__"], key, f"undecodable image ({type(e).__name__}: {e})")
                continue
            if item is None:
                continue
            packer.add(item)
            if packer.ready():
                yield out(packer.pack())
        for pack in packer.flush():
            yield out(pack)
        if len(bad.records) > reported:  # bad samples after the last pack
            yield {"pixels": None, "bad": bad.records[reported:]}


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _identity(x):
    return x


def num_images(batch: PackedBatch) -> int:
    """Images in a batch from TrainLoader (sample ids are 0..n-1)."""
    return int(batch.token_ids[..., SAMPLE].max().item()) + 1


class TrainLoader:
    """Infinite iterator of PackedBatch over epochs; see the module docstring."""

    def __init__(
        self,
        shards,
        spec: PipelineSpec,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pixels: str = "float",
        drop_last: bool = False,
        pin_memory: bool = False,
    ):
        self.shard_spec = shards
        self.shards = resolve_shards(shards)
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.rank, self.world_size = rank, world_size
        if pixels not in ("float", "uint8"):
            raise ValueError(f"pixels must be 'float' or 'uint8', got {pixels!r}")
        self.pixels = pixels
        self.drop_last = drop_last
        # page-locked batches, so that copies to the GPU are asynchronous (no effect without CUDA)
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.dataset_size = manifest_num_samples(shards) if not isinstance(shards, (list, tuple)) else None
        self.bad_inputs = BadInputLog()
        self.epoch = 0
        self.batch_in_epoch = 0
        self.images_seen = 0

    @classmethod
    def from_config(cls, cfg: RunConfig, rank: int = 0, world_size: int = 1, **kw) -> "TrainLoader":
        return cls(
            cfg.data.train_shards,
            PipelineSpec.from_config(cfg),
            batch_size=cfg.train.batch_size,
            seed=cfg.seed,
            num_workers=kw.pop("num_workers", cfg.data.num_workers),
            rank=rank,
            world_size=world_size,
            **kw,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "images_seen": self.images_seen, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            log.warning("resuming data state saved with seed %s under seed %s", state["seed"], self.seed)
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.images_seen = int(state.get("images_seen", 0))

    # ------------------------------------------------------------------ iteration
    def packs(self, epoch: int) -> Iterator[dict]:
        stream = PackStream(self.shards, self.spec, self.seed, epoch, self.rank, self.world_size)
        if self.num_workers == 0:
            it = iter(stream)
        else:
            it = iter(
                DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=self.num_workers,
                    worker_init_fn=_worker_init,
                    prefetch_factor=4,
                    collate_fn=_identity,
                )
            )
        for d in it:
            for shard, key, reason in d["bad"]:
                self.bad_inputs.records.append((shard, key, reason))
            if d["pixels"] is not None:
                yield d

    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[PackedBatch]:
        """The batches of one epoch, the first `skip` dropped (not converted to float)."""
        pending: deque = deque()  # [pixels (n, L, D) uint8, ids (n, L, 4)] with batch-wide sample ids
        rows = 0
        offset = 0
        b = 0
        lc = self.spec.segments[0]

        def make(n: int, keep: bool) -> PackedBatch | None:
            nonlocal rows
            p0, t0 = pending[0]
            ids = np.empty((n,) + t0.shape[1:], dtype=np.int64) if keep else None
            dtype = torch.float32 if self.pixels == "float" else torch.uint8
            pix = torch.empty((n,) + p0.shape[1:], dtype=dtype, pin_memory=self.pin_memory) if keep else None
            r = 0
            while r < n:
                p, t = pending[0]
                k = min(n - r, len(p))
                if keep:
                    ids[r : r + k] = t[:k]
                    src = torch.from_numpy(p[:k])
                    if self.pixels == "float":
                        to_unit_pixels(src, torch.from_numpy(t[:k]), out=pix[r : r + k])
                    else:
                        pix[r : r + k] = src
                if k == len(p):
                    pending.popleft()
                else:
                    pending[0] = [p[k:], t[k:]]
                r += k
            rows -= n
            if not keep:
                return None
            s = ids[..., SAMPLE]
            real = s != PAD_ID
            lo = int(s[real].min())
            present = np.zeros(int(s[real].max()) - lo + 1, dtype=bool)
            present[s[real] - lo] = True
            s[real] = (np.cumsum(present) - 1)[s[real] - lo]  # renumber to 0..n-1
            token_ids = torch.from_numpy(ids)
            return PackedBatch(pix, token_ids.pin_memory() if self.pin_memory else token_ids, lc)

        for d in self.packs(epoch):
            t = np.array(d["token_ids"], dtype=np.int64, copy=True)
            s = t[..., SAMPLE]
            s[s != PAD_ID] += offset
            offset += int(d["num_images"])
            pending.append([np.asarray(d["pixels"]), t])
            rows += t.shape[0]
            while rows >= self.batch_size:
                batch = make(self.batch_size, keep=b >= skip)
                if batch is not None:
                    yield batch
                b += 1
        if rows and not self.drop_last:
            batch = make(rows, keep=b >= skip)
            if batch is not None:
                yield batch

    def __iter__(self) -> Iterator[PackedBatch]:
        while True:
            epoch, skip = self.epoch, self.batch_in_epoch
            for batch in self.epoch_batches(epoch, skip):
                self.batch_in_epoch += 1
                self.images_seen += num_images(batch)
                yield batch
            self.epoch = epoch + 1
            self.batch_in_epoch = 0


__all__ = [
    "PipelineSpec",
    "PackStream",
    "TrainLoader",
    "make_item",
    "item_from_pixels",
    "num_images",
    "shuffled",
    "slot_samples",
]
