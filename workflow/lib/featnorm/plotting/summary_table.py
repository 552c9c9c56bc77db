"""The summary table: one row per run (or per group of seed copies), the settings that differ
between them, every metric, and the gain over the random-init baseline.

Columns: `run`; with seeds `n` and `seeds`; with a baseline `model` (pretrained / random
init); each resolved-config key whose value differs between the rows (short names, e.g.
`encoder.out_norm`; `seed` is not a setting); then the metrics of `METRIC_COLUMNS`, with the
`GAIN_COLUMNS` after the depth RMSE: each trained group's mean minus its reference baseline's
mean, signed so that positive is better (for the depth RMSE: baseline minus run).

A row of several seeds holds the mean over the seeds that have the value; the CSV adds a
`<metric> std` column (sample std, ddof 1) beside each measured metric (`SPREAD_COLUMNS`)
and a `<gain> se` column (standard error of the difference of two means,
sqrt(s1^2/n1 + s2^2/n2)); Markdown and LaTeX show `mean ± std` and `gain ± se`. A metric a run does not have (no eval file yet, a key
absent) is a blank cell in every format, never a zero.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from featnorm.plotting.run_groups import RunGroup, group_runs, mean_std
from featnorm.plotting.run_results import (
    RunResults,
    differing_settings,
    flatten_config,
    images_seen,
    train_hours,
)


def _whole_or_1f(v: float) -> str:
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


# column -> how it is printed in Markdown/LaTeX
METRIC_COLUMNS: dict[str, Callable[[float], str]] = {
    "linear top-1 best (%)": lambda v: f"{v:.2f}",
    "best depth": _whole_or_1f,
    "linear top-1 last (%)": lambda v: f"{v:.2f}",
    "kNN top-1 best (%)": lambda v: f"{v:.2f}",
    "kNN top-1 last (%)": lambda v: f"{v:.2f}",
    "depth RMSE (m)": lambda v: f"{v:.4f}",
    "LiDAR": lambda v: f"{v:.2f}",
    "RankMe": lambda v: f"{v:.2f}",
    "images seen": lambda v: f"{int(round(v)):,}",
    "train hours": lambda v: f"{v:.3g}",
    "encoder params": lambda v: f"{v / 1e6:.2f}M",
    "predictor params": lambda v: f"{v / 1e6:.2f}M",
}
INTEGER_COLUMNS = ("best depth", "images seen", "encoder params", "predictor params")
# measurements whose spread over seeds is shown (not the depth index, the budget or the size)
SPREAD_COLUMNS = ("linear top-1 best (%)", "linear top-1 last (%)", "kNN top-1 best (%)", "kNN top-1 last (%)",
                  "depth RMSE (m)", "LiDAR", "RankMe", "train hours")
# gain column -> (metric, +1 when higher is better, -1 when lower is better)
GAIN_COLUMNS: dict[str, tuple[str, int]] = {
    "linear top-1 gain (pts)": ("linear top-1 best (%)", 1),
    "kNN top-1 gain (pts)": ("kNN top-1 best (%)", 1),
    "depth RMSE gain (m)": ("depth RMSE (m)", -1),
}
GAIN_FORMATS: dict[str, Callable[[float], str]] = {
    "linear top-1 gain (pts)": lambda v: f"{v:+.2f}",
    "kNN top-1 gain (pts)": lambda v: f"{v:+.2f}",
    "depth RMSE gain (m)": lambda v: f"{v:+.4f}",
}
# spread columns (CSV only): shown after their column's value in Markdown / LaTeX
SPREAD_SUFFIXES = (" std", " se")
NUMERIC_TEXT = {"n"}


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def short_key(key: str) -> str:
    """`model.encoder.out_norm` -> `encoder.out_norm`: the `model.` prefix says nothing here."""
    return key[len("model."):] if key.startswith("model.") else key


def linear_probe_summary(probe: dict | None) -> dict[str, float | None]:
    """Best top-1, its depth and last-depth top-1 (percent, as `evaluation.linear_probe` writes
    them) from `eval/linear_probe.json`: the stored best/last fields when present, else derived
    from the per-depth `top1` list."""
    out = {"best": None, "best_depth": None, "last": None}
    if not probe:
        return out
    per_depth = [_num(v) for v in probe.get("top1", []) or []]
    real = [(v, i) for i, v in enumerate(per_depth) if v is not None]
    best, best_depth, last = _num(probe.get("best_top1")), _num(probe.get("best_depth")), _num(probe.get("last_top1"))
    if real:
        top, top_depth = max(real)
        best = top if best is None else best
        best_depth = top_depth if best_depth is None else best_depth
        last = per_depth[-1] if last is None else last
    return {"best": best, "best_depth": best_depth, "last": last}


def summary_rows(runs: list[RunResults], params: dict[str, dict] | None = None,
                 checkpoints: dict[str, dict] | None = None) -> pd.DataFrame:
    """The table of single runs (one row per run) as a DataFrame with NaN for missing values.

    params: run name -> {"encoder": n, "predictor": n} (from `model_io.count_parameters`).
    checkpoints: run name -> {"images_seen": ...} read from model.pt, used when the log lacks it.
    """
    params = params or {}
    checkpoints = checkpoints or {}
    # runs without a config.yaml yet (not trained) would make every key differ: leave them out
    configs = [r.config for r in runs if r.config]
    settings = differing_settings(configs) if len(configs) > 1 else []
    records = []
    for r in runs:
        flat = flatten_config(r.config)
        row: dict[str, Any] = {"run": r.name}
        for key in settings:
            v = flat.get(key)
            row[short_key(key)] = "" if v is None else (", ".join(map(str, v)) if isinstance(v, tuple) else v)
        lp = linear_probe_summary(r.linear_probe)
        knn = linear_probe_summary(r.knn_probe)  # same best/last fields
        dp = r.depth_probe or {}
        li = r.lidar or {}
        p = params.get(r.name, {})
        row.update({
            "linear top-1 best (%)": lp["best"],
            "best depth": lp["best_depth"],
            "linear top-1 last (%)": lp["last"],
            "kNN top-1 best (%)": knn["best"],
            "kNN top-1 last (%)": knn["last"],
            "depth RMSE (m)": _num(dp.get("rmse")),
            "LiDAR": _num(li.get("lidar")),
            "RankMe": _num(li.get("rankme")),
            "images seen": images_seen(r, checkpoints.get(r.name)),
            "train hours": train_hours(r.train_log),
            "encoder params": p.get("encoder"),
            "predictor params": p.get("predictor"),
        })
        records.append(row)
    df = pd.DataFrame.from_records(records)
    for col in METRIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
        if col in INTEGER_COLUMNS:
            df[col] = df[col].round().astype("Int64")  # whole numbers that may be missing
    return df


def group_rows(per_run: pd.DataFrame, groups: list[RunGroup]) -> pd.DataFrame:
    """One row per group from the per-run table of `summary_rows` (its `run` column names the
    runs of `groups`): mean (and std with seeds) of every metric, the gain over the reference
    baseline (and its standard error with seeds)."""
    by_run = {row["run"]: row for row in per_run.to_dict("records")}
    multi = any(len(g.runs) > 1 for g in groups)
    with_baseline = any(g.baseline for g in groups)
    references = {g.reference for g in groups if g.reference}
    configs = {g.name: next((r.config for r in g.runs if r.config), {}) for g in groups}
    present = [c for c in configs.values() if c]
    settings = differing_settings(present, ignore=("name", "seed")) if len(present) > 1 else []
    stats: dict[str, dict[str, tuple]] = {}
    for g in groups:
        rows = [by_run[r.name] for r in g.runs]
        stats[g.name] = {col: mean_std(row.get(col) for row in rows) for col in METRIC_COLUMNS}

    records = []
    for g in groups:
        row: dict[str, Any] = {"run": g.name}
        if multi:
            row["n"] = len(g.runs)
            row["seeds"] = ", ".join("" if s is None else str(s) for s in g.seeds)
        if with_baseline:
            row["model"] = "random init" if g.baseline else "pretrained"
        flat = flatten_config(configs[g.name])
        for key in settings:
            v = flat.get(key)
            row[short_key(key)] = "" if v is None else (", ".join(map(str, v)) if isinstance(v, tuple) else v)
        for col in METRIC_COLUMNS:
            mean, std, _ = stats[g.name][col]
            row[col] = mean
            if multi and col in SPREAD_COLUMNS:
                row[f"{col} std"] = std
            if col == "depth RMSE (m)" and references:
                row.update(_gains(stats, g, multi))
                if len(references) > 1 or len([b for b in groups if b.baseline]) > 1:
                    row["gain vs"] = g.reference or ""
        records.append(row)
    df = pd.DataFrame.from_records(records)
    for col in df.columns:
        if col in METRIC_COLUMNS or col in GAIN_COLUMNS or col.endswith(SPREAD_SUFFIXES):
            df[col] = pd.to_numeric(df[col], errors="coerce")
            whole = df[col].dropna()
            if col in INTEGER_COLUMNS and ((whole - whole.round()).abs() < 1e-9).all():
                df[col] = df[col].round().astype("Int64")  # whole numbers that may be missing
    return df


def _gains(stats: dict[str, dict[str, tuple]], g: RunGroup, multi: bool) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for col, (metric, sign) in GAIN_COLUMNS.items():
        gain = se = None
        if g.reference and g.reference in stats:
            m1, s1, n1 = stats[g.name][metric]
            m0, s0, n0 = stats[g.reference][metric]
            if m1 is not None and m0 is not None:
                gain = sign * (m1 - m0)
                if s1 is not None and s0 is not None:
                    se = math.sqrt(s1 * s1 / n1 + s0 * s0 / n0)
        out[col] = gain
        if multi:
            out[f"{col} se"] = se
    return out


def _display_format(col: str) -> Callable[[float], str] | None:
    return GAIN_FORMATS.get(col) or METRIC_COLUMNS.get(col) or ((lambda v: f"{int(v)}") if col in NUMERIC_TEXT else None)


def displayed_columns(df: pd.DataFrame) -> list[str]:
    """The columns Markdown and LaTeX show: the spread columns are folded into their value's."""
    return [c for c in df.columns if not (c.endswith(SPREAD_SUFFIXES) and c.rsplit(" ", 1)[0] in df.columns)]


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """Every shown cell as display text (`mean ± std`, `gain ± se` where the spread exists);
    missing metrics are empty strings."""
    cols = displayed_columns(df)
    out = df[cols].copy().astype(object)
    for col in cols:
        fmt = _display_format(col)
        spread_fmt = METRIC_COLUMNS.get(GAIN_COLUMNS.get(col, (col,))[0], fmt)
        spread = next((df[col + s] for s in SPREAD_SUFFIXES if col + s in df.columns), None)
        cells = []
        for i, v in enumerate(df[col]):
            if not isinstance(v, str) and pd.isna(v):
                cells.append("")
                continue
            text = fmt(v) if fmt is not None else str(v)
            if spread is not None and not pd.isna(spread.iloc[i]):
                text += f" ± {spread_fmt(abs(spread.iloc[i]))}"
            cells.append(text)
        out[col] = cells
    return out


