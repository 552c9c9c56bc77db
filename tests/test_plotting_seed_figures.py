"""The per-depth and training-curve figures with seed groups: one line (and band) per group,
the group's colour for each of its seeds, baselines dashed and never in the training curves."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from featnorm.plotting.linear_probe_depth import group_curve, make_linear_probe_depth
from featnorm.plotting.run_groups import group_runs
from featnorm.plotting.run_results import load_run
from featnorm.plotting.synthetic_runs import tiny_config, write_run
from featnorm.plotting.training_curves import make_training_curves


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name in ("tanh-s0", "tanh-s1", "random-s0", "random-s1"):
        baseline = name.startswith("random")
        write_run(root / name, tiny_config(name), seed=len(out), with_model=False, with_log=not baseline,
                  evals=("linear_probe",))
        out.append(load_run(root / name))
    return out


def test_group_curve_is_the_mean_and_sample_std_over_seeds(runs):
    groups = group_runs(runs, ["tanh", "tanh", "random", "random"], baselines=["random"])
    mean, std, n = group_curve(groups[0])
    a, b = (np.array(r.linear_probe["top1"]) for r in runs[:2])
    assert n == 2 and np.allclose(mean, (a + b) / 2)
    assert std[1] == pytest.approx(statistics.stdev([a[1], b[1]]))


def test_per_depth_figure_draws_a_band_per_seeded_group_and_dashes_baselines(runs, tmp_path):
    groups = group_runs(runs, ["tanh", "tanh", "random", "random"], baselines=["random"])
    fig = make_linear_probe_depth(runs, [tmp_path / "lp.png"], groups=groups)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"tanh (n=2)", "random (n=2) [random init]"}
    assert lines["random (n=2) [random init]"].get_linestyle() == "--" and lines["tanh (n=2)"].get_linestyle() == "-"
    assert len(ax.collections) == 2  # one ± std band per group


def test_training_curves_show_trained_seeds_in_their_groups_colour_and_keep_panel_titles(runs, tmp_path):
    groups = group_runs(runs, ["tanh", "tanh", "random", "random"], baselines=["random"])
    fig = make_training_curves(runs, [tmp_path / "c.png"], groups=groups)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["training loss", "LiDAR", "RankMe"]
    loss = [line for line in fig.axes[0].get_lines()]
    assert len(loss) == 2 and loss[0].get_color() == loss[1].get_color()  # two seeds, one colour; no baseline
    assert {line.get_label() for line in loss} == {"tanh (2 seeds)"}
