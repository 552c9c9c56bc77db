"""The online first-fit packer (`data.packing: first-fit`, the default; SPEC section 2).

The reference's rule: images are taken in arrival order and never reordered; each goes
into the first row of the current pack (row 0 first) where both its context (registers
included) and its target windows still fit, with the number of context windows it drew.
When it fits no row, the current pack is complete: it is emitted with all its `rows` rows
(none can be empty then, since any image fits an empty row) and a fresh pack is started
with this image in row 0. An image that could never fit an empty row is refused by `add`
with ValueError (the reference raises too; at its settings none exists).

Differences from the reference's packer, both outside the placement rule:
- the reference drops the image that triggers the emission (its re-append after the reset
  never runs), about one image per pack; here that image opens the next pack, so an
  epoch sees every image once;
- at the end of the data `flush()` emits the last, partial pack without its empty rows
  (the reference streams forever and never ends a pack early).
Row layout and the shared interface: `packing.RowPacker`.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np

from .packing import Pack, PackItem, RowPacker


class FirstFitPacker(RowPacker):
    """Online first fit: `add(item)` places the image at once (its drawn split kept);
    `ready()` says a completed pack waits; `pack()` returns it; `flush()` yields what is left."""

    def __init__(self, rows: int, context_length: int, target_length: int, window_size: int, patch_dim: int,
                 num_registers: int = 0):
        super().__init__(rows, context_length, target_length, window_size, patch_dim, num_registers)
        self._done: deque[Pack] = deque()
        self._reset()

    def _reset(self) -> None:
        cap_c, cap_t = self.row_windows
        self._free_c = np.full(self.rows, cap_c, dtype=np.int64)  # free windows per row
        self._free_t = np.full(self.rows, cap_t, dtype=np.int64)
        self._placed: list[list[tuple[PackItem, int]]] = [[] for _ in range(self.rows)]
        self._count = 0

    def add(self, item: PackItem) -> None:
        self.check_fits(item, item.drawn, item.drawn)
        need_c = self.register_windows + item.drawn
        need_t = item.num_windows - item.drawn
        fits = (self._free_c >= need_c) & (self._free_t >= need_t)
        if not fits.any():
            self._done.append(self._build(self._placed))
            self._reset()
            r = 0
        else:
            r = int(np.argmax(fits))  # the first row that fits
        self._free_c[r] -= need_c
        self._free_t[r] -= need_t
        self._placed[r].append((item, item.drawn))
        self._count += 1

    def ready(self) -> bool:
        return bool(self._done)

    def __len__(self) -> int:
        """Images placed in the current, not yet complete pack."""
        return self._count

    def pack(self) -> Pack:
        """The oldest completed pack (IndexError if none: check `ready()`)."""
        return self._done.popleft()

    def flush(self) -> Iterator[Pack]:
        """The completed packs, then the current one without its empty rows."""
        while self._done:
            yield self._done.popleft()
        rows = [row for row in self._placed if row]
        self._reset()
        if rows:
            yield self._build(rows)
