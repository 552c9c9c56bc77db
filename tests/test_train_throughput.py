"""Throughput accounting (featnorm.train.throughput) and what the trainer logs of it."""

import json

import pytest
import torch

from featnorm.train.flops import encoder_counts, predictor_counts, step_flops
from featnorm.train.throughput import PEAK_ENV, ThroughputMeter, peak_for_name, peak_tflops
from featnorm.train.trainer import Trainer

from test_train_trainer import synthetic_data, tiny_config  # noqa: F401 (fixture)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10", 125.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.0), ("Tesla T4", None),
])
def test_peak_table_matches_the_most_specific_device_name(name, peak):
    assert peak_for_name(name) == peak


def test_peak_comes_from_the_environment_when_set_and_is_absent_on_the_cpu(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert peak_tflops("cpu")[0] is None
    monkeypatch.setenv(PEAK_ENV, "12.5")
    assert peak_tflops("cpu") == (12.5, PEAK_ENV)
    monkeypatch.setenv(PEAK_ENV, "fast")
    with pytest.raises(ValueError, match=f"{PEAK_ENV} = 'fast' is not a number"):
        peak_tflops("cpu")


def test_meter_gives_rates_mfu_and_projects_the_run_from_steps_or_images():
    m = ThroughputMeter(peak=2.0, devices=2, window=2)
    row = m.update(seconds=0.5, images=10, tokens=100, flops=1e12)
    assert row == {"images_per_s": 20.0, "tokens_per_s": 200.0, "step_tflop": 1.0, "tflop_per_s": 2.0, "mfu": 0.5}
    m.update(seconds=1.5, images=10, tokens=100, flops=1e12)
    p = m.projection(steps_done=2, images_done=20, total_steps=3602, total_images=None)
    assert p["hours_left"] == pytest.approx(3600 * 1.0 / 3600) and p["run_hours"] == pytest.approx(3602 / 3600)
    m.update(seconds=1.0, images=30, tokens=100, flops=1e12)  # the window keeps the last two steps: 40 images in 2.5 s
    p = m.projection(steps_done=3, images_done=50, total_steps=None, total_images=16 * 3600 + 50)
    assert p["hours_left"] == pytest.approx(1.0) and p["run_hours"] == pytest.approx((16 * 3600 + 50) / 16 / 3600)
    assert "mfu" not in ThroughputMeter(peak=None).update(1.0, 1, 1, 1.0)


def test_trainer_logs_step_flops_mfu_and_the_projected_run_time(tmp_path, synthetic_data, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PEAK_ENV, "0.001")
    cfg = tiny_config(steps=4)
    Trainer(cfg, synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    batches = list(synthetic_data.epoch_batches(0, 0))
    for r, batch in zip(rows, batches):
        want = step_flops(cfg.model, encoder_counts(batch.token_ids), encoder_counts(batch.context_ids), predictor_counts(r))
        assert r["step_tflop"] == pytest.approx(want["total"] / 1e12, rel=1e-9)
        assert r["tflop_per_s"] == pytest.approx(r["step_tflop"] * r["images_per_s"] / r["images"], rel=1e-6)
        assert r["mfu"] == pytest.approx(r["tflop_per_s"] / 0.001, rel=1e-9)
        # the run is 4 steps: hours left = the steps left at the same mean rate
        assert r["hours_left"] == pytest.approx(r["run_hours"] * (4 - r["step"]) / 4, rel=1e-9)
    assert rows[-1]["hours_left"] == 0 and rows[-1]["run_hours"] > 0
    # the predictor's work is counted from what it really saw
    assert all(r["predictor_tokens"] >= r["num_predicted_tokens"] > 0 for r in rows)
