"""Building and running a stack of blocks over packed rows, with optional ToMe token merging.

Shared by the encoder and the predictor: `stack_parts` builds their registers, position
encoding and blocks alike from their config; `run_blocks` builds the attention mask (of the chosen kernel,
`model.attention_backend`) and RoPE tables once,
and with merging on (`tome_ratio > 0`) merges tokens after every block but the last,
rebuilding the mask, the RoPE tables (fractional positions) and the DiffMoE token pool
from the merged tokens, then unmerges the output (and every returned depth) back to the
input length.
"""

from __future__ import annotations

import torch
from torch import nn

from featnorm.config import EncoderConfig, PredictorConfig
from featnorm.layers import (
    AbsolutePositionEmbedding,
    Block,
    MergeState,
    RoPE2D,
    make_attention_mask,
    merge_plan,
    merge_tokens,
    unmerge,
)
from featnorm.tokens import is_padding


def stack_parts(
    cfg: EncoderConfig | PredictorConfig, where: str
) -> tuple[nn.Parameter | None, RoPE2D | None, AbsolutePositionEmbedding | None, nn.ModuleList]:
    """`(registers, rope, abs_pos, blocks)` of an encoder or predictor: learned register
    embeddings `(num_registers, dim)` (None without registers), RoPE-2D (in attention) or an
    absolute position embedding (added to the input), and `depth` blocks. Built in this order,
    which fixes what a seed gives."""
    registers = nn.Parameter(torch.randn(cfg.num_registers, cfg.dim) * 0.02) if cfg.num_registers > 0 else None
    rope = RoPE2D(cfg.head_dim, cfg.rope_base) if cfg.pos_embed == "rope" else None
    abs_pos = AbsolutePositionEmbedding(cfg.dim, cfg.max_grid_size) if cfg.pos_embed == "absolute" else None
    blocks = nn.ModuleList(Block(cfg, where) for _ in range(cfg.depth))
    return registers, rope, abs_pos, blocks


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    token_ids: torch.Tensor,
    rope: RoPE2D | None,
    tome_ratio: float = 0.0,
    return_all_depths: bool = False,
    attention_backend: str = "sdpa",
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """x `(B, L, dim)` input tokens, token_ids `(B, L, 4)` -> (`(B, L, dim)` output of the
    last block, and with `return_all_depths` the list [x, block 1 output, ...], each
    `(B, L, dim)`; else None). Merged tokens come back as copies of their merged token.
    `attention_backend`: 'sdpa' or 'flex' (see featnorm.layers.attention)."""
    mask = make_attention_mask(token_ids, attention_backend)
    tables = rope.tables(token_ids) if rope is not None else None
    moe = any(b.moe for b in blocks)
    real = ~is_padding(token_ids) if moe else None
    hiddens = [x] if return_all_depths else None
    if tome_ratio <= 0:
        for block in blocks:
            x = block(x, mask, tables, real)
            if hiddens is not None:
                hiddens.append(x)
        return x, hiddens

    state = MergeState.start(token_ids)
    for i, block in enumerate(blocks):
        x, keys = block(x, mask, tables, real, return_keys=True)
        if hiddens is not None:
            hiddens.append(unmerge(x, state))
        if i == len(blocks) - 1:
            break
        x, state = merge_tokens(x, merge_plan(keys, state.ids, tome_ratio), state)
        mask = make_attention_mask(state.ids, attention_backend)
        tables = rope.tables_from_positions(state.pos, state.positioned) if rope is not None else None
        real = ~is_padding(state.ids) if moe else None
    return unmerge(x, state), hiddens
