"""Pre-norm transformer block: `x += attn(norm1(x)); x += mlp(norm2(x))`.

The MLP is dense or a DiffMoE (then `mlp(norm2(x))` is the sum of the gated outputs of the
experts that took the token, 0 if none did).
"""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import EncoderConfig, PredictorConfig
from featnorm.layers.attention import Attention
from featnorm.layers.diffmoe import DiffMoE
from featnorm.layers.mlp import make_mlp
from featnorm.layers.norms import make_norm


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig | PredictorConfig, where: str = "model"):
        super().__init__()
        self.norm1 = make_norm(cfg.block_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.attn = Attention(cfg.dim, cfg.num_heads, qk_norm=cfg.qk_norm, dyntanh=cfg.dyntanh)
        self.norm2 = make_norm(cfg.block_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.mlp = make_mlp(cfg.dim, cfg.mlp_ratio, cfg.moe, where)
        self.moe = isinstance(self.mlp, DiffMoE)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        real: torch.Tensor | None = None,
        return_keys: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x `(B, L, dim)`; mask `(B, 1, L, L)` bool; rope `(cos, sin)` tables or None; real
        `(B, L)` bool, the non-padding tokens (only a DiffMoE MLP uses it: padding never enters
        its token pool). With `return_keys` also the attention's head-averaged keys `(B, L, head_dim)`."""
        a = self.attn(self.norm1(x), mask, rope, return_keys=return_keys)
        a, keys = a if return_keys else (a, None)
        x = x + a
        h = self.norm2(x)
        x = x + (self.mlp(h, real) if self.moe else self.mlp(h))
        return (x, keys) if return_keys else x
