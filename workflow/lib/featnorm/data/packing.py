"""Packing images into fixed-length rows: a context segment, then a target segment.

Each row of a pack is `context_length + target_length` tokens. Lengths are in tokens and
multiples of `w2 = window_size**2`; placement works in whole windows, so every window's
tokens are adjacent and aligned at multiples of w2 inside each segment (SPEC section 2).

Row layout for one image placed in a row (per segment, images one after the other):
  context: [register slots (num_registers, padded up to whole windows)] [context windows]
  target:  [target windows]
Registers have zero pixels, register id 0..n-1, row/col PAD_ID and the image's sample id;
filler slots and unused slots are padding (all ids PAD_ID, pixels 0). Sample ids are
0..n-1 in a pack, unique per image (`packs_to_batch` offsets them across packs).

Two placements (`data.packing`), both on the interface of `RowPacker`:
- `first-fit` (default, the reference's and SPEC's): `packing_first_fit.FirstFitPacker`,
  online, images in arrival order, every image keeps its drawn split;
- `best-fit`: `packing_best_fit.BestFitPacker`, a look-ahead buffer placed largest first,
  optionally moving target windows into the context (`data.packing_rebalance`).
Measured fill of both: benchmarks/data_pipeline.py (README, docs/fidelity.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..batch import PackedBatch
from ..tokens import COL, NUM_IDS, PAD_ID, REGISTER, ROW, SAMPLE
from .windows import window_token_index


@dataclass
class PackItem:
    """One resized, patchified image waiting to be packed."""

    patches: np.ndarray  # (gh * gw, patch_dim) uint8, patches row-major
    gh: int
    gw: int
    permutation: np.ndarray  # (num_windows,) window order; the first n are the context
    lo: int  # allowed number of context windows: lo..hi
    hi: int
    drawn: int  # the number drawn uniformly in [lo, hi]
    key: Any = None  # where the image came from, e.g. (shard, key)
    age: int = 0  # packs this item has waited in the buffer

    @property
    def num_windows(self) -> int:
        return len(self.permutation)


@dataclass
class Pack:
    """A pack of rows, uint8 pixels (converted to float only when batched)."""

    pixels: np.ndarray  # (rows, L, patch_dim) uint8
    token_ids: np.ndarray  # (rows, L, 4) int64
    context_length: int
    keys: list = field(default_factory=list)  # keys[sample_id]
    num_context: list = field(default_factory=list)  # context windows per sample id
    num_windows: list = field(default_factory=list)  # windows per sample id (mask-ratio stats)

    @property
    def num_images(self) -> int:
        return len(self.keys)


class RowPacker:
    """What both packers share: the row geometry, the fit check and building a Pack.

    The interface the pipeline uses: `add(item)` takes an image (ValueError if it could
    never fit an empty row), `ready()` says a pack can be taken, `pack()` returns it,
    `flush()` yields what is left at the end of the data (rows left empty are dropped).
    Deterministic: no randomness of its own.
    """

    def __init__(self, rows: int, context_length: int, target_length: int, window_size: int, patch_dim: int,
                 num_registers: int = 0):
        w2 = window_size * window_size
        if context_length % w2 or target_length % w2:
            raise ValueError(f"segment lengths must be multiples of window_size**2 = {w2}")
        if rows < 1:
            raise ValueError(f"a pack needs at least one row, got rows = {rows}")
        self.rows = rows
        self.w2 = w2
        self.window_size = window_size
        self.context_length = context_length
        self.target_length = target_length
        self.patch_dim = patch_dim
        self.num_registers = num_registers
        self.register_windows = -(-num_registers // w2)

    @property
    def row_windows(self) -> tuple[int, int]:
        """`(context, target)` windows an empty row has room for (registers included in the context)."""
        return self.context_length // self.w2, self.target_length // self.w2

    def check_fits(self, item: PackItem, lo: int, hi: int) -> None:
        """ValueError unless some context count in [lo, hi] fits an empty row."""
        cap_c, cap_t = self.row_windows
        if self.register_windows + lo > cap_c or item.num_windows - hi > cap_t:
            raise ValueError(
                f"image {item.key} ({item.gh}x{item.gw} patches) can never fit a row of "
                f"{self.context_length}+{self.target_length} tokens"
            )

    def _build(self, placed: list[list[tuple[PackItem, int]]]) -> Pack:
        """A Pack of `len(placed)` rows; `placed[r]` lists (image, context windows) in row order."""
        rows = len(placed)
        lc, lt = self.context_length, self.target_length
        pixels = np.zeros((rows, lc + lt, self.patch_dim), dtype=np.uint8)
        ids = np.full((rows, lc + lt, NUM_IDS), PAD_ID, dtype=np.int64)
        keys: list = []
        num_context: list = []
        num_windows: list = []
        ws, w2 = self.window_size, self.w2
        nreg = self.num_registers
        reg_slots = self.register_windows * w2
        for r, row in enumerate(placed):
            c, t = 0, lc
            for it, n in row:
                sid = len(keys)
                keys.append(it.key)
                num_context.append(n)
                num_windows.append(it.num_windows)
                if nreg:
                    ids[r, c : c + nreg, SAMPLE] = sid
                    ids[r, c : c + nreg, REGISTER] = np.arange(nreg)
                    c += reg_slots
                widx = window_token_index(it.gh, it.gw, ws)
                ctx = widx[it.permutation[:n]].reshape(-1)
                tgt = widx[it.permutation[n:]].reshape(-1)
                for seg_idx, start in ((ctx, c), (tgt, t)):
                    end = start + len(seg_idx)
                    pixels[r, start:end] = it.patches[seg_idx]
                    ids[r, start:end, SAMPLE] = sid
                    ids[r, start:end, ROW] = seg_idx // it.gw
                    ids[r, start:end, COL] = seg_idx % it.gw
                c += len(ctx)
                t += len(tgt)
        return Pack(pixels, ids, lc, keys, num_context, num_windows)



def segment_lengths(max_context_tokens: int, max_target_tokens: int, window_size: int, num_registers: int) -> tuple[int, int]:
    """`(Lc, Lt)`: context segment = max_context_tokens + registers rounded up to whole windows."""
    w2 = window_size * window_size
    return max_context_tokens + (-(-num_registers // w2)) * w2, max_target_tokens


def packs_to_batch(packs: list[Pack] | list[dict]) -> PackedBatch:
    """Concatenate packs row-wise into a PackedBatch (float pixels in [-1, 1]); sample ids
    are offset so they stay unique across the whole batch. Accepts Packs or the dicts the
    DataLoader workers send (`pack_to_dict`)."""
    pix, ids = [], []
    offset = 0
    ctx_len = None
    for p in packs:
        d = p if isinstance(p, dict) else pack_to_dict(p)
        t = torch.as_tensor(d["token_ids"])
        if offset:
            t = t.clone()
            s = t[..., SAMPLE]
            s[s != PAD_ID] += offset
        offset += int(d["num_images"])
        pix.append(torch.as_tensor(d["pixels"]))
        ids.append(t)
        ctx_len = int(d["context_length"])
    token_ids = torch.cat(ids) if len(ids) > 1 else ids[0]
    pixels = to_unit_pixels(torch.cat(pix) if len(pix) > 1 else pix[0], token_ids)
    return PackedBatch(pixels, token_ids, ctx_len)


# just below 1/127.5 so that 255 maps to <= 1.0 in float32 (1/127.5 gives 1.0000001)
_SCALE = np.nextafter(np.float32(1 / 127.5), np.float32(0))


def to_unit_pixels(pixels: torch.Tensor, token_ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 `(B, L, D)` -> float32 in [-1, 1], with 0 on padding and register tokens
    (PackedBatch's convention). Works on any device, e.g. on the GPU for batches loaded
    with `TrainLoader(pixels="uint8")`; on the CPU it uses numpy, ~5x faster than torch's
    mixed-dtype kernels here."""
    not_patch = (token_ids[..., SAMPLE] == PAD_ID) | (token_ids[..., REGISTER] != PAD_ID)
    if pixels.device.type == "cpu":
        if out is None:
            out = torch.empty(pixels.shape, dtype=torch.float32)
        o = out.numpy()
        np.multiply(pixels.numpy(), _SCALE, out=o, dtype=np.float32)
        np.subtract(o, np.float32(1.0), out=o)
        o[not_patch.numpy()] = 0.0
        return out
    out = torch.mul(pixels, float(_SCALE), out=out) if out is not None else pixels.to(torch.float32).mul_(float(_SCALE))
    out.sub_(1.0)
    return out.masked_fill_(not_patch[..., None], 0.0)  # no boolean indexing: no device sync


def pack_to_dict(p: Pack) -> dict:
    return {
        "pixels": p.pixels,
        "token_ids": p.token_ids,
        "context_length": p.context_length,
        "num_images": p.num_images,
        "keys": p.keys,
        "num_context": p.num_context,
        "num_windows": p.num_windows,
    }


def packing_efficiency(token_ids: torch.Tensor | np.ndarray, context_length: int) -> tuple[float, float]:
    """Fraction of non-padding slots in the context and in the target segment."""
    s = torch.as_tensor(token_ids)[..., SAMPLE] != PAD_ID
    return float(s[:, :context_length].float().mean()), float(s[:, context_length:].float().mean())