def _is_numeric(col: str) -> bool:
    return _display_format(col) is not None


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-style pipe table of formatted text (no `tabulate` dependency)."""
    text = formatted(df)
    cols = list(text.columns)
    cells = [[str(c) for c in cols]] + [[str(v).replace("|", "\\|") for v in row] for row in text.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    numeric = [_is_numeric(c) for c in cols]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]]) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    text = formatted(df)
    align = "".join("r" if _is_numeric(c) else "l" for c in text.columns)
    return text.to_latex(index=False, column_format=align, escape=True)


def write_table(df: pd.DataFrame, csv: str | Path | None = None, md: str | Path | None = None,
                tex: str | Path | None = None) -> list[Path]:
    written = []
    for path, render in ((csv, None), (md, to_markdown), (tex, to_latex)):
        if path is None:
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if render is None:
            df.to_csv(path, index=False, na_rep="")
        else:
            path.write_text(render(df))
        written.append(path)
    return written


def make_summary_table(runs: list[RunResults], csv=None, md=None, tex=None, with_params: bool = True,
                       groups: list[RunGroup] | None = None) -> pd.DataFrame:
    """Build the table from run directories (parameters and, when the log lacks it, images seen
    are read from each run's model.pt) and write the requested files. `groups` (from
    `run_groups.group_runs`; default: every run alone) gives one row per group."""
    params: dict[str, dict] = {}
    checkpoints: dict[str, dict] = {}
    if with_params:
        from featnorm.evaluation.checkpoint_loading import load_checkpoint_dict
        from featnorm.plotting.model_io import count_parameters

        for r in runs:
            if r.has_model:
                ckpt = load_checkpoint_dict(r.model_path)
                params[r.name] = count_parameters(ckpt, r.model_path)
                checkpoints[r.name] = {"images_seen": ckpt.get("images_seen")}
                del ckpt
    df = group_rows(summary_rows(runs, params, checkpoints), groups or group_runs(runs))
    write_table(df, csv, md, tex)
    return df
