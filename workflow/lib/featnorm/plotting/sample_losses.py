"""Per-sample loss statistics (the reference's plot-sample-losses histograms).

For every image, under many random masks and (by default) the training forward: the mean over
predictor rows (masks x batch-repeat copies, one image per row) of the row's mean token loss,
and of the row's token-loss variance (`loss_maps.LossMap.sample_mean` / `sample_var`). The
figure shows, per run (one column each, its own loss scale), the density histogram (20 bins)
of the per-sample mean losses and of the per-sample variances, with their cumulative
distribution as a line, as the reference's histogram / cum_histogram / histogram_variance /
cum_histogram_variance images.

The reference resizes each repeat of an image to a new random size; here an image keeps its
evaluation size (centre crop, `--image-size`) under every mask, so the loss maps of the same
images are comparable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.loss_maps import LossMap
from featnorm.plotting.style import plt, run_colors, save_figure, setup_style

STATISTICS = (("sample_mean", "per-sample mean token loss"), ("sample_var", "per-sample token-loss variance"))


def sample_stats_table(results: dict[str, list[LossMap]], images: list[SourceImage]) -> pd.DataFrame:
    """One row per (run, image): `run`, `image`, `sample_mean`, `sample_var`."""
    rows = [{"run": run, "image": img.name, "sample_mean": lm.sample_mean, "sample_var": lm.sample_var}
            for run, lms in results.items() for img, lm in zip(images, lms)]
    return pd.DataFrame(rows, columns=["run", "image", "sample_mean", "sample_var"])


def density_and_cumulative(values: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(edges (bins + 1,), density (bins,), cumulative (bins,))` of the finite values, as
    `plt.hist(density=True)` and `plt.hist(cumulative=True, density=True)` compute them."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.zeros(bins + 1), np.zeros(bins), np.zeros(bins)
    density, edges = np.histogram(x, bins=bins, density=True)
    cumulative = np.cumsum(density * np.diff(edges))
    return edges, density, cumulative


def make_sample_loss_figure(table: pd.DataFrame, paths: list[str | Path], num_masks: int,
                            forward: str = "training") -> plt.Figure:
    """Rows: the per-sample mean and variance; columns: runs (each with its own scale)."""
    setup_style()
    runs = list(dict.fromkeys(table["run"]))
    colors = run_colors(runs)
    fig, axes = plt.subplots(2, max(1, len(runs)), figsize=(4.0 * max(1, len(runs)), 6.0), squeeze=False)
    for j, run in enumerate(runs):
        sub = table[table["run"] == run]
        for i, (col, label) in enumerate(STATISTICS):
            ax = axes[i, j]
            edges, density, cumulative = density_and_cumulative(sub[col].to_numpy())
            ax.stairs(density, edges, fill=True, color=colors[run], alpha=0.6, ec="black", lw=0.6)
            ax.set_xlabel(label)
            ax.set_ylabel("density")
            twin = ax.twinx()
            twin.step(edges[1:], cumulative, where="post", color="0.2", lw=1.2)
            twin.set_ylim(0, 1.02)
            twin.set_ylabel("cumulative fraction")
            twin.grid(False)
            if i == 0:
                ax.set_title(f"{run} ({len(sub)} images)", fontsize=9)
    how = "training forward" if forward == "training" else "every target predicted"
    fig.suptitle(f"Per-sample losses over {num_masks:,} random masks per image ({how})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, paths)
    return fig
