"""How much training the effect needs: k-NN top-1 of each trained group against training steps,
and its gain over the random-init baseline, the seeds as a mean line and a band of ± 1 std.

Points of a run: its training snapshots (`train.snapshot_steps`, `eval/snapshots/knn_probe-
step-<N>.json`) and its final model (`eval/knn_probe.json`), at the step the features were
extracted from (`model_step`). The gain of a point is its k-NN top-1 (best depth) minus the mean
k-NN top-1 of the group's reference baseline over the baseline's seeds. Step 0 is the baseline
run of the same seed when there is one: the random-init baseline of seed s is exactly the
trained run's starting point (featnorm.ijepa.run_model), so the curve starts where training does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from featnorm.plotting.run_groups import RunGroup, mean_std
from featnorm.plotting.run_results import RunResults, last_value
from featnorm.plotting.style import plt, run_colors, save_figure, setup_style
from featnorm.plotting.summary_table import linear_probe_summary

CSV_COLUMNS = ["run", "baseline", "step", "n", "gain_mean", "gain_std", "knn_top1_mean", "knn_top1_std",
               "baseline_knn_top1", "images_seen_mean"]


def _best(knn: dict | None) -> float | None:
    return linear_probe_summary(knn)["best"]


def _final_step(run: RunResults) -> int | None:
    step = (run.knn_probe or {}).get("model_step")
    if isinstance(step, (int, float)) and step >= 0:
        return int(step)
    last = last_value(run.train_log, "step")
    return None if last is None else int(last)


def gain_points(groups: list[RunGroup]) -> pd.DataFrame:
    """One row per (trained run, step): run, group, baseline, seed, step, images_seen, knn_top1,
    baseline_knn_top1 (the baseline group's mean), gain."""
    by_name = {g.name: g for g in groups}
    rows = []
    for g in groups:
        if g.baseline or g.reference not in by_name:
            continue
        base = by_name[g.reference]
        base_mean, _, base_n = mean_std(_best(r.knn_probe) for r in base.runs)
        if base_n == 0:
            continue
        base_by_seed = {r.config.get("seed"): r for r in base.runs}
        for r in g.runs:
            seed = r.config.get("seed")
            points = []
            start = base_by_seed.get(seed)
            if start is not None and _best(start.knn_probe) is not None:
                points.append((0, 0, _best(start.knn_probe)))
            for step, knn in sorted(r.knn_snapshots.items()):
                points.append((step, knn.get("images_seen"), _best(knn)))
            final = _final_step(r)
            if final is not None and _best(r.knn_probe) is not None and final not in r.knn_snapshots:
                points.append((final, (r.knn_probe or {}).get("images_seen"), _best(r.knn_probe)))
            for step, seen, top1 in points:
                if top1 is None:
                    continue
                rows.append({"run": r.name, "group": g.name, "baseline": base.name, "seed": seed, "step": step,
                             "images_seen": seen, "knn_top1": top1, "baseline_knn_top1": base_mean,
                             "gain": top1 - base_mean})
    return pd.DataFrame(rows, columns=["run", "group", "baseline", "seed", "step", "images_seen", "knn_top1",
                                       "baseline_knn_top1", "gain"])


def gain_curves(points: pd.DataFrame) -> pd.DataFrame:
    """Per group and step: the mean and sample std of the gain and the k-NN top-1 over seeds."""
    rows = []
    for (group, step), df in points.groupby(["group", "step"], sort=True):
        gain, gain_std, n = mean_std(df["gain"])
        top1, top1_std, _ = mean_std(df["knn_top1"])
        seen, _, _ = mean_std(df["images_seen"])
        rows.append({"run": group, "baseline": df["baseline"].iloc[0], "step": int(step), "n": n,
                     "gain_mean": gain, "gain_std": gain_std, "knn_top1_mean": top1, "knn_top1_std": top1_std,
                     "baseline_knn_top1": df["baseline_knn_top1"].iloc[0], "images_seen_mean": seen})
    order = list(dict.fromkeys(points["group"])) if len(points) else []
    out = pd.DataFrame(rows, columns=CSV_COLUMNS)
    if len(out):
        out["_order"] = out["run"].map(order.index)
        out = out.sort_values(["_order", "step"]).drop(columns="_order").reset_index(drop=True)
    return out


def make_gain_vs_steps(groups: list[RunGroup], paths: list[str | Path], csv: str | Path | None = None) -> plt.Figure:
    """Two panels against training steps: k-NN top-1 (baselines as dashed lines) and the gain
    over random init; a group's seeds as mean and ± 1 std band. Writes the curves to `csv`."""
    setup_style()
    curves = gain_curves(gain_points(groups))
    if csv is not None:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        curves.to_csv(csv, index=False, na_rep="")
    colors = run_colors([g.name for g in groups])
    fig, (ax_acc, ax_gain) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    for group, df in curves.groupby("run", sort=False):
        x = df["step"].to_numpy(float)
        for ax, col in ((ax_acc, "knn_top1"), (ax_gain, "gain")):
            y = df[f"{col}_mean"].to_numpy(float)
            s = df[f"{col}_std"].to_numpy(float)
            n = int(df["n"].max())
            ax.plot(x, y, marker="o", ms=3.5, lw=1.5, color=colors[group], label=group + (f" (n={n})" if n > 1 else ""))
            band = ~np.isnan(s)
            if band.any():
                ax.fill_between(x[band], (y - s)[band], (y + s)[band], color=colors[group], alpha=0.2, lw=0)
    for name in dict.fromkeys(curves["baseline"]) if len(curves) else []:
        level = curves.loc[curves["baseline"] == name, "baseline_knn_top1"].iloc[0]
        ax_acc.axhline(level, color=colors.get(name, "0.3"), ls="--", lw=1.2, label=f"{name} [random init]")
    ax_gain.axhline(0.0, color="0.3", ls="--", lw=1.0)
    ax_acc.set_ylabel("k-NN top-1, best depth (%)")
    ax_gain.set_ylabel("gain over random init (points)")
    for ax in (ax_acc, ax_gain):
        ax.set_xlabel("training step")
        if len(curves):
            ax.legend(frameon=False, fontsize=8)
        else:
            ax.text(0.5, 0.5, "no k-NN results of trained runs with a baseline", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
    fig.tight_layout()
    save_figure(fig, paths)
    return fig
