"""Evaluation and depth pipelines: one centre-cropped 256 x 256 image per row, in order.

`EvalBatch` fields (B images, P = (image_size / patch_size)**2 = 256 patch tokens,
R = num_registers):
    pixels     (B, R + P, patch_dim) float in [-1, 1]; register slots are zeros
    token_ids  (B, R + P, 4) long: registers first (register id 0..R-1), then the patches
               row-major (row = k // 16, col = k % 16); sample id = row index in the batch
    labels     (B,) long, from the `cls` key (-1 when a sample has none)
    depth      (B, S, S) float32 metres or None; S = depth_size (default image_size)
    keys       list of "shard/key"
`batch.packed()` gives the PackedBatch (context_length = R + P: everything is context),
and `batch.pixels[:, R:]` reshapes to the 16 x 16 grid.

Image and depth map get the same centre square crop; the image is resized bilinearly, the
depth map bilinearly with antialiasing (`depth_resize="bilinear"`, the reference: torchvision's
`Resize` on the depth tensor) or with nearest neighbour (`"nearest"`: no depth values invented
across object edges). Depth is returned at `depth_size` (256 by default), where the depth
probe computes its RMSE.
No shuffling: shards are read in order, split by rank and DataLoader worker as in
training, so every sample is seen exactly once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset

from ..batch import PackedBatch
from ..tokens import COL, NUM_IDS, PAD_ID, REGISTER, ROW, SAMPLE
from .patchify import patchify, pixels_to_unit
from .reader_slots import reader_slot, slot_shard_samples
from .resize import center_crop_box, center_crop_resize, open_image
from .shards import BadInputLog, resolve_shards

DEPTH_KEYS = ("depth.npy", "npy")


@dataclass
class EvalBatch:
    pixels: torch.Tensor
    token_ids: torch.Tensor
    labels: torch.Tensor
    depth: torch.Tensor | None
    keys: list

    def packed(self) -> PackedBatch:
        return PackedBatch(self.pixels, self.token_ids, self.pixels.shape[1])

    def to(self, device, non_blocking: bool = False) -> "EvalBatch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return EvalBatch(mv(self.pixels), mv(self.token_ids), mv(self.labels), mv(self.depth), self.keys)


def eval_token_ids(grid: int, num_registers: int = 0) -> torch.Tensor:
    """`(R + grid*grid, 4)` ids of one row (sample id 0)."""
    ids = torch.full((num_registers + grid * grid, NUM_IDS), PAD_ID, dtype=torch.long)
    ids[:, SAMPLE] = 0
    ids[:num_registers, REGISTER] = torch.arange(num_registers)
    k = torch.arange(grid * grid)
    ids[num_registers:, ROW] = k // grid
    ids[num_registers:, COL] = k % grid
    return ids


def load_depth(data: bytes) -> np.ndarray:
    a = np.load(io.BytesIO(data), allow_pickle=False)
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"depth array has shape {a.shape}, expected (H, W)")
    return a


DEPTH_RESIZE_MODES = ("bilinear", "nearest")


def crop_resize_depth(depth: np.ndarray, size: int, mode: str = "bilinear") -> np.ndarray:
    """`(H, W)` depth -> its centre square crop resized to `(size, size)` float32.

    "bilinear": torch's antialiased bilinear interpolation (half-pixel centres), which is what
    torchvision's `Resize` does to a tensor, as the reference resizes its depth maps;
    "nearest": PIL nearest neighbour, every output value one of the input's."""
    top, left, s = center_crop_box(*depth.shape)
    crop = np.ascontiguousarray(depth[top : top + s, left : left + s], dtype=np.float32)
    if mode == "nearest":
        return np.asarray(Image.fromarray(crop, mode="F").resize((size, size), Image.NEAREST), dtype=np.float32)
    if mode != "bilinear":
        raise ValueError(f"depth resize mode {mode!r} is not one of {DEPTH_RESIZE_MODES}")
    if crop.shape == (size, size):
        return crop
    x = torch.from_numpy(crop)[None, None]
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return y[0, 0].numpy()


