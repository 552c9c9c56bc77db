"""Window geometry and the context/target split (SPEC section 2, step 4).

The patch grid `(gh, gw)` is cut into non-overlapping `ws x ws` windows, numbered row-major
over the window grid. A window's tokens are its patches in row-major order inside the
window; `window_token_index` gives, for every window, the flat patch indices (row * gw + col)
of its `ws**2` tokens, so the tokens of a window stay adjacent wherever they are copied.
"""

from __future__ import annotations

import functools

import numpy as np


class UnsplittableImage(ValueError):
    """The data settings leave no valid context/target split for an image of this size (a
    configuration problem, not a bad input: the training pipeline stops on it)."""


@functools.lru_cache(maxsize=256)
def window_token_index(gh: int, gw: int, ws: int) -> np.ndarray:
    """`(num_windows, ws * ws)` flat patch indices (row * gw + col), windows row-major."""
    if gh % ws or gw % ws:
        raise ValueError(f"patch grid {gh}x{gw} is not a multiple of the window size {ws}")
    r = np.arange(gh).reshape(gh // ws, ws, 1, 1)
    c = np.arange(gw).reshape(1, 1, gw // ws, ws)
    flat = r * gw + c  # (gh/ws, ws, gw/ws, ws)
    idx = flat.transpose(0, 2, 1, 3).reshape(-1, ws * ws)
    idx.setflags(write=False)
    return idx


def context_window_range(
    num_windows: int,
    ratio_min: float,
    ratio_max: float,
    max_context_windows: int,
    max_target_windows: int | None = None,
) -> tuple[int, int]:
    """`(lo, hi)`: the number of context windows of an image with `num_windows` windows is
    drawn uniformly from lo..hi (the reference's rule).

    lo = round(T * ratio_min), at least 1; hi = min(round(T * ratio_max), T - 1,
    max_context_windows), with Python's `round` (half to even: round(2.5) = 2). When lo >= hi
    the count is hi (lo = hi); an image of 2 windows gets 1 context window. When
    `max_target_windows` is given, lo is raised so the targets fit their segment (the
    reference's segments always hold them at its settings, where this changes nothing); if
    then lo > hi the image cannot be split and UnsplittableImage (a ValueError) says which
    setting to change.
    """
    t = num_windows
    hi = max(min(int(round(t * ratio_max)), t - 1, max_context_windows), 1)
    lo = min(max(1, int(round(t * ratio_min))), hi)
    if max_target_windows is not None and t - max_target_windows > lo:
        lo = t - max_target_windows
        if lo > hi:
            raise UnsplittableImage(
                f"an image of {t} windows cannot be split: its {t - hi}+ target windows exceed the "
                f"{max_target_windows} a row holds; raise data.max_target_tokens / max_context_tokens "
                "or lower data.max_side"
            )
    return lo, hi


def split_windows(
    num_windows: int, num_context: int, permutation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`(context_windows, target_windows)`: the first `num_context` windows of `permutation`
    are the context, the rest the targets (disjoint; together every window once)."""
    if permutation.shape != (num_windows,):
        raise ValueError("permutation must hold every window once")
    return permutation[:num_context], permutation[num_context:]
