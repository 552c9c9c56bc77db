"""Model FLOPs of one I-JEPA training step, from the batch's real token counts and the layer shapes.

Convention (the usual one behind MFU): a matmul of `(m, k)` by `(k, n)` costs `2 m k n`
FLOPs, and only matmuls count: the linear layers and the two products of attention (`Q K^T`
and `P V`), not norms, activations, RoPE, softmax, the loss, AdamW or the EMA update (a few
percent at ViT-S widths). A backward pass costs twice its forward (input and weight
gradients), except the patch embedding, whose input (pixels) needs no gradient: once.

Per step: the EMA teacher's forward on full rows, the student's forward and backward on
the context segment, the predictor's forward and backward on its `batch_repeat x rows`
rows of sampled windows. Work is counted on real tokens only (padding does nothing useful),
and attention only between tokens of the same image, as the block-diagonal masks allow: an
image of n tokens (patches and registers) costs `4 n^2 dim` per block forward, whatever row
it shares. The patch embedding runs on patches, the predictor's input projection on its
real context tokens and its output projection on its real target tokens.

DiffMoE MLPs count what training-mode routing computes: each expert's top-k over the whole
token pool (padding slots included, `k x experts = capacity x slots`), the gate and the
capacity predictor on every slot. ToMe is counted as if no token merged (an upper bound).

`encoder_counts(token_ids)` reads a batch's ids (on the CPU, no device sync); the
predictor's counts come from the step's statistics (`Predictor.token_counts`, synchronised
with the loss). `step_flops` combines them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from featnorm.config import EncoderConfig, ModelConfig, PredictorConfig
from featnorm.tokens import PAD_ID, REGISTER, SAMPLE


@dataclass(frozen=True)
class TokenCounts:
    """What one forward of a network processes (all summed over the batch's rows).

    tokens: real tokens through the blocks; pairs: same-image (query, key) pairs of one
    attention, `sum over images of n^2`; slots: all positions, padding included (DiffMoE's
    pool); input_tokens: tokens through the input projection (encoder: patches; predictor:
    real context tokens); output_tokens: tokens through the output projection (predictor:
    real target tokens; encoder: none).
    """

    tokens: float
    pairs: float
    slots: float
    input_tokens: float
    output_tokens: float = 0.0


def encoder_counts(token_ids: torch.Tensor) -> TokenCounts:
    """Counts of an encoder forward on `(B, L, 4)` ids (e.g. `batch.token_ids` for the
    teacher, `batch.context_ids` for the student). About 2 ms for a paper batch (320 rows of
    320 tokens) on one CPU core."""
    ids = token_ids.cpu().numpy()
    sample = ids[..., SAMPLE]
    B, L = sample.shape
    # runs of equal ids in each sorted row = the row's images (and its padding)
    s = np.sort(sample, axis=1).ravel()
    start = np.ones(B * L, dtype=bool)
    start[1:] = s[1:] != s[:-1]
    start[::L] = True  # runs never cross rows
    first = np.flatnonzero(start)
    n = np.diff(first, append=B * L)[s[first] != PAD_ID].astype(np.float64)  # tokens per (row, image)
    patches = (sample != PAD_ID) & (ids[..., REGISTER] == PAD_ID)
    return TokenCounts(float(n.sum()), float((n * n).sum()), float(B * L), float(patches.sum()))


def predictor_counts(stats: dict) -> TokenCounts:
    """The predictor's counts from a step's statistics (floats, see `IJEPA.forward`)."""
    return TokenCounts(
        tokens=stats["predictor_tokens"],
        pairs=stats["predictor_attention_pairs"],
        slots=stats["predictor_slots"],
        input_tokens=stats["predictor_context_tokens"],
        output_tokens=stats["predictor_target_tokens"],
    )


def forward_flops(net: EncoderConfig | PredictorConfig, c: TokenCounts, in_dim: int, out_dim: int = 0) -> dict[str, float]:
    """Forward FLOPs of one encoder or predictor by part: `input` (patch embedding or the
    predictor's input projection, `in_dim -> dim`), `linear` (qkv and output projection of
    every block), `attention` (the two products), `mlp`, `output` (`dim -> out_dim`)."""
    D, depth = net.dim, net.depth
    hidden = int(round(D * net.mlp_ratio))
    if net.moe.num_experts > 0:
        E = net.moe.num_experts
        k = min(max(1, int(c.slots * net.moe.capacity / E + 1e-9)), int(c.slots))  # DiffMoE.tokens_per_expert
        h = max(E, D // 4)  # DiffMoE's capacity predictor width
        mlp = depth * (4.0 * D * hidden * k * E + 2.0 * D * E * c.slots + 2.0 * (D * h + h * E) * c.slots)
    else:
        mlp = depth * 4.0 * D * hidden * c.tokens
    if getattr(net, "mlp_in", False):  # the predictor's optional input MLP: in_dim -> 4 in_dim -> dim
        input_flops = 2.0 * (in_dim * 4 * in_dim + 4 * in_dim * D) * c.input_tokens
    else:
        input_flops = 2.0 * in_dim * D * c.input_tokens
    return {
        "input": input_flops,
        "linear": depth * 8.0 * D * D * c.tokens,
        "attention": depth * 4.0 * D * c.pairs,
        "mlp": mlp,
        "output": 2.0 * D * out_dim * c.output_tokens,
    }


def step_flops(cfg: ModelConfig, teacher: TokenCounts, student: TokenCounts, predictor: TokenCounts) -> dict[str, float]:
    """FLOPs of one training step: `teacher` (forward), `student` and `predictor` (forward +
    backward), `attention` (the part of the three that is attention) and `total`."""
    E = cfg.encoder.dim
    t = forward_flops(cfg.encoder, teacher, cfg.patch_dim)
    s = forward_flops(cfg.encoder, student, cfg.patch_dim)
    p = forward_flops(cfg.predictor, predictor, E, E)
    out = {
        "teacher": sum(t.values()),
        "student": 3.0 * sum(s.values()) - s["input"],  # no gradient for the pixels
        "predictor": 3.0 * sum(p.values()),
        "attention": t["attention"] + 3.0 * (s["attention"] + p["attention"]),
    }
    out["total"] = out["teacher"] + out["student"] + out["predictor"]
    return out
