"""Training curves: loss, LiDAR and RankMe against images seen, one line per run; the seed
copies of a group share its colour (one legend entry). Runs without a training log (random-init
baselines, runs not trained yet) are left out.

The loss is logged every step (hundreds of thousands of rows for a paper run), so it is
averaged into at most `points` bins of images seen before plotting; LiDAR and RankMe are
logged every N steps and plotted as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from featnorm.plotting.run_groups import RunGroup, group_runs
from featnorm.plotting.run_results import RunResults, with_images_seen
from featnorm.plotting.style import plt, run_colors, save_figure, setup_style

PANELS = (("loss", "training loss"), ("lidar", "LiDAR"), ("rankme", "RankMe"))


def binned_curve(log: pd.DataFrame, column: str, points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """`(images_seen, value)` of the rows where `column` is present, averaged into at most
    `points` equal-width bins of images seen (each bin at the mean x of its rows). Falls back
    to the step as x when the log has no images seen."""
    log = with_images_seen(log)
    x_key = "images_seen" if "images_seen" in log else "step"
    if column not in log or x_key not in log:
        return np.empty(0), np.empty(0)
    df = pd.DataFrame({"x": pd.to_numeric(log[x_key], errors="coerce"),
                       "y": pd.to_numeric(log[column], errors="coerce")}).dropna()
    df = df[np.isfinite(df["y"])]
    if len(df) <= points:
        return df["x"].to_numpy(float), df["y"].to_numpy(float)
    bins = pd.cut(df["x"], bins=points, labels=False)
    g = df.groupby(bins).mean()
    return g["x"].to_numpy(float), g["y"].to_numpy(float)


def make_training_curves(runs: list[RunResults], paths: list[str | Path], points: int = 1000,
                         log_loss: bool = True, groups: list[RunGroup] | None = None) -> plt.Figure:
    """Three panels (loss, LiDAR, RankMe) against images seen; runs without a column are left
    out of that panel, and a panel with no data says so. With `groups`, a group's seeds share
    its colour and legend entry."""
    setup_style()
    groups = groups or group_runs(runs)
    group_of = {r.name: g for g in groups for r in g.runs}
    colors = run_colors([g.name for g in groups])
    seeded = any(len(g.runs) > 1 for g in groups)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS), 3.8), squeeze=False)
    for ax, (column, label) in zip(axes[0], PANELS):
        drawn = 0
        for r in runs:
            if r.train_log is None:
                continue
            x, y = binned_curve(r.train_log, column, points)
            if len(x) == 0:
                continue
            g = group_of[r.name]
            name = g.name + (f" ({len(g.runs)} seeds)" if seeded and len(g.runs) > 1 else "")
            ax.plot(x, y, label=name, color=colors[g.name], lw=1.0 if len(g.runs) > 1 else 1.4,
                    alpha=0.8 if len(g.runs) > 1 else 1.0, marker="o" if len(x) < 30 else None, ms=3)
            drawn += 1
        ax.set_title(label)
        ax.set_xlabel("images seen")
        if drawn == 0:
            ax.text(0.5, 0.5, f"no {label} logged", ha="center", va="center", transform=ax.transAxes, color="0.4")
        elif column == "loss" and log_loss:
            ax.set_yscale("log")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, paths)
    return fig
