"""Matplotlib/seaborn setup shared by every figure, and writing a figure as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (clusters have no display)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402


def setup_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def run_colors(names: list[str]) -> dict[str, tuple]:
    """One stable colour per run, in the order given."""
    palette = sns.color_palette("tab10", n_colors=max(len(names), 1))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def save_figure(fig: plt.Figure, paths: list[str | Path]) -> list[Path]:
    """Write `fig` to every path (format from the suffix), creating folders; close it."""
    written = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p)
        written.append(p)
    plt.close(fig)
    return written


def quantile_scale(x: np.ndarray, q: float = 0.99) -> np.ndarray:
    """Map the `1 - q` and `q` quantiles of all finite values (pooled over every axis) to 0 and
    1 and clip, as the reference's `scale_to_zero_one`; NaN stays NaN, constant input -> 0.5."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros_like(x)
    lo, hi = np.quantile(finite, [1 - q, q])
    if hi <= lo:
        return np.where(np.isfinite(x), 0.5, np.nan)
    return np.clip((x - lo) / (hi - lo), 0, 1)
