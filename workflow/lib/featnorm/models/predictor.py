"""The I-JEPA predictor: from context features and target positions to target features."""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import ConfigError, PredictorConfig
from featnorm.layers import AbsolutePositionEmbedding, Block, RoPE2D, attention_mask, make_norm
from featnorm.models.init import init_vit_weights, reject_unimplemented
from featnorm.tokens import PAD_ID, is_register


class Predictor(nn.Module):
    """Linear `encoder_dim -> dim`; target slots enter as zeros plus a learned mask token and
    get positions (RoPE-2D or absolute) by their row/col; pre-norm blocks over the concatenated
    context + target sequence with the sample-id attention mask (a row may mix images);
    output norm; linear `dim -> encoder_dim`.

    `forward(context (B, Lc, encoder_dim), context_ids (B, Lc, 4), target_ids (B, Lt, 4))`
    -> predictions `(B, Lt, encoder_dim)`.
    """

    def __init__(self, cfg: PredictorConfig, encoder_dim: int):
        super().__init__()
        where = "model.predictor"
        reject_unimplemented(cfg, where)
        if cfg.num_registers > 0:
            raise ConfigError(
                f"{where}.num_registers = {cfg.num_registers}: predictor registers are not implemented "
                f"yet (issue 8); set {where}.num_registers: 0"
            )
        self.cfg = cfg
        self.embed = nn.Linear(encoder_dim, cfg.dim)
        self.mask_token = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        self.rope = RoPE2D(cfg.head_dim, cfg.rope_base) if cfg.pos_embed == "rope" else None
        self.abs_pos = AbsolutePositionEmbedding(cfg.dim, cfg.max_grid_size) if cfg.pos_embed == "absolute" else None
        self.blocks = nn.ModuleList(Block(cfg, where) for _ in range(cfg.depth))
        self.out_norm = make_norm(cfg.out_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.out_proj = nn.Linear(cfg.dim, encoder_dim)
        self.apply(init_vit_weights)

    def forward(self, context: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.encoder_registers == "wipe":
            # The encoder's register outputs are hidden from the predictor: treat them as padding.
            context_ids = context_ids.masked_fill(is_register(context_ids)[..., None], PAD_ID)
        B, Lc, _ = context.shape
        ctx = self.embed(context)
        tgt = self.mask_token.to(ctx.dtype).expand(B, target_ids.shape[1], -1)
        x = torch.cat((ctx, tgt), 1)
        ids = torch.cat((context_ids, target_ids), 1)
        if self.abs_pos is not None:
            x = x + self.abs_pos(ids)
        mask = attention_mask(ids)
        rope = self.rope.tables(ids) if self.rope is not None else None
        for block in self.blocks:
            x = block(x, mask, rope)
        return self.out_proj(self.out_norm(x[:, Lc:]))
