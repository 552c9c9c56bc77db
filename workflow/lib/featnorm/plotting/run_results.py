"""Reading one run's result directory (ARCHITECTURE.md, "Result layout").

    runs/<run>/config.yaml        the resolved run config
    runs/<run>/model.pt           weights + resolved config ("config", "teacher", "student", "predictor", "target_norm",
                                  "step", "images_seen")
    runs/<run>/train_log.jsonl    one JSON row per step (step, images_seen, loss, lr, ...; some rows
                                  carry "rankme" and/or "lidar")
    runs/<run>/eval/linear_probe.json, knn_probe.json, depth_probe.json, lidar.json
    runs/<run>/eval/snapshots/knn_probe-step-<N>.json   k-NN of the snapshots of train.snapshot_steps

Every piece is optional here: a figure or table uses what exists and leaves the rest blank.
A file that exists but cannot be parsed is an error naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml


class FigureInputError(ValueError):
    """Input a user can get wrong (a path, a run, an option); the message says which and why.
    Scripts print it as one line instead of a traceback."""


class RunResultsError(FigureInputError):
    """A run directory or one of its files cannot be read; the message names the path."""


@dataclass
class RunResults:
    name: str
    path: Path
    config: dict = field(default_factory=dict)  # resolved config as a nested plain dict ({} if absent)
    train_log: pd.DataFrame | None = None
    linear_probe: dict | None = None
    depth_probe: dict | None = None
    lidar: dict | None = None
    knn_probe: dict | None = None
    knn_snapshots: dict[int, dict] = field(default_factory=dict)  # step -> k-NN result of that snapshot

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def has_model(self) -> bool:
        return self.model_path.is_file()


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunResultsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise RunResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_train_log(path: str | Path) -> pd.DataFrame | None:
    """`train_log.jsonl` as a DataFrame (one row per line; missing fields NaN). A torn last line
    (a run killed mid-write) is skipped; any other bad line is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        return None
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise RunResultsError(f"{path}: line {i + 1} is not valid JSON") from None
    if not rows:
        return None
    return pd.DataFrame(rows)


def load_run(path: str | Path, name: str | None = None) -> RunResults:
    path = Path(path)
    if not path.is_dir():
        raise RunResultsError(f"run directory {path} does not exist")
    config: dict = {}
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            config = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RunResultsError(f"{cfg_path}: not valid YAML ({e})") from None
    return RunResults(
        name=name or path.name,
        path=path,
        config=config,
        train_log=read_train_log(path / "train_log.jsonl"),
        linear_probe=_read_json(path / "eval" / "linear_probe.json"),
        depth_probe=_read_json(path / "eval" / "depth_probe.json"),
        lidar=_read_json(path / "eval" / "lidar.json"),
        knn_probe=_read_json(path / "eval" / "knn_probe.json"),
        knn_snapshots=_snapshot_knn(path, config),
    )


def snapshot_knn_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "eval" / "snapshots" / f"knn_probe-step-{step}.json"


def _snapshot_knn(path: Path, config: dict) -> dict[int, dict]:
    """The k-NN results of the snapshots the run's config asks for (train.snapshot_steps) that
    exist; files of other steps (an earlier config's) are not read."""
    steps = ((config.get("train") or {}).get("snapshot_steps") or []) if isinstance(config, dict) else []
    found = {}
    for step in steps:
        data = _read_json(snapshot_knn_path(path, int(step)))
        if data is not None:
            found[int(step)] = data
    return found


def load_runs(paths: list[str | Path], names: list[str] | None = None) -> list[RunResults]:
    """Runs in the order given; `names` (same length) replaces the directory names."""
    if names is not None and len(names) != len(paths):
        raise RunResultsError(f"--names gives {len(names)} names for {len(paths)} run directories")
    runs = [load_run(p, None if names is None else names[i]) for i, p in enumerate(paths)]
    seen: set[str] = set()
    for r in runs:
        if r.name in seen:
            raise RunResultsError(f"two runs are named {r.name!r}; pass --names to tell them apart")
        seen.add(r.name)
    return runs


