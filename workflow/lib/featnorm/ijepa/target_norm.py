"""Normalization of the teacher's target features (SPEC 3, step 2).

Modes, over the real target tokens of a batch (padding and registers never enter):
  layernorm                    per token, no affine
  disabled                     identity
  batchnorm                    per channel, with this batch's mean and std
  running-batchnorm            per channel, with an EMA (beta) of the batch mean and variance
  running-batchnorm-singleton  one scalar mean and variance over tokens and channels, EMA (beta)
The running modes update their buffers in training mode, then normalize with the updated
values; in eval mode they use the buffers as they are. Buffers start at mean 0, var 1.
In training mode under torch.distributed, the batch statistics are over the real target
tokens of every process (all-reduced before the EMA), so every rank keeps the same buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.layers.norms import LAYERNORM_EPS, masked_mean_var

MODES = ("layernorm", "disabled", "batchnorm", "running-batchnorm", "running-batchnorm-singleton")


class TargetNorm(nn.Module):
    def __init__(self, mode: str, dim: int, beta: float = 0.99, eps: float = 1e-6):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown target norm mode {mode!r}; expected one of {list(MODES)}")
        self.mode, self.dim, self.beta, self.eps = mode, dim, beta, eps
        if mode.startswith("running"):
            size = 1 if mode.endswith("singleton") else dim
            self.register_buffer("running_mean", torch.zeros(size))
            self.register_buffer("running_var", torch.ones(size))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, Lt, dim)` teacher features, mask `(B, Lt)` bool (real target tokens) ->
        `(B, Lt, dim)` float32 targets."""
        x = x.float()
        if self.mode == "disabled":
            return x
        if self.mode == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), eps=LAYERNORM_EPS)
        mean, var = masked_mean_var(x, mask, per_channel=not self.mode.endswith("singleton"), sync=self.training)
        if self.mode.startswith("running"):
            if self.training:
                self.running_mean.lerp_(mean, 1 - self.beta)
                self.running_var.lerp_(var, 1 - self.beta)
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"{self.mode!r}, dim={self.dim}, beta={self.beta}"
