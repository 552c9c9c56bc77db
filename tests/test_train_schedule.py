"""Learning-rate and EMA schedules at chosen steps (SPEC section 3, training schedule)."""

import pytest

from featnorm.config import TrainConfig
from featnorm.train.schedule import ema_beta, learning_rate


def paper() -> TrainConfig:
    return TrainConfig()  # defaults are the paper's: 1e-4 -> 5e-4 over 10k, EMA 0.95 -> 0.999 -> 0.9995


def test_lr_warms_up_linearly_then_stays_at_peak():
    c = paper()
    assert learning_rate(c, 0) == pytest.approx(1e-4)
    assert learning_rate(c, 5_000) == pytest.approx(3e-4)
    assert learning_rate(c, 9_999) == pytest.approx(1e-4 + 4e-4 * 9_999 / 10_000)
    assert learning_rate(c, 10_000) == pytest.approx(5e-4)
    assert learning_rate(c, 1_000_000, steps_left=10**9) == pytest.approx(5e-4)


def test_lr_cools_down_linearly_to_lr_end_on_the_last_step():
    c = TrainConfig(lr_warmup_steps=10, lr_cooldown_steps=11, lr_start=0.0, lr_peak=1.0, lr_end=0.0)
    total = 100
    lrs = [learning_rate(c, s, steps_left=total - s) for s in range(total)]
    assert lrs[5] == pytest.approx(0.5)
    assert lrs[88] == pytest.approx(1.0)  # 12 steps left: not yet
    assert lrs[89] == pytest.approx(1.0)  # first cool-down step still at the peak
    assert lrs[94] == pytest.approx(0.5)
    assert lrs[99] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_lr_without_known_length_never_cools_down():
    c = TrainConfig(lr_cooldown_steps=100)
    assert learning_rate(c, 50_000, steps_left=None) == pytest.approx(c.lr_peak)


def test_ema_beta_two_linear_phases_capped_at_end():
    c = paper()
    assert ema_beta(c, 0) == pytest.approx(0.95)
    assert ema_beta(c, 500) == pytest.approx(0.95 + 0.049 * 0.5)
    assert ema_beta(c, 1_000) == pytest.approx(0.999)
    assert ema_beta(c, 1_000 + 150_000) == pytest.approx(0.999 + 0.0005 * 0.5)
    assert ema_beta(c, 301_000) == pytest.approx(0.9995)
    assert ema_beta(c, 10**7) == pytest.approx(0.9995)


def test_ema_beta_without_anneal_stays_at_mid():
    c = TrainConfig(ema_anneal_steps=0)
    assert ema_beta(c, 5_000) == pytest.approx(c.ema_mid)
