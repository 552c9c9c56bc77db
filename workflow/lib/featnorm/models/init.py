"""Weight initialisation shared by the encoder and the predictor (ViT style)."""

from __future__ import annotations

from torch import nn


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases; norms keep their own init.

    Use as `model.apply(init_vit_weights)`; deterministic given `torch.manual_seed`.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
