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


def reject_unimplemented(cfg, where: str) -> None:
    """Options that have a config key but no implementation yet (issue 8) fail loudly."""
    from featnorm.config import ConfigError

    if cfg.tome.ratio > 0:
        raise ConfigError(
            f"{where}.tome.ratio = {cfg.tome.ratio}: ToMe token merging is not implemented yet "
            f"(issue 8); set {where}.tome.ratio: 0"
        )
