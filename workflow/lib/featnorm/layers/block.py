"""Pre-norm transformer block: `x += attn(norm1(x)); x += mlp(norm2(x))`."""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import EncoderConfig, PredictorConfig
from featnorm.layers.attention import Attention
from featnorm.layers.mlp import make_mlp
from featnorm.layers.norms import make_norm


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig | PredictorConfig, where: str = "model"):
        super().__init__()
        self.norm1 = make_norm(cfg.block_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.attn = Attention(cfg.dim, cfg.num_heads, qk_norm=cfg.qk_norm, dyntanh=cfg.dyntanh)
        self.norm2 = make_norm(cfg.block_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.mlp = make_mlp(cfg.dim, cfg.mlp_ratio, cfg.moe, where)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x `(B, L, dim)`; mask `(B, 1, L, L)` bool; rope `(cos, sin)` tables or None."""
        x = x + self.attn(self.norm1(x), mask, rope)
        return x + self.mlp(self.norm2(x))
