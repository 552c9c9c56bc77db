"""Norm layers chosen by config: LayerNorm, DynTanh, and a padding-aware running batchnorm.

`make_norm` builds the per-token norms (block norms, q/k norms, output norms);
`RunningNorm` normalizes by running statistics over the real tokens of packed batches
only (padding never enters the statistics).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from featnorm.config import DynTanhConfig
from featnorm.layers.dyntanh import DynTanh

LAYERNORM_EPS = 1e-5  # nn.LayerNorm's default, as the reference


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


class RunningNorm(nn.Module):
    """Normalize `(B, L, dim)` tokens by running statistics of the real tokens (the
    reference's RunningBatchNorm; the encoder's `batchnorm` output norm and the
    `running-batchnorm*` target norms).

    Training: the mean and the (unbiased) std of this batch's masked tokens - per channel,
    or one scalar over tokens and channels with `per_channel=False` - initialise the running
    values at the first training batch and move them by EMA (`beta`) afterwards; the input
    is then normalized with the running values, in training too, so no gradient flows
    through the statistics. Eval: the running values as they are. The std is clamped at
    `eps`. Under torch.distributed the batch statistics are over every process's tokens.
    """

    def __init__(self, dim: int, per_channel: bool = True, beta: float = 0.99, eps: float = 1e-5, affine: bool = False):
        super().__init__()
        self.dim, self.per_channel, self.beta, self.eps = dim, per_channel, beta, eps
        size = dim if per_channel else 1
        self.register_buffer("running_mean", torch.zeros(size))
        self.register_buffer("running_std", torch.ones(size))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """Fold this batch's statistics of `x (B, L, dim)` at `mask (B, L)` into the running ones."""
        mean, var = masked_mean_var(x.detach(), mask, per_channel=self.per_channel, sync=True)
        n = distributed_count(mask) * (1 if self.per_channel else x.shape[-1])
        std = (var * n / (n - 1)).sqrt()
        if not bool(self.initialized):
            self.running_mean.copy_(mean)
            self.running_std.copy_(std)
            self.initialized.fill_(True)
        else:
            self.running_mean.lerp_(mean, 1 - self.beta)
            self.running_std.lerp_(std, 1 - self.beta)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, L, dim)`, mask `(B, L)` bool (True on tokens that enter the statistics)."""
        if self.training:
            self.update(x, mask)
        mean = self.running_mean.to(x.dtype)
        std = self.running_std.clamp_min(self.eps).to(x.dtype)
        y = (x - mean) / std
        if self.weight is not None:
            y = torch.addcmul(self.bias, y, self.weight)
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, per_channel={self.per_channel}, beta={self.beta}, eps={self.eps}, affine={self.weight is not None}"
