"""Norm layers chosen by config: LayerNorm, DynTanh, and a padding-aware batchnorm.

`make_norm` builds the per-token norms (block norms, q/k norms, output norms);
`MaskedBatchNorm` normalizes each channel with statistics over the real tokens of a
packed batch only (padding never enters the statistics).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from featnorm.config import DynTanhConfig
from featnorm.layers.dyntanh import DynTanh

LAYERNORM_EPS = 1e-6


def make_norm(kind: str, dim: int, affine: bool = True, dyntanh: DynTanhConfig | None = None) -> nn.Module:
    """A per-token norm over the last axis: 'layernorm', 'dyntanh' or 'disabled' (identity)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=LAYERNORM_EPS, elementwise_affine=affine)
    if kind == "dyntanh":
        d = dyntanh or DynTanhConfig()
        return DynTanh(dim, alpha=d.alpha, alpha_init=d.alpha_init, affine=affine)
    if kind == "disabled":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}; expected 'layernorm', 'dyntanh' or 'disabled'")


def masked_mean_var(
    x: torch.Tensor, mask: torch.Tensor, per_channel: bool = True, sync: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of `(..., dim)` x over the tokens where `mask (...)` is True.

    Returns `(dim,)` tensors, or `(1,)` tensors (one scalar over tokens and channels) when
    `per_channel` is False. Computed in float32; an empty mask gives mean 0, var 0.
    With `sync` (and torch.distributed initialised) the statistics are over the tokens of
    every process (sums all-reduced, differentiably), as if one process held them all.
    """
    xf = x.float().reshape(-1, x.shape[-1])
    m = mask.reshape(-1, 1).to(xf.dtype)
    sync = sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    reduce = _all_reduce_sum if sync else (lambda t: t)
    count = reduce(m.sum().reshape(1)).clamp_min(1.0)
    if per_channel:
        mean = reduce((xf * m).sum(0)) / count
        var = reduce((((xf - mean) ** 2) * m).sum(0)) / count
    else:
        count = count * xf.shape[-1]
        mean = reduce((xf * m).sum().reshape(1)) / count
        var = reduce((((xf - mean) ** 2) * m).sum().reshape(1)) / count
    return mean, var


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes; gradients flow back to every process's inputs (as SyncBatchNorm)."""
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def distributed_count(mask: torch.Tensor) -> torch.Tensor:
    """Tokens where `mask` is True over all processes (this process's count without
    torch.distributed); a float scalar."""
    n = mask.sum().float().reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(n)
    return n.clamp_min(2)


class MaskedBatchNorm(nn.Module):
    """Batchnorm over the channels of `(B, L, dim)` tokens, statistics over real tokens only.

    Training: normalize with the batch statistics of the masked tokens and update running
    statistics (`running = (1 - momentum) * running + momentum * batch`, unbiased variance,
    as `nn.BatchNorm1d`). Eval: normalize with the running statistics. Under
    torch.distributed the training statistics are global over processes (SyncBatchNorm).
    """

    def __init__(self, dim: int, affine: bool = True, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.dim, self.momentum, self.eps = dim, momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, L, dim)`, mask `(B, L)` bool (True on tokens that enter the statistics)."""
        if self.training:
            mean, var = masked_mean_var(x, mask, sync=True)
            with torch.no_grad():
                n = distributed_count(mask).to(var.dtype)
                unbiased = var * n / (n - 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + self.eps)
        if self.weight is not None:
            y = torch.addcmul(self.bias, y, self.weight)
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, affine={self.weight is not None}, momentum={self.momentum}, eps={self.eps}"
