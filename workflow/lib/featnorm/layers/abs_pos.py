"""Learned factorized absolute position embeddings: a row table plus a column table."""

from __future__ import annotations

import torch
from torch import nn

from featnorm.tokens import COL, PAD_ID, ROW


class AbsolutePositionEmbedding(nn.Module):
    """`(B, L, 4)` ids -> `(B, L, dim)` embeddings `row_table[row] + col_table[col]`; zero on
    registers and padding (row/col PAD_ID). Rows and columns must be < `max_grid_size`."""

    def __init__(self, dim: int, max_grid_size: int = 64, init_std: float = 0.02):
        super().__init__()
        self.max_grid_size = max_grid_size
        self.row = nn.Parameter(torch.randn(max_grid_size, dim) * init_std)
        self.col = nn.Parameter(torch.randn(max_grid_size, dim) * init_std)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        rows, cols = token_ids[..., ROW], token_ids[..., COL]
        valid = (rows != PAD_ID) & (cols != PAD_ID)
        if not token_ids.is_cuda:  # a device-side check would force a sync on GPU
            if bool(((rows >= self.max_grid_size) | (cols >= self.max_grid_size)).any()):
                raise ValueError(
                    f"a patch row/col reaches {int(torch.maximum(rows, cols).max())}, beyond the "
                    f"absolute position table of max_grid_size = {self.max_grid_size}; raise "
                    "encoder/predictor.max_grid_size in the config"
                )
        emb = self.row[rows.clamp_min(0)] + self.col[cols.clamp_min(0)]
        return emb * valid[..., None].to(emb.dtype)
