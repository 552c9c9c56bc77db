"""The ViT encoder over packed rows of patches (student and EMA teacher of I-JEPA)."""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import EncoderConfig
from featnorm.layers import DiffMoE, RunningNorm, make_norm
from featnorm.layers.attention import check_backend
from featnorm.models.block_stack import run_blocks, stack_parts
from featnorm.models.init import init_weights
from featnorm.tokens import REGISTER, is_patch, is_register


class Encoder(nn.Module):
    """Patch embedding + optional registers + positions (RoPE-2D or absolute) + pre-norm
    blocks + output norm.

    `forward(pixels (B, L, patch_dim), token_ids (B, L, 4))` -> `(B, L, dim)`.
    `attention_backend` ('sdpa' or 'flex', `model.attention_backend`) picks the attention
    kernel; both compute the same function. Register
    tokens (register id != PAD_ID) get their learned embedding instead of a patch embedding;
    padding tokens enter as zeros, attend only to themselves and are ignored by every other
    token, so a packed row behaves like separate images.

    Options (issue 8): DiffMoE MLPs (`cfg.moe.num_experts > 0`; routing differs between
    train() and eval(), see `featnorm.layers.diffmoe`) and ToMe merging after each block
    (`cfg.tome.ratio > 0`; outputs are unmerged to the input length).
    """

    def __init__(self, cfg: EncoderConfig, patch_dim: int, init: str = "torch-default", attention_backend: str = "sdpa"):
        super().__init__()
        self.cfg = cfg
        self.attention_backend = check_backend(attention_backend)
        self.dim = cfg.dim
        self.patch_embed = nn.Linear(patch_dim, cfg.dim)
        registers, self.rope, self.abs_pos, self.blocks = stack_parts(cfg, "model.encoder")
        self.register_parameter("registers", registers)
        if cfg.out_norm == "batchnorm":
            self.out_norm = RunningNorm(cfg.dim, beta=0.99, affine=cfg.out_norm_affine)
        else:
            self.out_norm = make_norm(cfg.out_norm, cfg.dim, affine=cfg.out_norm_affine, dyntanh=cfg.dyntanh)
        init_weights(self, init)

    def embed(self, pixels: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """`(B, L, patch_dim)`, `(B, L, 4)` -> `(B, L, dim)` input tokens (depth 0)."""
        x = torch.where(is_patch(token_ids)[..., None], self.patch_embed(pixels), 0.0)
        if self.registers is not None:
            reg = is_register(token_ids)
            idx = token_ids[..., REGISTER].clamp(0, self.registers.shape[0] - 1)
            x = x + self.registers[idx] * reg[..., None].to(x.dtype)
        if self.abs_pos is not None:
            x = x + self.abs_pos(token_ids)
        return x

    def norm_output(self, x: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.out_norm, RunningNorm):
            return self.out_norm(x, is_patch(token_ids))
        return self.out_norm(x)

    def forward(
        self, pixels: torch.Tensor, token_ids: torch.Tensor, return_all_depths: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Returns `(B, L, dim)` after the output norm; with `return_all_depths` also
        `hiddens (depth + 1, B, L, dim)`: the embedding output and each block's output (with
        ToMe, each block's output before that block's merge, unmerged to all L tokens)."""
        x = self.embed(pixels, token_ids)
        x, hiddens = run_blocks(self.blocks, x, token_ids, self.rope, self.cfg.tome.ratio, return_all_depths,
                                self.attention_backend)
        out = self.norm_output(x, token_ids)
        if hiddens is not None:
            return out, torch.stack(hiddens)
        return out

    @property
    def experts_per_token(self) -> float | None:
        """Mean over DiffMoE layers of the experts per real token in the last forward (in the
        mode it ran in: k x E / N in train(), threshold routing in eval()); None without DiffMoE."""
        values = [m.experts_per_token for m in self.modules() if isinstance(m, DiffMoE) and m.experts_per_token is not None]
        return float(torch.stack(values).mean()) if values else None
