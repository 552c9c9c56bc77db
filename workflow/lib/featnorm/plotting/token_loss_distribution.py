"""The distribution of per-token losses, per run (the paper: DynTanh is longer-tailed than LN).

The losses are every predicted real target token's smooth-L1 loss under the same random masks
and forward the loss maps use (`loss_maps.compute_loss_map(..., keep_token_losses=True)`; by
default the training forward, as the reference), pooled over images.
Left: density of the losses on a log axis; right: the survival function of loss / median on
log-log axes, where the tails show independently of each run's loss scale. Tail statistics (99th percentile, excess kurtosis, ...) are in the
legend and in a CSV.

Losses differ in scale between runs (normalized vs unnormalized targets), so the tail shape
is also compared scale-free: `p99/median` and the kurtosis do not depend on the scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from featnorm.plotting.style import plt, run_colors, save_figure, setup_style


def tail_stats(losses: np.ndarray) -> dict[str, float]:
    """Summary of `(N,)` losses, in float64. `kurtosis` is the excess (Fisher) kurtosis,
    m4 / m2^2 - 3 (0 for a Gaussian); `skewness` m3 / m2^1.5."""
    x = np.asarray(losses, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {k: float("nan") for k in ("count", "mean", "std", "median", "p90", "p99", "p999", "max",
                                          "p99_over_median", "skewness", "kurtosis")}
    mean = x.mean()
    d = x - mean
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    p50, p90, p99, p999 = np.percentile(x, [50, 90, 99, 99.9])
    return {
        "count": float(x.size),
        "mean": float(mean),
        "std": float(np.sqrt(m2)),
        "median": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p999": float(p999),
        "max": float(x.max()),
        "p99_over_median": float(p99 / p50) if p50 > 0 else float("nan"),
        "skewness": float(m3 / m2**1.5) if m2 > 0 else float("nan"),
        "kurtosis": float(m4 / m2**2 - 3.0) if m2 > 0 else float("nan"),
    }


def stats_table(losses: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame([{"run": run, **tail_stats(x)} for run, x in losses.items()])


def _subsample(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if x.size <= n:
        return x
    return np.random.default_rng(seed).choice(x, size=n, replace=False)


def make_token_loss_figure(losses: dict[str, np.ndarray], paths: list[str | Path], num_masks: int,
                           num_images: int, max_points: int = 200_000) -> plt.Figure:
    """losses: run -> `(N,)` per-token losses. Statistics use every value; the curves use at most
    `max_points` values per run (a seeded random subset) to keep plotting fast."""
    setup_style()
    colors = run_colors(list(losses))
    fig, (ax_d, ax_s) = plt.subplots(1, 2, figsize=(11.0, 4.0))
    for run, x in losses.items():
        x = np.asarray(x, dtype=np.float64)
        st = tail_stats(x)
        pos = x[np.isfinite(x) & (x > 0)]
        if pos.size == 0:
            continue
        label = f"{run}: p99 {st['p99']:.3g}, p99/median {st['p99_over_median']:.2f}, kurtosis {st['kurtosis']:.2f}"
        sub = _subsample(pos, max_points)
        # density per unit of log10(loss), so runs of different loss scales are comparable
        edges = np.linspace(np.log10(sub.min()), np.log10(sub.max()) + 1e-9, 81)
        hist, _ = np.histogram(np.log10(sub), bins=edges, density=True)
        ax_d.stairs(hist, 10**edges, color=colors[run], lw=1.5, label=label)
        ax_d.axvline(st["p99"], color=colors[run], ls="--", lw=0.9)
        srt = np.sort(sub) / st["median"]
        surv = 1.0 - np.arange(srt.size) / srt.size
        ax_s.plot(srt, surv, color=colors[run], lw=1.5, label=run)
    ax_d.set_xscale("log")
    ax_d.set_xlabel("per-token loss (smooth-L1)")
    ax_d.set_ylabel("density per log10 unit")
    ax_d.set_title("distribution (dashed: 99th percentile)")
    ax_s.set_xscale("log")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("per-token loss / the run's median loss")
    ax_s.set_ylabel("P(loss / median > x)")
    ax_s.set_title("tail, scale-free (survival function)")
    handles, labels = ax_d.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=1, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Per-token losses over {num_images} image(s) x {num_masks:,} random masks", fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * len(losses), 1, 1))
    save_figure(fig, paths)
    return fig
