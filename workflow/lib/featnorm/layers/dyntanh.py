"""DynTanh (dynamic tanh): a normalization-free replacement for LayerNorm.

    y = tanh(alpha * x)            alpha per channel (the reference's choice) or one scalar
    y = y * gamma + beta           when `affine`
"""

from __future__ import annotations

import torch
from torch import nn


class DynTanh(nn.Module):
    """Elementwise `tanh(alpha * x)` over the last axis of `(..., dim)` inputs."""

    def __init__(self, dim: int, alpha: str = "vector", alpha_init: float = 0.5, affine: bool = False):
        super().__init__()
        if alpha not in ("vector", "scalar"):
            raise ValueError(f"DynTanh alpha must be 'vector' or 'scalar', got {alpha!r}")
        self.dim = dim
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.full((dim if alpha == "vector" else 1,), float(alpha_init)))
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, self.alpha_init)
        if self.weight is not None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.alpha * x)
        if self.weight is not None:
            y = torch.addcmul(self.bias, y, self.weight)
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, alpha={tuple(self.alpha.shape)}, affine={self.weight is not None}"
