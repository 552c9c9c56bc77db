"""Predictor batch repeat: draw random subsets of windows for r copies of the batch.

Each segment of a packed row is a sequence of windows of `window_size**2` adjacent tokens.
For each of r copies, `sample_windows` draws k windows per row, either independently per
copy (with replacement across copies) or as r disjoint chunks of one permutation (without
replacement). Windows made only of padding get keys above every real window's key, so they
are drawn only after all real windows. Vectorised over rows and copies.

Register windows (an image's register slots, at the start of its context part) are not
sampled: the objective draws them last, like padding, and wipes any it drew, then passes
every register window of the row to every copy (`register_window_index`).
"""

from __future__ import annotations

import torch

from featnorm.tokens import is_padding, is_register


def padding_windows(token_ids: torch.Tensor, window_size: int) -> torch.Tensor:
    """`(B, L, 4)` ids of one segment -> `(B, L / window_size**2)` bool, True on all-padding windows."""
    B, L, _ = token_ids.shape
    w2 = window_size**2
    if L % w2:
        raise ValueError(f"segment length {L} is not a multiple of window_size**2 = {w2}")
    return is_padding(token_ids).view(B, L // w2, w2).all(-1)


def register_windows(token_ids: torch.Tensor, window_size: int) -> torch.Tensor:
    """`(B, L, 4)` ids of one segment -> `(B, L / window_size**2)` bool, True on windows holding a register."""
    B, L, _ = token_ids.shape
    w2 = window_size**2
    return is_register(token_ids).view(B, L // w2, w2).any(-1)


def register_window_index(reg_windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, W)` register-window flags -> (`(B, M)` indices of each row's register windows, in
    order, then filler; `(B, M)` bool, False on filler), M the most register windows of a row."""
    count = reg_windows.sum(1)
    M = int(count.max()) if reg_windows.numel() else 0
    order = torch.sort(reg_windows.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :M]
    return order, torch.arange(M, device=reg_windows.device)[None] < count[:, None]


def windows_per_copy(num_windows: int, capacity: float, num_copies: int = 1, with_replacement: bool = True) -> int:
    """Windows each copy draws: round(capacity x windows) as the reference (Python's round,
    half to even), at least 1. Without replacement, at most floor(windows / num_copies), so
    r copies at capacity <= 1/r stay disjoint."""
    k = max(1, round(capacity * num_windows))
    if not with_replacement:
        k = min(k, max(1, num_windows // num_copies))
    return k


def sample_windows(
    last_windows: torch.Tensor,
    num_copies: int,
    k: int,
    with_replacement: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`(B, W)` flags of the windows to draw last (all-padding windows, registers) ->
    `(num_copies, B, k)` window indices."""
    B, W = last_windows.shape
    device = last_windows.device
    if k > W:
        raise ValueError(f"cannot draw {k} windows from a segment of {W} windows")
    if not with_replacement and num_copies * k > W:
        raise ValueError(
            f"sampling without replacement needs batch_repeat x windows per copy = {num_copies} x {k} "
            f"<= {W} windows in the segment; lower the capacity or batch_repeat, or sample with replacement"
        )
    gen_device = generator.device if generator is not None else device
    n = num_copies if with_replacement else 1
    keys = torch.rand(n, B, W, generator=generator, device=gen_device).to(device)
    keys = keys + 2.0 * last_windows.to(keys.dtype)  # others in [0, 1), drawn-last ones in [2, 3)
    if with_replacement:
        return keys.topk(k, dim=-1, largest=False, sorted=True).indices
    perm = keys[0].argsort(-1)[:, : num_copies * k]
    return perm.view(B, num_copies, k).transpose(0, 1)


def gather_windows(x: torch.Tensor, windows: torch.Tensor, window_size: int) -> torch.Tensor:
    """Gather the tokens of chosen windows for every copy.

    x `(B, L, C)` (features or ids of one segment), windows `(r, B, k)` ->
    `(r * B, k * window_size**2, C)`, copy-major (row j * B + b is copy j of row b).
    """
    r, B, k = windows.shape
    w2 = window_size**2
    tokens = (windows[..., None] * w2 + torch.arange(w2, device=windows.device)).flatten(-2)  # (r, B, k*w2)
    rows = torch.arange(B, device=windows.device)[None, :, None]
    return x[rows, tokens].flatten(0, 1)