def eval_sample(sample: dict, image_size: int, patch_size: int, with_depth: bool, depth_size: int,
                depth_resize: str = "bilinear") -> dict:
    """Process one raw sample; raises on damaged data (the caller reports it)."""
    data = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
    if data is None:
        raise ValueError("no image member")
    img = open_image(data)
    out = {"key": f"{sample['__shard__']}/{sample['__key__']}"}
    if with_depth:
        dkey = next((k for k in DEPTH_KEYS if k in sample), None)
        if dkey is None:
            raise ValueError("no depth.npy member")
        depth = load_depth(sample[dkey])
        if depth.shape != (img.size[1], img.size[0]):
            # crop both in the same relative frame: bring the image to the depth's size
            img = img.convert("RGB").resize((depth.shape[1], depth.shape[0]), Image.BILINEAR)
        out["depth"] = crop_resize_depth(depth, depth_size, depth_resize)
    pixels = center_crop_resize(img, image_size)
    g = image_size // patch_size
    out["patches"] = patchify(pixels, patch_size).reshape(g * g, -1)
    out["label"] = int(sample["cls"]) if "cls" in sample else -1
    return out


class EvalStream(IterableDataset):
    def __init__(self, shards, image_size, patch_size, with_depth, depth_size, rank, world_size,
                 depth_resize: str = "bilinear"):
        if depth_resize not in DEPTH_RESIZE_MODES:
            raise ValueError(f"depth resize mode {depth_resize!r} is not one of {DEPTH_RESIZE_MODES}")
        self.shards, self.image_size, self.patch_size = shards, image_size, patch_size
        self.with_depth, self.depth_size, self.depth_resize = with_depth, depth_size, depth_resize
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[dict]:
        slot, slots = reader_slot(self.rank, self.world_size)
        bad = BadInputLog()
        for sample in slot_shard_samples(self.shards, slot, slots, bad):
            try:
                yield eval_sample(sample, self.image_size, self.patch_size, self.with_depth, self.depth_size,
                                  self.depth_resize)
            except Exception as e:
                bad.add(sample["__shard__"], sample["__key__"], f"undecodable sample ({type(e).__name__}: {e})")


def collate_eval(items: list[dict], num_registers: int, patch_size: int) -> EvalBatch:
    b = len(items)
    p = np.stack([it["patches"] for it in items])
    g = int(round(np.sqrt(p.shape[1])))
    pixels = pixels_to_unit(torch.from_numpy(p))
    if num_registers:
        pixels = torch.cat([pixels.new_zeros(b, num_registers, pixels.shape[-1]), pixels], 1)
    ids = eval_token_ids(g, num_registers).repeat(b, 1, 1)
    ids[..., SAMPLE] = torch.arange(b)[:, None]
    labels = torch.tensor([it["label"] for it in items], dtype=torch.long)
    depth = torch.from_numpy(np.stack([it["depth"] for it in items])) if "depth" in items[0] else None
    return EvalBatch(pixels, ids, labels, depth, [it["key"] for it in items])


class _Collate:
    def __init__(self, num_registers, patch_size):
        self.num_registers, self.patch_size = num_registers, patch_size

    def __call__(self, items):
        return collate_eval(items, self.num_registers, self.patch_size)


def eval_batches(
    shards,
    batch_size: int = 256,
    image_size: int = 256,
    patch_size: int = 16,
    num_registers: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    with_depth: bool = False,
    depth_size: int | None = None,
    depth_resize: str = "bilinear",
) -> Iterator[EvalBatch]:
    """EvalBatches over all samples of `shards` (directory, pattern or list), in order."""
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    stream = EvalStream(resolve_shards(shards), image_size, patch_size, with_depth, depth_size or image_size, rank,
                        world_size, depth_resize)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=num_workers, collate_fn=_Collate(num_registers, patch_size))
    yield from loader


def depth_batches(shards, batch_size: int = 64, **kw) -> Iterator[EvalBatch]:
    """`eval_batches` with depth maps (keys `jpg` + `depth.npy`)."""
    return eval_batches(shards, batch_size, with_depth=True, **kw)
