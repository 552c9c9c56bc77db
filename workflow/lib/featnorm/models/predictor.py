"""The I-JEPA predictor: from context features and target positions to target features."""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import PredictorConfig
from featnorm.layers import make_norm
from featnorm.layers.attention import check_backend
from featnorm.models.block_stack import run_blocks, stack_parts
from featnorm.models.init import init_weights
from featnorm.tokens import PAD_ID, REGISTER, SAMPLE, is_patch, is_register, padding_ids


class Predictor(nn.Module):
    """Linear `encoder_dim -> dim` (or a 2-layer MLP with `mlp_in`); target slots enter as zeros plus a learned mask token and
    get positions (RoPE-2D or absolute) by their row/col; pre-norm blocks over the concatenated
    context + target sequence with the sample-id attention mask (a row may mix images);
    output norm; linear `dim -> encoder_dim`.

    Registers: the encoder's register tokens in the context pass as they are
    (`encoder_registers: pass`) or are wiped to padding (`wipe`); with `num_registers > 0`
    each image present in a row (one with a patch in its context or targets) gets that many
    learned predictor registers, placed before the context. Options of issue 8: DiffMoE
    MLPs and ToMe merging (`cfg.moe`, `cfg.tome`).

    `forward(context (B, Lc, encoder_dim), context_ids (B, Lc, 4), target_ids (B, Lt, 4))`
    -> predictions `(B, Lt, encoder_dim)`. `attention_backend`: 'sdpa' or 'flex', as the encoder's.
    """

    def __init__(self, cfg: PredictorConfig, encoder_dim: int, init: str = "torch-default", attention_backend: str = "sdpa"):
        super().__init__()
        self.cfg = cfg
        self.attention_backend = check_backend(attention_backend)
        if cfg.mlp_in:  # the reference's should_mlp_in
            hidden = 4 * encoder_dim
            self.embed = nn.Sequential(nn.Linear(encoder_dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.dim))
        else:
            self.embed = nn.Linear(encoder_dim, cfg.dim)
        self.mask_token = nn.Parameter(torch.randn(cfg.dim) * 0.02)
        registers, self.rope, self.abs_pos, self.blocks = stack_parts(cfg, "model.predictor")
        self.register_parameter("registers", registers)
        self.out_norm = make_norm(cfg.out_norm, cfg.dim, affine=True, dyntanh=cfg.dyntanh)
        self.out_proj = nn.Linear(cfg.dim, encoder_dim)
        init_weights(self, init)

    def register_ids(self, context_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Ids of the predictor registers: `(B, M * num_registers, 4)`, M the most images
        present in a row; image m of a row (in order of first appearance) gets register ids
        0..num_registers-1 with its sample id; unused slots are padding."""
        ids = torch.cat((context_ids, target_ids), 1)
        B, L, _ = ids.shape
        sample, patch = ids[..., SAMPLE], is_patch(ids)
        earlier = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril(-1)  # (i, j): j before i
        seen = ((sample[:, :, None] == sample[:, None, :]) & patch[:, None, :] & earlier).any(-1)
        first = patch & ~seen  # (B, L): first patch of each present image
        count = first.sum(1)
        M = int(count.max()) if B else 0
        n = self.cfg.num_registers
        out = padding_ids(B, M * n, device=ids.device)
        if M == 0:
            return out
        order = torch.sort(first.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :M]
        live = torch.arange(M, device=ids.device)[None] < count[:, None]  # (B, M)
        images = sample.gather(1, order).masked_fill(~live, PAD_ID)  # (B, M)
        out[..., SAMPLE] = images.repeat_interleave(n, dim=1)
        reg = torch.arange(n, device=ids.device).repeat(M)[None].expand(B, -1)
        out[..., REGISTER] = reg.masked_fill(out[..., SAMPLE] == PAD_ID, PAD_ID)
        return out

    def prepare(
        self, context: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictor's input sequence: `x (B, R + Lc + Lt, dim)` and its ids
        `(B, R + Lc + Lt, 4)`, [predictor registers (R slots) | context | targets]."""
        if self.cfg.encoder_registers == "wipe":
            # Hidden from the predictor: padding attends only to itself and nothing attends to it.
            context_ids = context_ids.masked_fill(is_register(context_ids)[..., None], PAD_ID)
        B = context.shape[0]
        ctx = self.embed(context)
        tgt = self.mask_token.to(ctx.dtype).expand(B, target_ids.shape[1], -1)
        parts, ids = [ctx, tgt], [context_ids, target_ids]
        if self.registers is not None:
            reg_ids = self.register_ids(context_ids, target_ids)
            live = reg_ids[..., REGISTER] != PAD_ID
            reg = self.registers[reg_ids[..., REGISTER].clamp_min(0)].to(ctx.dtype) * live[..., None]
            parts, ids = [reg] + parts, [reg_ids] + ids
        x, ids = torch.cat(parts, 1), torch.cat(ids, 1)
        if self.abs_pos is not None:
            x = x + self.abs_pos(ids)
        return x, ids

    def token_counts(self, context_ids: torch.Tensor, target_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a forward on these ids processes, for FLOP counting (featnorm.train.flops), as
        0-dim float tensors computed without a host sync: `tokens` (real tokens through the
        blocks, predictor registers included), `pairs` (same-image (query, key) pairs of one
        attention: the sum over the images of each row of n^2), `context_tokens` and
        `target_tokens` (real tokens through the input and output projections) and `slots`
        (all positions, padding included)."""
        if self.cfg.encoder_registers == "wipe":
            context_ids = context_ids.masked_fill(is_register(context_ids)[..., None], PAD_ID)
        ids = torch.cat((context_ids, target_ids), 1)
        B, L, _ = ids.shape
        sample = ids[..., SAMPLE]
        real = sample != PAD_ID
        same = (sample[:, :, None] == sample[:, None, :]) & real[:, None, :]  # (B, L, L)
        n = same.sum(-1).float() * real  # per real token: tokens of its image in the row
        tokens, pairs = real.sum().float(), n.sum()
        slots = n.new_full((), float(B * L))  # a fill on the device, not a copy from the host (which would sync)
        P = self.cfg.num_registers
        if P:
            # Each image with a patch in the row gets P registers: (n + P)^2 = n^2 + 2Pn + P^2.
            present = (same & is_patch(ids)[:, None, :]).any(-1) & real
            share = present.float() / n.clamp_min(1)  # sums to 1 over each present image's tokens
            tokens = tokens + P * share.sum()
            pairs = pairs + ((2 * P * n + P * P) * share).sum()
            slots = slots + B * P * share.sum(1).max().round()  # register slots: the fullest row's images
        context_tokens = real[:, : context_ids.shape[1]].sum().float()
        target_tokens = real[:, context_ids.shape[1] :].sum().float()
        return {"tokens": tokens, "pairs": pairs, "context_tokens": context_tokens, "target_tokens": target_tokens, "slots": slots}

    def forward(self, context: torch.Tensor, context_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        x, ids = self.prepare(context, context_ids, target_ids)
        x, _ = run_blocks(self.blocks, x, ids, self.rope, self.cfg.tome.ratio, attention_backend=self.attention_backend)
        return self.out_proj(self.out_norm(x[:, x.shape[1] - target_ids.shape[1] :]))
