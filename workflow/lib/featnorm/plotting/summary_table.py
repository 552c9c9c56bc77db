"""The summary table: one row per run, the settings that differ between runs, every metric.

Columns: `run`, then each resolved-config key whose value differs between the runs (short
names, e.g. `encoder.out_norm`), then the metrics of `METRIC_COLUMNS`. A metric a run does not
have (no eval file yet, a key absent) is a blank cell in every format, never a zero.
Written as CSV (raw numbers), Markdown and LaTeX (formatted numbers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from featnorm.plotting.run_results import (
    RunResults,
    differing_settings,
    flatten_config,
    images_seen,
    train_hours,
)

# column -> how it is printed in Markdown/LaTeX
METRIC_COLUMNS: dict[str, Callable[[float], str]] = {
    "linear top-1 best (%)": lambda v: f"{v:.2f}",
    "best depth": lambda v: f"{int(v)}",
    "linear top-1 last (%)": lambda v: f"{v:.2f}",
    "depth RMSE (m)": lambda v: f"{v:.4f}",
    "LiDAR": lambda v: f"{v:.2f}",
    "RankMe": lambda v: f"{v:.2f}",
    "images seen": lambda v: f"{int(v):,}",
    "train hours": lambda v: f"{v:.3g}",
    "encoder params": lambda v: f"{v / 1e6:.2f}M",
    "predictor params": lambda v: f"{v / 1e6:.2f}M",
}
INTEGER_COLUMNS = ("best depth", "images seen", "encoder params", "predictor params")


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
    """The table as a DataFrame with NaN for missing values.

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
        dp = r.depth_probe or {}
        li = r.lidar or {}
        p = params.get(r.name, {})
        row.update({
            "linear top-1 best (%)": lp["best"],
            "best depth": lp["best_depth"],
            "linear top-1 last (%)": lp["last"],
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


def formatted(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as display text; missing metrics are empty strings."""
    out = df.copy().astype(object)
    for col in df.columns:
        fmt = METRIC_COLUMNS.get(col)
        out[col] = [
            "" if pd.isna(v)
            else (fmt(v) if fmt is not None else str(v))
            for v in df[col]
        ]
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-style pipe table of formatted text (no `tabulate` dependency)."""
    text = formatted(df)
    cols = list(text.columns)
    cells = [[str(c) for c in cols]] + [[str(v).replace("|", "\\|") for v in row] for row in text.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    numeric = [c in METRIC_COLUMNS for c in cols]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(row, widths, numeric)) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]]) + "\n"


def to_latex(df: pd.DataFrame) -> str:
    text = formatted(df)
    align = "".join("r" if c in METRIC_COLUMNS else "l" for c in text.columns)
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


def make_summary_table(runs: list[RunResults], csv=None, md=None, tex=None, with_params: bool = True) -> pd.DataFrame:
    """Build the table from run directories (parameters and, when the log lacks it, images seen
    are read from each run's model.pt) and write the requested files."""
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
    df = summary_rows(runs, params, checkpoints)
    write_table(df, csv, md, tex)
    return df
