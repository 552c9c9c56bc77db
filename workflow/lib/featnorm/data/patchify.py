"""Patches of an image and back (SPEC section 2, step 3).

A patch vector is laid out `(py, px, channel)`: `patch.reshape(p, p, 3)` is the patch as an
image. `pixels_to_unit` maps uint8 [0, 255] to float [-1, 1] (x / 127.5 - 1).
"""

from __future__ import annotations

import numpy as np
import torch


def patchify(image: np.ndarray, patch_size: int) -> np.ndarray:
    """`(H, W, 3)` -> `(H / p, W / p, p * p * 3)`, same dtype; H and W must be multiples of p."""
    h, w, c = image.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image of {h}x{w} pixels is not a multiple of the patch size {p}")
    x = image.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(x).reshape(h // p, w // p, p * p * c)


def unpatchify(patches: np.ndarray, patch_size: int) -> np.ndarray:
    """`(gh, gw, p * p * 3)` -> `(gh * p, gw * p, 3)`: the inverse of `patchify`."""
    gh, gw, d = patches.shape
    p = patch_size
    c = d // (p * p)
    return patches.reshape(gh, gw, p, p, c).transpose(0, 2, 1, 3, 4).reshape(gh * p, gw * p, c)


def pixels_to_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]."""
    t = torch.as_tensor(x)
    return t.to(torch.float32).div_(127.5).sub_(1.0)


def unit_to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `pixels_to_unit` (rounded, uint8)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
