"""Summary table pieces: differing settings from flattened configs, linear-probe summary,
blank (never zero) missing metrics in every format, Markdown without tabulate."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from featnorm.plotting.run_results import RunResults, differing_settings, flatten_config
from featnorm.plotting.summary_table import linear_probe_summary, summary_rows, to_latex, to_markdown


def test_flatten_config_joins_nested_keys_with_dots():
    assert flatten_config({"model": {"encoder": {"dim": 8}, "patch_size": 16}, "train": {"betas": [0.9, 0.95]}}) == {
        "model.encoder.dim": 8, "model.patch_size": 16, "train.betas": (0.9, 0.95)}


def test_differing_settings_are_keys_whose_values_differ_or_are_missing_somewhere():
    a = {"name": "a", "model": {"encoder": {"out_norm": "dyntanh", "dim": 8}}, "seed": 0}
    b = {"name": "b", "model": {"encoder": {"out_norm": "layernorm", "dim": 8}}, "seed": 0}
    c = {"name": "c", "model": {"encoder": {"out_norm": "dyntanh", "dim": 8, "num_registers": 8}}, "seed": 0}
    assert differing_settings([a, b, c]) == ["model.encoder.out_norm", "model.encoder.num_registers"]
    assert differing_settings([a, a]) == []


def test_linear_probe_summary_reads_stored_fields_or_derives_them():
    stored = {"top1": [10.0, 40.0, 30.0], "best_depth": 1, "best_top1": 40.0, "last_top1": 30.0}
    assert linear_probe_summary(stored) == {"best": 40.0, "best_depth": 1, "last": 30.0}
    assert linear_probe_summary({"top1": [10.0, 40.0, 30.0]}) == {"best": 40.0, "best_depth": 1, "last": 30.0}
    assert linear_probe_summary(None) == {"best": None, "best_depth": None, "last": None}


def _run(name, config, **evals):
    return RunResults(name=name, path=Path("/nonexistent") / name, config=config, **evals)


def test_missing_metrics_are_blank_in_csv_markdown_and_latex(tmp_path):
    runs = [
        _run("full", {"model": {"encoder": {"out_norm": "dyntanh"}}},
             linear_probe={"top1": [0.0, 50.0]}, depth_probe={"rmse": 0.0}, lidar={"lidar": 3.0, "rankme": 4.0}),
        _run("empty", {"model": {"encoder": {"out_norm": "layernorm"}}}),
    ]
    df = summary_rows(runs)
    assert df.loc[0, "depth RMSE (m)"] == 0.0  # a real zero stays a zero
    assert df.loc[1, ["linear top-1 best (%)", "depth RMSE (m)", "LiDAR", "RankMe", "images seen"]].isna().all()
    df.to_csv(tmp_path / "t.csv", index=False, na_rep="")
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False, dtype=str)
    assert back.loc[1, "LiDAR"] == "" and back.loc[0, "depth RMSE (m)"] == "0.0"
    md = to_markdown(df).splitlines()
    empty_cells = [c.strip() for c in md[3].strip("|").split("|")]
    assert empty_cells[0] == "empty" and empty_cells[1] == "layernorm" and all(c == "" for c in empty_cells[2:])
    assert set(md[1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    tex = to_latex(df)
    assert "empty & layernorm &  &" in tex
    assert not any(isinstance(v, float) and math.isnan(v) for v in df.loc[0, ["LiDAR", "RankMe"]])


def test_markdown_escapes_pipes_and_aligns_columns():
    df = summary_rows([_run("a|b", {}), _run("c", {})])
    lines = to_markdown(df).splitlines()
    assert "a\\|b" in lines[2]
    assert len({len(line) for line in lines}) == 1  # padded to equal width


def test_a_run_without_a_config_does_not_turn_every_key_into_a_differing_setting():
    a = {"model": {"encoder": {"out_norm": "dyntanh", "dim": 8}}}
    b = {"model": {"encoder": {"out_norm": "layernorm", "dim": 8}}}
    df = summary_rows([_run("a", a), _run("b", b), _run("untrained", {})])
    assert [c for c in df.columns if "." in c] == ["encoder.out_norm"]
    assert df.loc[2, "encoder.out_norm"] == ""
