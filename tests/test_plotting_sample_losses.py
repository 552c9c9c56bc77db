"""Per-sample loss histograms (plot-sample-losses): the histograms are matplotlib's density and
cumulative histograms, and the table carries each image's per-sample mean and variance."""

from __future__ import annotations

import numpy as np
import pytest

from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.loss_maps import LossMap
from featnorm.plotting.sample_losses import density_and_cumulative, make_sample_loss_figure, sample_stats_table
from featnorm.plotting.style import plt


def test_density_and_cumulative_equal_matplotlibs_histograms():
    x = np.random.default_rng(0).lognormal(0, 1, 500)
    edges, density, cumulative = density_and_cumulative(np.append(x, np.nan))
    n, e, _ = plt.hist(x, bins=20, density=True)
    c, _, _ = plt.hist(x, bins=20, density=True, cumulative=True)
    plt.close("all")
    np.testing.assert_allclose(edges, e)
    np.testing.assert_allclose(density, n)
    np.testing.assert_allclose(cumulative, c)
    assert cumulative[-1] == pytest.approx(1.0)


def test_table_and_figure_hold_every_run_and_image(tmp_path):
    images = [SourceImage(f"im{i}", np.zeros((8, 8, 3), np.uint8)) for i in range(3)]
    maps = {run: [LossMap(np.zeros((1, 1)), np.ones((1, 1)), None, sample_mean=k + i, sample_var=0.1 * i)
                  for i in range(3)] for k, run in enumerate(("tanh", "ln"))}
    table = sample_stats_table(maps, images)
    assert list(table.columns) == ["run", "image", "sample_mean", "sample_var"] and len(table) == 6
    row = table[(table.run == "ln") & (table.image == "im2")].iloc[0]
    assert row.sample_mean == 3 and row.sample_var == pytest.approx(0.2)
    paths = [tmp_path / "s.png", tmp_path / "s.pdf"]
    make_sample_loss_figure(table, paths, num_masks=5)
    assert all(p.stat().st_size > 0 for p in paths)