# ----------------------------------------------------------------------------- configs


def flatten_config(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"encoder": {"dim": 384}}} -> {"model.encoder.dim": 384}; lists become tuples."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, name + "."))
        elif isinstance(value, list):
            out[name] = tuple(value)
        else:
            out[name] = value
    return out


# keys that differ between runs without being a setting of the experiment
NOT_SETTINGS = ("name",)


def differing_settings(configs: list[dict], ignore: tuple[str, ...] = NOT_SETTINGS) -> list[str]:
    """Flattened keys whose value is not the same in every config (a key absent from one config
    counts as differing), in the order they first appear."""
    flat = [flatten_config(c) for c in configs]
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    _missing = object()
    out = []
    for k in keys:
        if k in ignore:
            continue
        values = [f.get(k, _missing) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out.append(k)
    return out


# ----------------------------------------------------------------------------- metrics


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def last_value(log: pd.DataFrame | None, column: str) -> float | None:
    """The last non-missing value of a column of the training log, or None."""
    if log is None or column not in log:
        return None
    s = pd.to_numeric(log[column], errors="coerce").dropna()
    return _finite(s.iloc[-1]) if len(s) else None


# cumulative seconds since the start of training, or wall-clock timestamps; first match wins
ELAPSED_KEYS = ("elapsed_s", "elapsed", "wall_s", "train_seconds", "time_s")
TIMESTAMP_KEYS = ("wall_time", "timestamp", "time")


def train_hours(log: pd.DataFrame | None) -> float | None:
    """Training wall time in hours from the log: a cumulative-seconds column or the span of a
    timestamp column if the log has one; else (the trainer's schema) the sum over logged step
    rows of `images / images_per_s` (the step's wall time, data loading included), each row
    weighted by the steps since the previous logged row (train.log_every > 1). None if the log
    has no timing."""
    if log is None or len(log) == 0:
        return None
    for key in ELAPSED_KEYS:
        v = last_value(log, key)
        if v is not None:
            return v / 3600.0
    for key in TIMESTAMP_KEYS:
        if key in log:
            s = pd.to_numeric(log[key], errors="coerce").dropna()
            if len(s) >= 2:
                return float(s.iloc[-1] - s.iloc[0]) / 3600.0
    if {"step", "images", "images_per_s"} <= set(log.columns):
        df = log[["step", "images", "images_per_s"]].apply(pd.to_numeric, errors="coerce").dropna()
        df = df[df["images_per_s"] > 0].drop_duplicates("step", keep="last").sort_values("step")
        if len(df):
            steps = df["step"].diff().fillna(df["step"].iloc[0]).clip(lower=1)
            return float((df["images"] / df["images_per_s"] * steps).sum()) / 3600.0
    return None


def with_images_seen(log: pd.DataFrame) -> pd.DataFrame:
    """The log with `images_seen` filled on every row: the trainer writes RankMe and LiDAR as
    extra rows keyed only by `step`, so their images seen are interpolated from the step rows."""
    if "images_seen" not in log or "step" not in log:
        return log
    out = log.copy()
    step = pd.to_numeric(out["step"], errors="coerce")
    seen = pd.to_numeric(out["images_seen"], errors="coerce")
    known = step.notna() & seen.notna()
    if known.sum() == 0:
        return out
    ref = pd.DataFrame({"s": step[known], "i": seen[known]}).drop_duplicates("s").sort_values("s")
    fill = np.interp(step.fillna(0).to_numpy(float), ref["s"].to_numpy(float), ref["i"].to_numpy(float))
    out["images_seen"] = seen.where(known | step.isna(), pd.Series(fill, index=out.index))
    return out


def images_seen(run: RunResults, checkpoint: dict | None = None) -> float | None:
    v = last_value(run.train_log, "images_seen")
    if v is None and checkpoint is not None:
        v = _finite(checkpoint.get("images_seen"))
    return v
