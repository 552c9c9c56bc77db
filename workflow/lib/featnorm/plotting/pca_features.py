"""PCA feature maps: each image's patch features at one depth, first three principal
components shown as RGB (one row per image, one column per run, the original first).

Features are the teacher encoder's `hiddens[depth]` (default -4: the 4th block from the end,
the depth the depth probe uses), computed on the whole image. The PCA is fitted per image
and per run. Component signs are arbitrary; we orient each so its third moment is positive
(the long tail, usually the salient object, comes out bright) so figures are reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featnorm.plotting.image_grid import image_grid, save_image_grid
from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.model_io import load_teacher, teacher_features
from featnorm.plotting.run_results import RunResults
from featnorm.plotting.style import plt


def pca_rgb(features: torch.Tensor, clip: float = 1.0) -> np.ndarray:
    """`(N, D)` features -> `(N, 3)` in [0, 1]: projections on the first three principal
    components (float64 SVD of the centred features), sign-oriented, each min-max scaled
    between its `clip` and `100 - clip` percentiles. Missing components (N or D < 3) are 0."""
    x = features.detach().to(torch.float64).cpu()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(3, vh.shape[0])
    proj = (x @ vh[:k].T).numpy()  # (N, k)
    out = np.zeros((x.shape[0], 3))
    for c in range(k):
        p = proj[:, c]
        if s[c] <= 1e-12 * max(float(s[0]), 1e-300):
            continue  # no variance along this component: leave it black
        if np.mean(p**3) < 0:
            p = -p
        lo, hi = np.percentile(p, [clip, 100 - clip])
        out[:, c] = np.clip((p - lo) / (hi - lo), 0, 1) if hi > lo else 0.5
    return out


def pca_image(grid: torch.Tensor, clip: float = 1.0) -> np.ndarray:
    """`(gh, gw, D)` feature grid -> `(gh, gw, 3)` RGB in [0, 1]."""
    gh, gw, d = grid.shape
    return pca_rgb(grid.reshape(gh * gw, d), clip).reshape(gh, gw, 3)


def make_pca_figure(images: list[SourceImage], rgb: dict[str, list[np.ndarray]], paths: list[str | Path],
                    depth_label: str) -> plt.Figure:
    """rgb: run -> one `(gh, gw, 3)` array per image."""
    runs = list(rgb)
    fig, axes = image_grid(images, 1 + len(runs), extra_height=0.5)
    for k, run in enumerate(runs):
        for i in range(len(images)):
            axes[i, 1 + k].imshow(rgb[run][i], interpolation="nearest")
        axes[0, 1 + k].set_title(run, fontsize=9)
    return save_image_grid(fig, axes, f"First three principal components of teacher features ({depth_label}) as RGB",
                           paths)


def depth_label(depth: int, num_blocks: int) -> str:
    """Human name of `hiddens[depth]` for an encoder of `num_blocks` blocks."""
    d = depth % (num_blocks + 1)
    return "patch embedding" if d == 0 else f"output of block {d} of {num_blocks}"


def pca_for_runs(runs: list[RunResults], images: list[SourceImage], depth: int = -4,
                 device: torch.device | str = "cpu") -> tuple[dict[str, list[np.ndarray]], str]:
    """run -> one `(gh, gw, 3)` PCA image per image, and a label of the depth used."""
    out: dict[str, list[np.ndarray]] = {}
    label = ""
    for run in runs:
        encoder, cfg = load_teacher(run.model_path, device)
        label = depth_label(depth, cfg.model.encoder.depth)
        out[run.name] = [pca_image(teacher_features(encoder, img.pixels, cfg, torch.device(device), depth))
                         for img in images]
        del encoder
    return out, label
