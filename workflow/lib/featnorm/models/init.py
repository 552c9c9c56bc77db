"""Weight initialisation shared by the encoder and the predictor (config `model.init`).

"torch-default": every layer keeps the initialisation PyTorch gives it at construction
(nn.Linear: kaiming-uniform weights, uniform biases in +-1/sqrt(fan_in)); the reference's
choice. "trunc-normal": ViT-style truncated-normal (std 0.02) linear weights and zero biases.
Norms keep their own init either way; learned embeddings (registers, mask token, absolute
positions) are drawn normal with std 0.02 by their modules.
"""

from __future__ import annotations

from torch import nn

INITS = ("torch-default", "trunc-normal")


def trunc_normal_linear(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases; for `model.apply`.

    Deterministic given `torch.manual_seed`. Layers that hold linear maps as raw parameters
    (DiffMoE experts) re-initialise through their own `vit_init()`.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif hasattr(module, "vit_init"):
        module.vit_init()


def init_weights(model: nn.Module, kind: str) -> None:
    """Apply the initialisation `kind` (one of INITS) to every submodule of `model`."""
    if kind not in INITS:
        raise ValueError(f"unknown init {kind!r}; expected one of {list(INITS)}")
    if kind == "trunc-normal":
        model.apply(trunc_normal_linear)
