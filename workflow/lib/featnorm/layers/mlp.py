"""The block MLP: Linear -> tanh-GELU -> Linear, hidden width `mlp_ratio * dim`.

`make_mlp` is the one place that picks the MLP kind from config; the DiffMoE MLP
(`moe.num_experts > 0`, issue 8) plugs in here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.config import ConfigError, MoEConfig


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, L, dim)` -> `(B, L, dim)`."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def make_mlp(dim: int, mlp_ratio: float, moe: MoEConfig | None = None, where: str = "model") -> nn.Module:
    if moe is not None and moe.num_experts > 0:
        raise ConfigError(
            f"{where}.moe.num_experts = {moe.num_experts}: the DiffMoE MLP is not implemented yet "
            f"(issue 8); set {where}.moe.num_experts: 0"
        )
    return Mlp(dim, int(round(dim * mlp_ratio)))
