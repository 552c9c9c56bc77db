"""Normalization of the teacher's target features (SPEC 3, step 2).

Modes, over the real target tokens of a batch (padding and registers never enter):
  layernorm                    per token, no affine
  disabled                     identity
  batchnorm                    per channel, with this batch's mean and (unbiased) std
  running-batchnorm            per channel, with running statistics (`RunningNorm`: set by
                               the first training batch, then an EMA of mean and std, beta)
  running-batchnorm-singleton  the same with one scalar mean and std over tokens and channels
In eval mode the running modes use their statistics as they are. Standard deviations are
clamped (1e-7 for batchnorm, 1e-5 for the running modes, as the reference). In training
under torch.distributed, batch statistics are over the real target tokens of every process,
so every rank keeps the same running statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.layers.norms import LAYERNORM_EPS, RunningNorm, distributed_count, masked_mean_var

MODES = ("layernorm", "disabled", "batchnorm", "running-batchnorm", "running-batchnorm-singleton")
BATCHNORM_STD_EPS = 1e-7


class TargetNorm(nn.Module):
    def __init__(self, mode: str, dim: int, beta: float = 0.99):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown target norm mode {mode!r}; expected one of {list(MODES)}")
        self.mode, self.dim, self.beta = mode, dim, beta
        if mode.startswith("running"):
            self.running = RunningNorm(dim, per_channel=not mode.endswith("singleton"), beta=beta)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, Lt, dim)` teacher features, mask `(B, Lt)` bool (real target tokens) ->
        `(B, Lt, dim)` float32 targets."""
        x = x.float()
        if self.mode == "disabled":
            return x
        if self.mode == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), eps=LAYERNORM_EPS)
        if self.mode == "batchnorm":
            mean, var = masked_mean_var(x, mask, sync=self.training)
            n = distributed_count(mask) if self.training else mask.sum().float().clamp_min(2)
            std = (var * n / (n - 1)).sqrt().clamp_min(BATCHNORM_STD_EPS)
            return (x - mean) / std
        return self.running(x, mask)

    def extra_repr(self) -> str:
        return f"{self.mode!r}, dim={self.dim}, beta={self.beta}"
