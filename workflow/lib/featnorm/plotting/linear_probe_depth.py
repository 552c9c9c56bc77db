"""Linear-probe top-1 accuracy against encoder depth, one line per run.

Depth 0 is the patch-embedding output, depth d the output of block d (SPEC 4: 13 depths for 12
blocks; the probe JSON's `depths` says which, e.g. only the last with the "last-layer"
extraction mode). Each run's best depth is marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featnorm.plotting.run_results import RunResults
from featnorm.plotting.style import plt, run_colors, save_figure, setup_style


def per_depth_top1(probe: dict | None, key: str = "top1") -> np.ndarray:
    """`(num_depths,)` accuracies (percent, as written by `evaluation.linear_probe`; NaN where
    missing) of `eval/linear_probe.json`."""
    if not probe or not probe.get(key):
        return np.empty(0)
    vals = []
    for v in probe[key]:
        try:
            vals.append(float(v))
        except (TypeError, ValueError):
            vals.append(np.nan)
    return np.array(vals, dtype=float)


def make_linear_probe_depth(runs: list[RunResults], paths: list[str | Path], key: str = "top1") -> plt.Figure:
    setup_style()
    colors = run_colors([r.name for r in runs])
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    drawn = 0
    for r in runs:
        acc = per_depth_top1(r.linear_probe, key)
        if acc.size == 0 or np.all(np.isnan(acc)):
            continue
        depth = np.asarray(r.linear_probe.get("depths") or range(acc.size), dtype=float)
        if depth.size != acc.size:
            depth = np.arange(acc.size, dtype=float)
        ax.plot(depth, acc, marker="o", ms=4, lw=1.5, color=colors[r.name], label=r.name)
        best = int(np.nanargmax(acc))
        ax.plot([depth[best]], [acc[best]], marker="*", ms=13, color=colors[r.name], mec="black", mew=0.6, zorder=5)
        drawn += 1
    ax.set_xlabel("depth (0 = patch embedding, d = output of block d)")
    ax.set_ylabel(f"linear probe {key.replace('top', 'top-')} (%)")
    if drawn:
        ax.legend(title="run (★ best depth)", frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "no linear-probe results", ha="center", va="center", transform=ax.transAxes, color="0.4")
    fig.tight_layout()
    save_figure(fig, paths)
    return fig
