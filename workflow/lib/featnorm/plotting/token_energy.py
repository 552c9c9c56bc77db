"""Token energy maps: the L2 norm of each patch's teacher output feature (after the output
norm), per image and run. The paper's argument: visual tokens carry an energy hierarchy (large
norms on salient regions) that a LayerNorm output erases, since LN (without affine) gives every
token the same norm, sqrt(dim). Also written: per run and image, the spread of the norms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from featnorm.plotting.image_grid import column_colorbar, image_grid, save_image_grid
from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.model_io import load_teacher, teacher_features
from featnorm.plotting.run_results import RunResults
from featnorm.plotting.style import plt


def energy_stats(energy: np.ndarray) -> dict[str, float]:
    """Spread of one image's `(gh, gw)` token norms: mean, std, coefficient of variation
    (std / mean) and max / min."""
    e = energy.astype(np.float64).ravel()
    mean = float(e.mean())
    return {
        "mean_norm": mean,
        "std_norm": float(e.std()),
        "cv": float(e.std() / mean) if mean > 0 else float("nan"),
        "max_over_min": float(e.max() / e.min()) if e.min() > 0 else float("nan"),
    }


def energy_table(images: list[SourceImage], energy: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    rows = []
    for run, maps in energy.items():
        for img, m in zip(images, maps):
            rows.append({"run": run, "image": img.name, **energy_stats(m)})
    return pd.DataFrame(rows)


def make_token_energy_figure(images: list[SourceImage], energy: dict[str, list[np.ndarray]],
                             paths: list[str | Path], cmap: str = "viridis") -> plt.Figure:
    """Rows: images; columns: the image, then one energy map per run on one colour scale per
    run, 0 to the run's largest norm (its colorbar under the column states it)."""
    runs = list(energy)
    fig, axes = image_grid(images, 1 + len(runs), col_width=2.1)
    for k, run in enumerate(runs):
        maps = energy[run]
        # from 0: norms are non-negative, and a min-max scale would blow LayerNorm's
        # rounding-level spread (all norms ~ sqrt(dim)) up into a fake hierarchy
        vmin, vmax = 0.0, float(max(m.max() for m in maps)) or 1.0
        im = None
        for i, m in enumerate(maps):
            im = axes[i, 1 + k].imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        cv = np.mean([energy_stats(m)["cv"] for m in maps])
        axes[0, 1 + k].set_title(f"{run}\n‖feature‖₂ (mean CV {cv:.3f})", fontsize=9)
        column_colorbar(fig, im, axes[:, 1 + k], f"{run}: token L2 norm")
    return save_image_grid(fig, axes, "Token energy: L2 norm of each patch's teacher output feature", paths)


def energy_for_runs(runs: list[RunResults], images: list[SourceImage],
                    device: torch.device | str = "cpu") -> dict[str, list[np.ndarray]]:
    """run -> one `(gh, gw)` map of token L2 norms per image."""
    out: dict[str, list[np.ndarray]] = {}
    for run in runs:
        encoder, cfg = load_teacher(run.model_path, device)
        out[run.name] = [teacher_features(encoder, img.pixels, cfg, torch.device(device)).norm(dim=-1).numpy()
                         for img in images]
        del encoder
    return out
