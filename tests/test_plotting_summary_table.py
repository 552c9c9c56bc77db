"""Summary table pieces: differing settings from flattened configs, linear-probe summary,
blank (never zero) missing metrics in every format, Markdown without tabulate."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

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


def _seeded(name, group_config, seed, linear, knn, rmse):
    return _run(name, {**group_config, "seed": seed, "name": name},
                linear_probe={"top1": [linear - 5, linear]}, knn_probe={"top1": [knn, knn - 3]},
                depth_probe={"rmse": rmse})


def _experiment():
    from featnorm.plotting.run_groups import group_runs

    tanh = {"model": {"encoder": {"out_norm": "dyntanh"}}}
    ln = {"model": {"encoder": {"out_norm": "layernorm"}}}
    runs = [
        _seeded("tanh-s0", tanh, 0, 50.0, 40.0, 0.50), _seeded("tanh-s1", tanh, 1, 54.0, 44.0, 0.40),
        _seeded("ln-s0", ln, 0, 33.0, 30.0, 0.75), _seeded("ln-s1", ln, 1, 35.0, 26.0, 0.65),
        _seeded("random-s0", tanh, 0, 30.0, 20.0, 0.70), _seeded("random-s1", tanh, 1, 32.0, 22.0, 0.60),
    ]
    groups = group_runs(runs, ["tanh", "tanh", "ln", "ln", "random", "random"], baselines=["random"])
    return runs, groups


def test_seed_groups_give_mean_sample_std_n_and_gains_with_standard_errors():
    import statistics

    from featnorm.plotting.summary_table import group_rows

    runs, groups = _experiment()
    df = group_rows(summary_rows(runs), groups).set_index("run")
    assert list(df.index) == ["tanh", "ln", "random"]
    assert df.loc["tanh", "n"] == 2 and df.loc["tanh", "seeds"] == "0, 1"
    assert list(df["model"]) == ["pretrained", "pretrained", "random init"]
    assert [c for c in df.columns if "." in c] == ["encoder.out_norm"]  # `seed` is no setting
    assert df.loc["tanh", "linear top-1 best (%)"] == pytest.approx(52.0)
    assert df.loc["tanh", "linear top-1 best (%) std"] == pytest.approx(statistics.stdev([50.0, 54.0]))
    assert df.loc["ln", "kNN top-1 best (%)"] == pytest.approx(28.0)
    # gain: group mean minus baseline mean, positive = better (for the RMSE: baseline minus run)
    assert df.loc["tanh", "linear top-1 gain (pts)"] == pytest.approx(52.0 - 31.0)
    assert df.loc["ln", "kNN top-1 gain (pts)"] == pytest.approx(28.0 - 21.0)
    assert df.loc["tanh", "depth RMSE gain (m)"] == pytest.approx(0.65 - 0.45)
    assert df.loc["ln", "depth RMSE gain (m)"] == pytest.approx(0.65 - 0.70)
    se = math.sqrt(statistics.variance([50.0, 54.0]) / 2 + statistics.variance([30.0, 32.0]) / 2)
    assert df.loc["tanh", "linear top-1 gain (pts) se"] == pytest.approx(se)
    assert pd.isna(df.loc["random", "linear top-1 gain (pts)"])  # the baseline has no gain over itself
    assert "gain vs" not in df.columns  # one baseline: no need to name it


def test_markdown_shows_mean_plus_minus_std_and_signed_gains_and_csv_keeps_the_spreads(tmp_path):
    from featnorm.plotting.summary_table import group_rows, write_table

    runs, groups = _experiment()
    df = group_rows(summary_rows(runs), groups)
    write_table(df, csv=tmp_path / "t.csv", md=tmp_path / "t.md", tex=tmp_path / "t.tex")
    md = (tmp_path / "t.md").read_text()
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert not any(c.endswith((" std", " se")) for c in header)
    tanh = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    row = dict(zip(header, tanh))
    assert row["linear top-1 best (%)"] == "52.00 ± 2.83" and row["n"] == "2"
    assert row["linear top-1 gain (pts)"] == "+21.00 ± 2.24"
    assert row["depth RMSE gain (m)"].startswith("+0.2000 ± ")
    ln = dict(zip(header, [c.strip() for c in md.splitlines()[3].strip("|").split("|")]))
    assert ln["depth RMSE gain (m)"].startswith("-0.0500 ± ")
    csv = pd.read_csv(tmp_path / "t.csv")
    assert {"linear top-1 best (%) std", "kNN top-1 gain (pts) se", "n", "seeds"} <= set(csv.columns)
    assert "52.00 ± 2.83" in (tmp_path / "t.tex").read_text()


def test_single_seed_runs_keep_the_plain_table_and_a_second_baseline_is_named():
    from featnorm.plotting.run_groups import group_runs
    from featnorm.plotting.summary_table import group_rows

    runs, _ = _experiment()
    plain = group_rows(summary_rows(runs[:3]), group_runs(runs[:3]))
    assert "n" not in plain.columns and not any(c.endswith(" std") for c in plain.columns)
    assert "model" not in plain.columns and "linear top-1 gain (pts)" not in plain.columns
    two = group_runs([runs[0], runs[2], runs[4], runs[5]], ["tanh", "ln", "r0", "r1"], baselines=["r0", "r1"],
                     reference={"ln": "r1"})
    df = group_rows(summary_rows([runs[0], runs[2], runs[4], runs[5]]), two).set_index("run")
    assert df.loc["tanh", "gain vs"] == "r0" and df.loc["ln", "gain vs"] == "r1"
    assert df.loc["ln", "linear top-1 gain (pts)"] == pytest.approx(33.0 - 32.0)


def test_bad_grouping_is_a_one_line_user_error():
    from featnorm.plotting.run_groups import group_runs, parse_reference
    from featnorm.plotting.run_results import FigureInputError

    runs, _ = _experiment()
    with pytest.raises(FigureInputError, match="--groups gives 2 groups for 6 runs"):
        group_runs(runs, ["a", "b"])
    with pytest.raises(FigureInputError, match="--baselines names 'nope'"):
        group_runs(runs, baselines=["nope"])
    with pytest.raises(FigureInputError, match="--reference tanh-s0=ln-s0"):
        group_runs(runs, baselines=["random-s0"], reference={"tanh-s0": "ln-s0"})
    with pytest.raises(FigureInputError, match="GROUP=BASELINE"):
        parse_reference(["tanh"])
