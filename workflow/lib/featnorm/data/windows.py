"""Window geometry and the context/target split (SPEC section 2, step 4).

The patch grid `(gh, gw)` is cut into non-overlapping `ws x ws` windows, numbered row-major
over the window grid. A window's tokens are its patches in row-major order inside the
window; `window_token_index` gives, for every window, the flat patch indices (row * gw + col)
of its `ws**2` tokens, so the tokens of a window stay adjacent wherever they are copied.
"""

from __future__ import annotations

import functools

import numpy as np

from .resize import round_half_up


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
    """`(lo, hi)`: the allowed number of context windows of an image with `num_windows` windows.

    lo = round(T * ratio_min) (at least 1), hi = min(round(T * ratio_max), T - 1,
    max_context_windows). When `max_target_windows` is given, lo is raised so the targets fit.
    """
    t = num_windows
    lo = max(1, round_half_up(t * ratio_min))
    hi = min(round_half_up(t * ratio_max), t - 1, max_context_windows)
    if max_target_windows is not None:
        lo = max(lo, t - max_target_windows)
    hi = max(hi, 1)
    if lo > hi:
        raise ValueError(
            f"an image of {t} windows cannot be split: needs between {lo} and {hi} context windows; "
            "raise data.max_context_tokens / max_target_tokens or lower data.max_side"
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
