"""The block MLP: Linear -> tanh-GELU -> Linear, hidden width `mlp_ratio * dim`.

`make_mlp` is the one place that picks the MLP kind from config: this dense MLP, or the
DiffMoE MLP (`featnorm.layers.diffmoe`) when `moe.num_experts > 0`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featnorm.config import MoEConfig
from featnorm.layers.diffmoe import DiffMoE


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, L, dim)` -> `(B, L, dim)`."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def make_mlp(dim: int, mlp_ratio: float, moe: MoEConfig | None = None, where: str = "model") -> nn.Module:
    """A dense `Mlp`, or a `DiffMoE` of `moe.num_experts` experts of the same hidden width."""
    hidden = int(round(dim * mlp_ratio))
    if moe is not None and moe.num_experts > 0:
        return DiffMoE(dim, hidden, moe.num_experts, moe.capacity, moe.threshold_beta)
    return Mlp(dim, hidden)
