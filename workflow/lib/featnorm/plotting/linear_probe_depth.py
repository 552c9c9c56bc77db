"""Linear-probe top-1 accuracy against encoder depth, one line per run (or per group of seed
copies: the mean over seeds, with a band of ± one standard deviation).

Depth 0 is the patch-embedding output, depth d the output of block d (SPEC 4: 13 depths for 12
blocks; the probe JSON's `depths` says which, e.g. only the last with the "last-layer"
extraction mode). Each line's best depth is marked; random-init baselines are dashed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featnorm.plotting.run_groups import RunGroup, group_runs
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


def group_curve(group: RunGroup, key: str = "top1") -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, std, n) per depth over the group's runs that have a result (std 0 below 2 runs)."""
    curves = [c for c in (per_depth_top1(r.linear_probe, key) for r in group.runs) if c.size and not np.all(np.isnan(c))]
    if not curves:
        return np.empty(0), np.empty(0), 0
    width = max(c.size for c in curves)
    stack = np.full((len(curves), width), np.nan)
    for i, c in enumerate(curves):
        stack[i, : c.size] = c
    mean = np.nanmean(stack, axis=0)
    std = np.nanstd(stack, axis=0, ddof=1) if len(curves) > 1 else np.zeros(width)
    return mean, std, len(curves)


def make_linear_probe_depth(runs: list[RunResults], paths: list[str | Path], key: str = "top1",
                            groups: list[RunGroup] | None = None) -> plt.Figure:
    setup_style()
    groups = groups or group_runs(runs)
    colors = run_colors([g.name for g in groups])
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    drawn = 0
    for g in groups:
        acc, std, n = group_curve(g, key)
        if n == 0:
            continue
        depths = next((r.linear_probe.get("depths") for r in g.runs if r.linear_probe and r.linear_probe.get("depths")), None)
        depth = np.asarray(depths if depths is not None and len(depths) == acc.size else range(acc.size), dtype=float)
        label = g.name + (f" (n={n})" if n > 1 else "") + (" [random init]" if g.baseline else "")
        ax.plot(depth, acc, marker="o", ms=4, lw=1.5, color=colors[g.name], label=label,
                ls="--" if g.baseline else "-")
        if n > 1:
            ax.fill_between(depth, acc - std, acc + std, color=colors[g.name], alpha=0.2, lw=0)
        best = int(np.nanargmax(acc))
        ax.plot([depth[best]], [acc[best]], marker="*", ms=13, color=colors[g.name], mec="black", mew=0.6, zorder=5)
        drawn += 1
    ax.set_xlabel("depth (0 = patch embedding, d = output of block d)")
    ax.set_ylabel(f"linear probe {key.replace('top', 'top-')} (%)")
    if drawn:
        title = "run (★ best depth)" + (", band: ± 1 std over seeds" if any(len(g.runs) > 1 for g in groups) else "")
        ax.legend(title=title, frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "no linear-probe results", ha="center", va="center", transform=ax.transAxes, color="0.4")
    fig.tight_layout()
    save_figure(fig, paths)
    return fig
