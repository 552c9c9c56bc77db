"""Multi-head self-attention over packed rows, with two kernels (`model.attention_backend`).

A row of a packed batch holds several images; the attention mask lets a token attend only
to tokens of its own sample and never to padding. Padding tokens attend to themselves only,
so every query has at least one key and nothing becomes NaN. The mask and the RoPE tables
are built once per forward by the model (`make_attention_mask`) and shared by all blocks.

Backends:
  * `sdpa`: `F.scaled_dot_product_attention` with a dense boolean mask `(B, 1, L, L)`
    (`attention_mask`); runs everywhere, forward and backward.
  * `flex`: FlexAttention (`torch.nn.attention.flex_attention`) with a `BlockMask` built
    from the sample ids (`flex_block_mask`), same rule as the dense mask. On CUDA the kernel
    is compiled (a fused kernel that skips whole blocks of masked pairs); on the CPU it runs
    eager (it then materialises the scores like sdpa's math path) and only without
    gradients: torch has no FlexAttention backward on the CPU, so training on the CPU needs
    `sdpa` (the trainer says so before it starts).
`Attention.forward` picks the kernel from the type of the mask it is given.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.config import DynTanhConfig
from featnorm.layers.norms import make_norm
from featnorm.layers.rope import apply_rope
from featnorm.tokens import PAD_ID, SAMPLE

BACKENDS = ("sdpa", "flex")


_FLEX = None  # torch.nn.attention.flex_attention, imported by `check_backend` (about a second of start-up)


def check_backend(backend: str) -> str:
    """Validate an attention backend name; for 'flex' also import FlexAttention now, at model
    construction, so that the forward (perhaps traced by torch.compile) only reads a global."""
    global _FLEX
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {list(BACKENDS)}")
    if backend == "flex" and _FLEX is None:
        try:
            from torch.nn.attention import flex_attention
        except ImportError:  # pragma: no cover - torch < 2.5
            raise RuntimeError(f"model.attention_backend = flex needs torch >= 2.5 (FlexAttention); this is torch {torch.__version__}") from None
        _FLEX = flex_attention
    return backend


def _flex_module():
    return _FLEX if _FLEX is not None else (check_backend("flex"), _FLEX)[1]


def attention_mask(token_ids: torch.Tensor) -> torch.Tensor:
    """`(B, L, 4)` ids -> `(B, 1, L, L)` bool, True where query i may attend to key j."""
    sample = token_ids[..., SAMPLE]
    real = sample != PAD_ID
    same = (sample[:, :, None] == sample[:, None, :]) & real[:, :, None] & real[:, None, :]
    eye = torch.eye(sample.shape[1], dtype=torch.bool, device=sample.device)
    return (same | eye)[:, None]


def flex_block_mask(token_ids: torch.Tensor) -> "BlockMask":
    """`(B, L, 4)` ids -> a FlexAttention `BlockMask` allowing exactly what `attention_mask` allows."""
    sample = token_ids[..., SAMPLE].contiguous()
    B, L = sample.shape

    def same_image(b, h, q, kv):
        s = sample[b, q]
        return ((s == sample[b, kv]) & (s != PAD_ID)) | (q == kv)

    return _flex_module().create_block_mask(same_image, B, None, L, L, device=sample.device)


def make_attention_mask(token_ids: torch.Tensor, backend: str = "sdpa") -> "torch.Tensor | BlockMask":
    """The mask of `backend` ('sdpa': dense bool `(B, 1, L, L)`; 'flex': a `BlockMask`)."""
    if backend == "sdpa":
        return attention_mask(token_ids)
    if backend == "flex":
        return flex_block_mask(token_ids)
    raise ValueError(f"attention backend {backend!r} is not one of {list(BACKENDS)}")


_compiled_flex = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: "BlockMask") -> torch.Tensor:
    """FlexAttention on `(B, heads, L, head_dim)`; compiled on CUDA, eager elsewhere."""
    global _compiled_flex
    flex_attention = _flex_module().flex_attention
    if torch.is_autocast_enabled(q.device.type):
        # q/k leave their LayerNorm in float32 under autocast, v in the autocast dtype;
        # sdpa casts all three to the autocast dtype, so flex does the same.
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if q.device.type == "cuda":
        if torch.compiler.is_compiling():  # inside a compiled model: traced as it is
            return flex_attention(q, k, v, block_mask=mask)
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)
        return _compiled_flex(q, k, v, block_mask=mask)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError(
            "model.attention_backend = flex cannot train on the CPU (torch has no FlexAttention backward "
            "there); use attention_backend: sdpa on the CPU, flex on CUDA"
        )
    with warnings.catch_warnings():  # eager flex warns that it is unfused: known, and fine off CUDA
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, block_mask=mask)


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
        mask: "torch.Tensor | BlockMask",
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_keys: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x `(B, L, dim)`, mask from `make_attention_mask` (a dense `(B, 1, L, L)` bool mask
        runs sdpa, a `BlockMask` runs FlexAttention), rope `(cos, sin)` or None.

        With `return_keys` also the head-averaged, normed keys before RoPE `(B, L, head_dim)`,
        detached (token merging matches tokens by them; RoPE would make them position-dependent).
        """
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        keys = k.detach().mean(1) if return_keys else None
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if isinstance(mask, torch.Tensor):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            out = _flex(q, k, v, mask)
        out = self.proj(out.transpose(1, 2).reshape(B, L, D))
        return (out, keys) if return_keys else out
