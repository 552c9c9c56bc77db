"""Building blocks of the encoder and predictor, one idea per file."""

from featnorm.layers.abs_pos import AbsolutePositionEmbedding
from featnorm.layers.attention import Attention, attention_mask, make_attention_mask
from featnorm.layers.block import Block
from featnorm.layers.diffmoe import DiffMoE
from featnorm.layers.dyntanh import DynTanh
from featnorm.layers.mlp import Mlp, make_mlp
from featnorm.layers.norms import RunningNorm, make_norm, masked_mean_var
from featnorm.layers.rope import RoPE2D, apply_rope
from featnorm.layers.tome import MergeState, merge_plan, merge_tokens, unmerge

__all__ = [
    "AbsolutePositionEmbedding",
    "Attention",
    "Block",
    "DiffMoE",
    "DynTanh",
    "RunningNorm",
    "MergeState",
    "Mlp",
    "RoPE2D",
    "apply_rope",
    "attention_mask",
    "make_attention_mask",
    "make_mlp",
    "make_norm",
    "masked_mean_var",
    "merge_plan",
    "merge_tokens",
    "unmerge",
]
