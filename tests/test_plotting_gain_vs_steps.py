"""The learning curve of the gain over random init: points from snapshots and the final model,
step 0 from the same seed's baseline, mean and sample std over seeds, the CSV and the figure."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd
import pytest

from featnorm.plotting.gain_vs_steps import gain_curves, gain_points, make_gain_vs_steps
from featnorm.plotting.run_groups import group_runs
from featnorm.plotting.run_results import RunResults


def _knn(top1, step=None):
    return {"top1": [top1 - 5, top1], "best_top1": top1, "best_depth": 1, "model_step": step, "images_seen": step}


def _run(name, seed, final=None, snapshots=None):
    return RunResults(name=name, path=Path("/nonexistent") / name, config={"seed": seed},
                      knn_probe=None if final is None else _knn(final[1], final[0]),
                      knn_snapshots={s: _knn(v, s) for s, v in (snapshots or {}).items()})


def _groups():
    runs = [
        _run("tanh-s0", 0, (100, 40.0), {25: 24.0, 50: 30.0}),
        _run("tanh-s1", 1, (100, 44.0), {25: 20.0, 50: 34.0}),
        _run("ln-s3", 3, (100, 25.0), {50: 22.0}),  # no baseline of seed 3: no step-0 point
        _run("random-s0", 0, (0, 21.0)),
        _run("random-s1", 1, (0, 23.0)),
    ]
    return group_runs(runs, ["tanh", "tanh", "ln", "random", "random"], baselines=["random"])


def test_points_start_at_the_same_seeds_baseline_and_are_relative_to_the_baseline_mean():
    points = gain_points(_groups())
    tanh0 = points[points["run"] == "tanh-s0"].set_index("step")
    assert list(tanh0.index) == [0, 25, 50, 100]
    assert tanh0.loc[0, "knn_top1"] == 21.0  # random-s0 is tanh-s0's step 0
    assert tanh0["gain"].tolist() == pytest.approx([21.0 - 22.0, 24.0 - 22.0, 30.0 - 22.0, 40.0 - 22.0])
    ln = points[points["run"] == "ln-s3"]
    assert ln["step"].tolist() == [50, 100] and (ln["baseline"] == "random").all()
    assert not (points["run"].str.startswith("random")).any()


def test_curves_average_seeds_with_sample_std():
    curves = gain_curves(gain_points(_groups()))
    tanh = curves[curves["run"] == "tanh"].set_index("step")
    assert tanh.loc[50, "n"] == 2
    assert tanh.loc[50, "gain_mean"] == pytest.approx(32.0 - 22.0)
    assert tanh.loc[50, "gain_std"] == pytest.approx(statistics.stdev([30.0, 34.0]))
    assert tanh.loc[0, "gain_mean"] == pytest.approx(0.0)  # the mean start is the baseline mean
    ln = curves[curves["run"] == "ln"]
    assert ln["n"].tolist() == [1, 1] and ln["gain_std"].isna().all()
    assert list(dict.fromkeys(curves["run"])) == ["tanh", "ln"]


def test_figure_and_csv_are_written(tmp_path):
    make_gain_vs_steps(_groups(), [tmp_path / "g.png"], tmp_path / "g.csv")
    assert (tmp_path / "g.png").stat().st_size > 0
    csv = pd.read_csv(tmp_path / "g.csv")
    assert len(csv) == 4 + 2 and {"gain_mean", "gain_std", "n", "step", "baseline"} <= set(csv.columns)
    # without any baseline result: an empty curve set and a figure that says so
    lonely = group_runs([_run("tanh-s0", 0, (100, 40.0)), _run("random-s0", 0)], ["tanh", "random"], ["random"])
    make_gain_vs_steps(lonely, [tmp_path / "e.png"], tmp_path / "e.csv")
    assert len(pd.read_csv(tmp_path / "e.csv")) == 0
