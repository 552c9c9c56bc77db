"""Tail statistics of per-token losses against known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from featnorm.plotting.token_loss_distribution import stats_table, tail_stats


def test_tail_stats_match_known_distributions():
    rng = np.random.default_rng(0)
    gauss = tail_stats(rng.normal(5.0, 1.0, 400_000))
    assert gauss["kurtosis"] == pytest.approx(0.0, abs=0.05)
    assert gauss["skewness"] == pytest.approx(0.0, abs=0.02)
    assert gauss["p99"] == pytest.approx(5.0 + 2.326, abs=0.02)
    expo = tail_stats(rng.exponential(2.0, 400_000))  # excess kurtosis 6, p99/median = ln(100)/ln(2)
    assert expo["kurtosis"] == pytest.approx(6.0, rel=0.1)
    assert expo["p99_over_median"] == pytest.approx(np.log(100) / np.log(2), rel=0.02)
    assert expo["median"] == pytest.approx(2.0 * np.log(2), rel=0.01)


def test_heavier_tail_has_larger_kurtosis_and_p99_over_median():
    rng = np.random.default_rng(1)
    light = rng.uniform(0.5, 1.5, 100_000)
    heavy = rng.lognormal(0.0, 1.0, 100_000)
    t = stats_table({"light": light, "heavy": heavy}).set_index("run")
    assert t.loc["heavy", "kurtosis"] > t.loc["light", "kurtosis"]
    assert t.loc["heavy", "p99_over_median"] > t.loc["light", "p99_over_median"]


def test_empty_or_nonfinite_losses_give_nan_not_errors():
    s = tail_stats(np.array([np.nan, np.inf]))
    assert all(np.isnan(v) for v in s.values())
