"""Multi-head self-attention over packed rows.

A row of a packed batch holds several images; `attention_mask` lets a token attend only to
tokens of its own sample and never to padding. Padding tokens attend to themselves only,
so every query has at least one key and nothing becomes NaN. The mask and the RoPE tables
are built once per forward by the model and shared by all blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.config import DynTanhConfig
from featnorm.layers.norms import make_norm
from featnorm.layers.rope import apply_rope
from featnorm.tokens import PAD_ID, SAMPLE


def attention_mask(token_ids: torch.Tensor) -> torch.Tensor:
    """`(B, L, 4)` ids -> `(B, 1, L, L)` bool, True where query i may attend to key j."""
    sample = token_ids[..., SAMPLE]
    real = sample != PAD_ID
    same = (sample[:, :, None] == sample[:, None, :]) & real[:, :, None] & real[:, None, :]
    eye = torch.eye(sample.shape[1], dtype=torch.bool, device=sample.device)
    return (same | eye)[:, None]


class Attention(nn.Module):
    """`(B, L, dim)` -> `(B, L, dim)`; no bias on qkv and output; per-head q/k norm."""

    def __init__(self, dim: int, num_heads: int, qk_norm: str = "layernorm", dyntanh: DynTanhConfig | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = make_norm(qk_norm, self.head_dim, affine=True, dyntanh=dyntanh)
        self.k_norm = make_norm(qk_norm, self.head_dim, affine=True, dyntanh=dyntanh)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_keys: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x `(B, L, dim)`, mask `(B, 1, L, L)` from `attention_mask`, rope `(cos, sin)` or None.

        With `return_keys` also the head-averaged, normed keys before RoPE `(B, L, head_dim)`,
        detached (token merging matches tokens by them; RoPE would make them position-dependent).
        """
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        keys = k.detach().mean(1) if return_keys else None
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.proj(out.transpose(1, 2).reshape(B, L, D))
        return (out, keys) if return_keys else out
