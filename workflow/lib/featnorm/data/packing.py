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

Placement (`Packer.pack`), three passes over the look-ahead buffer:
1. sorted oldest-carried-over first, then largest first, each image goes to the fullest
   row where it still fits (best fit) with its drawn number of context windows; if that
   fits nowhere, the number may move within the image's allowed range [lo, hi]
   (`windows.context_window_range`) to fit a row;
2. rows with room left take a leftover image by moving target windows of their images
   into the context (each image staying within its [lo, hi]);
3. each row shifts target windows into the context until both segments are about equally
   full.
Why 2 and 3: with the paper's ratios images demand context:target of about 0.6 while the
segments offer 128:192 = 0.67, so once the target segment is full ~10% of the context is
left empty (first fit: ~0.87-0.91 context). With 2 and 3, both segments reach ~0.96-0.97.
The price: every image's context count stays inside the paper's bounds, but the mean
context fraction rises from 0.383 (as drawn) to about 0.402 (measured by
benchmarks/data_pipeline.py). Images that fit in no row wait in the buffer for the next
pack.

`Packer(rebalance=False)` (config `data.packing_rebalance: false`) reproduces the reference's
mask ratios exactly: every image keeps its drawn number of context windows. Only pass 1 runs,
without its fallback: an image whose drawn split fits no row waits in the buffer (oldest
first in the next pack), as does any other image that does not fit. Best fit over the
look-ahead buffer still applies, so the mean context fraction equals the drawn one, at a
lower efficiency (about 0.90 context, 0.97 target at the paper's settings).
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


class Packer:
    """Look-ahead best-fit packer; deterministic (no randomness of its own).

    `add(item)` buffers an image; `ready()` says the buffer holds `lookahead` images;
    `pack()` places as many buffered images as fit into `rows` rows and returns the Pack;
    `flush()` packs what is left (dropping rows left empty).
    """

    def __init__(
        self,
        rows: int,
        context_length: int,
        target_length: int,
        window_size: int,
        patch_dim: int,
        num_registers: int = 0,
        lookahead: int | None = None,
        max_age: int = 4,
        rebalance: bool = True,
    ):
        w2 = window_size * window_size
        if context_length % w2 or target_length % w2:
            raise ValueError(f"segment lengths must be multiples of window_size**2 = {w2}")
        self.rows = rows
        self.w2 = w2
        self.window_size = window_size
        self.context_length = context_length
        self.target_length = target_length
        self.patch_dim = patch_dim
        self.num_registers = num_registers
        self.register_windows = -(-num_registers // w2)
        self.lookahead = lookahead if lookahead is not None else rows * 8
        self.max_age = max_age
        self.rebalance = rebalance  # False: every image keeps its drawn split (pass 1 only)
        self.buffer: list[PackItem] = []

    def add(self, item: PackItem) -> None:
        cap_c = self.context_length // self.w2 - self.register_windows
        cap_t = self.target_length // self.w2
        # with rebalancing some count in [lo, hi] must fit an empty row; without, the drawn one
        lo, hi = (item.lo, item.hi) if self.rebalance else (item.drawn, item.drawn)
        if lo > cap_c or item.num_windows - hi > cap_t:
            raise ValueError(
                f"image {item.key} ({item.gh}x{item.gw} patches) can never fit a row of "
                f"{self.context_length}+{self.target_length} tokens"
            )
        self.buffer.append(item)

    def ready(self) -> bool:
        return len(self.buffer) >= self.lookahead

    def __len__(self) -> int:
        return len(self.buffer)

    # ------------------------------------------------------------------ placement
    def _place(self, items: list[PackItem]) -> tuple[list[list[tuple[PackItem, int]]], list[PackItem]]:
        rows = self.rows
        rc = np.full(rows, self.context_length // self.w2, dtype=np.int64)
        rt = np.full(rows, self.target_length // self.w2, dtype=np.int64)
        placed: list[list[tuple[PackItem, int]]] = [[] for _ in range(rows)]
        left: list[PackItem] = []
        order = sorted(
            range(len(items)),
            key=lambda i: (-(items[i].age >= self.max_age), -items[i].num_windows, i),
        )
        reg = self.register_windows
        for i in order:
            it = items[i]
            t = it.num_windows
            # the drawn split first
            need_c, need_t = reg + it.drawn, t - it.drawn
            fit = (rc >= need_c) & (rt >= need_t)
            if fit.any():
                slack = np.where(fit, rc + rt, np.iinfo(np.int64).max)
                r = int(np.argmin(slack))
                n = it.drawn
            elif not self.rebalance:
                left.append(it)
                continue
            else:
                n_min = np.maximum(it.lo, t - rt)
                n_max = np.minimum(it.hi, rc - reg)
                fit = n_min <= n_max
                if not fit.any():
                    left.append(it)
                    continue
                slack = np.where(fit, rc + rt, np.iinfo(np.int64).max)
                r = int(np.argmin(slack))
                n = int(min(max(it.drawn, n_min[r]), n_max[r]))
            rc[r] -= reg + n
            rt[r] -= t - n
            placed[r].append((it, n))
        if self.rebalance:
            if left:
                left = self._fill_gaps(placed, rc, rt, left)
            self._balance(placed, rc, rt)
        return placed, left

    def _balance(self, placed, rc, rt) -> None:
        """Third pass: in each row move target windows into the context (within each image's
        [lo, hi]) until both segments are about equally full."""
        cw, tw = self.context_length // self.w2, self.target_length // self.w2
        for r, row in enumerate(placed):
            x = ((tw - int(rt[r])) * cw - (cw - int(rc[r])) * tw) // (cw + tw)
            self._shift_into_context(row, min(x, int(rc[r])), r, rc, rt)

    @staticmethod
    def _shift_into_context(row: list[tuple[PackItem, int]], x: int, r: int, rc, rt) -> None:
        """Move up to `x` target windows of row `r`'s images into its context, images with the
        most room below their `hi` first; updates the row's free windows `rc`, `rt`."""
        for j in sorted(range(len(row)), key=lambda j: -(row[j][0].hi - row[j][1])):
            if x <= 0:
                break
            o, on = row[j]
            d = min(x, o.hi - on)
            row[j] = (o, on + d)
            x -= d
            rc[r] -= d
            rt[r] += d

    def _fill_gaps(self, placed, rc, rt, left: list[PackItem]) -> list[PackItem]:
        """Second pass: rows whose target segment is full but context has room take a
        leftover image by moving target windows of their images into the context (each
        image's count stays within its [lo, hi]), freeing target room for the newcomer."""
        reg = self.register_windows
        left = sorted(left, key=lambda it: it.num_windows)
        still: list[PackItem] = []
        for it in left:
            t = it.num_windows
            done = False
            for r in np.argsort(-(rc + rt), kind="stable"):
                r = int(r)
                if rc[r] + rt[r] < reg + t:
                    break
                freeable = sum(o.hi - n for o, n in placed[r])
                best = None
                for n in sorted(range(it.lo, it.hi + 1), key=lambda k: (abs(k - it.drawn), -k)):
                    x = max(0, t - n - int(rt[r]))
                    if reg + n + x <= rc[r] and x <= freeable:
                        best = (n, x)
                        break
                if best is None:
                    continue
                n, x = best
                self._shift_into_context(placed[r], x, r, rc, rt)
                rc[r] -= reg + n
                rt[r] -= t - n
                placed[r].append((it, n))
                done = True
                break
            if not done:
                still.append(it)
        return still

    def _build(self, placed: list[list[tuple[PackItem, int]]]) -> Pack:
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

    def pack(self) -> Pack:
        """Place buffered images into one pack of `rows` rows; unplaced images wait (age + 1)."""
        placed, left = self._place(self.buffer)
        for it in left:
            it.age += 1
        self.buffer = left
        return self._build(placed)

    def flush(self) -> Iterator[Pack]:
        """Pack every remaining image; rows left empty are dropped (no all-padding rows)."""
        while self.buffer:
            placed, left = self._place(self.buffer)
            self.buffer = left
            placed = [row for row in placed if row]
            if not placed:  # cannot happen: `add` rejects images that fit no empty row
                raise RuntimeError("packer made no progress")
            yield self._build(placed)


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
