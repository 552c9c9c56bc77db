"""The layout of the per-image figures (loss maps, PCA features, token energy): one row per
image, the image itself in column 0, then the figure's own panels; no ticks; one colour bar
under a column where a column shares a colour scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.style import plt, save_figure, setup_style


def image_grid(images: list[SourceImage], ncols: int, col_width: float = 2.0,
               extra_height: float = 0.9) -> tuple[plt.Figure, np.ndarray]:
    """`(fig, axes)` with `axes` `(len(images), ncols)`; column 0 holds the images, their names
    as row labels. `extra_height` (inches) leaves room for the title and colour bars."""
    setup_style()
    n = len(images)
    fig, axes = plt.subplots(n, ncols, figsize=(col_width * ncols, 2.0 * n + extra_height), squeeze=False,
                             layout="constrained")
    for i, img in enumerate(images):
        axes[i, 0].imshow(img.pixels)
        axes[i, 0].set_ylabel(img.name, fontsize=7)
    axes[0, 0].set_title("image", fontsize=9)
    return fig, axes


def column_colorbar(fig: plt.Figure, im, column_axes: np.ndarray, label: str) -> None:
    """One colour bar under a column whose panels share `im`'s colour scale."""
    cb = fig.colorbar(im, ax=column_axes, location="bottom", shrink=0.9, aspect=12, pad=0.02)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6)


def save_image_grid(fig: plt.Figure, axes: np.ndarray, title: str, paths: list[str | Path]) -> plt.Figure:
    """Drop ticks and grid lines (the panels are pictures), title the figure, write every path."""
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, paths)
    return fig
