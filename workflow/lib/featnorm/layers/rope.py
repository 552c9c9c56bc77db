"""2-D rotary position embedding (RoPE) for packed rows of patches.

Each head's `head_dim` channels are split in two halves: the first half is rotated by the
token's patch row, the second by its patch column, each as 1-D RoPE with base 10000
(rotate-half pairing inside each half). Tokens whose row/col is PAD_ID (registers and
padding) get no rotation. The tables are built once per forward (`RoPE2D.tables`) and
shared by all blocks (`apply_rope`); token merging rebuilds them from fractional positions
(`RoPE2D.tables_from_positions`).
"""

from __future__ import annotations

import torch
from torch import nn

from featnorm.tokens import COL, PAD_ID, ROW


class RoPE2D(nn.Module):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 4 != 0:
            raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        quarter = head_dim // 4
        # 1-D RoPE over an axis of head_dim / 2 channels: frequencies base^(-2i / (head_dim / 2)).
        freqs = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def tables(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, L, 4)` ids -> `(cos, sin)`, each `(B, 1, L, head_dim)` float32."""
        rows, cols = token_ids[..., ROW], token_ids[..., COL]
        valid = (rows != PAD_ID) & (cols != PAD_ID)
        return self.tables_from_positions(torch.stack((rows, cols), -1), valid)

    def tables_from_positions(self, pos: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, L, 2)` (row, col) positions, integer or fractional, and `(B, L)` bool (False: no
        rotation) -> `(cos, sin)`, each `(B, 1, L, head_dim)` float32."""
        pos = pos.float().masked_fill(~valid[..., None], 0.0)
        angles = pos[..., None] * self.freqs  # (B, L, 2, quarter)
        angles = torch.cat((angles, angles), -1).flatten(-2)  # (B, L, head_dim): [row | row | col | col]
        return angles.cos()[:, None], angles.sin()[:, None]


def _rotate_half_per_axis(x: torch.Tensor) -> torch.Tensor:
    """`(..., head_dim)` -> for each axis half [x1 | x2] gives [-x2 | x1]."""
    x4 = x.unflatten(-1, (2, 2, x.shape[-1] // 4))
    return torch.stack((-x4[..., 1, :], x4[..., 0, :]), -2).flatten(-3)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `(B, heads, L, head_dim)` queries or keys by tables from `RoPE2D.tables`."""
    return (x * cos + _rotate_half_per_axis(x) * sin).to(x.dtype)
