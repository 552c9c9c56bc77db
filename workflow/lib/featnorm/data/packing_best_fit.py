"""The look-ahead best-fit packer (`data.packing: best-fit`; the default is first fit,
`packing_first_fit`). Row layout and the shared interface: `packing.RowPacker`.

Placement (`BestFitPacker.pack`), three passes over the look-ahead buffer:
1. sorted oldest-carried-over first, then largest first, each image goes to the fullest
   row where it still fits (best fit) with its drawn number of context windows; if that
   fits nowhere, the number may move within the image's allowed range [lo, hi]
   (`windows.context_window_range`) to fit a row;
2. rows with room left take a leftover image by moving target windows of their images
   into the context (each image staying within its [lo, hi]);
3. each row shifts target windows into the context until both segments are about equally
   full.
Passes 2 and 3 and the fallback of pass 1 run only with `rebalance=True`
(`data.packing_rebalance: true`). Why: with the paper's ratios images demand
context:target of about 0.6 while the segments offer 128:192 = 0.67, so once the target
segment is full part of the context is left empty. Rebalancing fills both segments to
~0.96, but the mean context fraction rises from 0.379 (as drawn) to about 0.40.
With `rebalance=False` every image keeps its drawn number of context windows; an image
that fits no row waits in the buffer (oldest first in the next pack). Measured fills of
every mode: benchmarks/data_pipeline.py.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .packing import Pack, PackItem, RowPacker


class BestFitPacker(RowPacker):
    """Look-ahead best-fit packer.

    `add(item)` buffers an image; `ready()` says the buffer holds `lookahead` images;
    `pack()` places as many buffered images as fit into `rows` rows and returns the Pack
    (the others wait, oldest placed first after `max_age` packs); `flush()` packs what is
    left (dropping rows left empty).
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
        super().__init__(rows, context_length, target_length, window_size, patch_dim, num_registers)
        self.lookahead = lookahead if lookahead is not None else rows * 8
        self.max_age = max_age
        self.rebalance = rebalance  # False: every image keeps its drawn split (pass 1 only)
        self.buffer: list[PackItem] = []

    def add(self, item: PackItem) -> None:
        # with rebalancing some count in [lo, hi] must fit an empty row; without, the drawn one
        lo, hi = (item.lo, item.hi) if self.rebalance else (item.drawn, item.drawn)
        self.check_fits(item, lo, hi)
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


