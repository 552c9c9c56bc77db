"""Reading run directories: the training log (torn last line, images seen of RankMe/LiDAR
rows), training hours, names, and errors that name the file."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from featnorm.plotting.run_results import RunResultsError, load_run, load_runs, read_train_log, train_hours, with_images_seen
from featnorm.plotting.training_curves import binned_curve


def _log(tmp_path, rows, tail=""):
    p = tmp_path / "train_log.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return p


def test_a_torn_last_line_is_skipped_and_a_bad_middle_line_is_an_error(tmp_path):
    p = _log(tmp_path, [{"step": 1, "loss": 1.0}], tail='{"step": 2, "lo')
    assert len(read_train_log(p)) == 1
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(RunResultsError, match="line 2"):
        read_train_log(p)


def test_rankme_and_lidar_rows_get_images_seen_from_their_step():
    log = pd.DataFrame([
        {"step": 1, "images_seen": 10, "loss": 1.0},
        {"step": 2, "images_seen": 25, "loss": 0.9},
        {"step": 2, "rankme": 7.0},
        {"step": 4, "images_seen": 50, "loss": 0.8},
        {"step": 3, "lidar": 2.0},  # between logged steps (log_every > 1): interpolated
    ])
    filled = with_images_seen(log)
    assert filled.loc[2, "images_seen"] == 25 and filled.loc[4, "images_seen"] == 37.5
    x, y = binned_curve(log, "rankme")
    assert x.tolist() == [25.0] and y.tolist() == [7.0]


def test_train_hours_sum_step_times_weighted_by_the_logging_interval():
    log = pd.DataFrame([
        {"step": 10, "images": 100, "images_per_s": 50.0},  # 2 s per step, 10 steps
        {"step": 10, "rankme": 3.0},
        {"step": 20, "images": 100, "images_per_s": 100.0},  # 1 s per step, 10 steps
    ])
    assert train_hours(log) == pytest.approx(30.0 / 3600)
    assert train_hours(pd.DataFrame([{"step": 1, "elapsed_s": 7200.0}])) == pytest.approx(2.0)
    assert train_hours(pd.DataFrame([{"step": 1, "loss": 1.0}])) is None
    assert train_hours(None) is None


def test_runs_are_named_by_directory_or_names_and_must_be_unique(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "x" / "a").mkdir(parents=True)
    assert [r.name for r in load_runs([tmp_path / "a"])] == ["a"]
    assert [r.name for r in load_runs([tmp_path / "a", tmp_path / "x" / "a"], ["one", "two"])] == ["one", "two"]
    with pytest.raises(RunResultsError, match="--names"):
        load_runs([tmp_path / "a", tmp_path / "x" / "a"])
    with pytest.raises(RunResultsError, match="does not exist"):
        load_run(tmp_path / "missing")


def test_a_broken_eval_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "r" / "eval").mkdir(parents=True)
    (tmp_path / "r" / "eval" / "lidar.json").write_text("{oops")
    with pytest.raises(RunResultsError, match="lidar.json"):
        load_run(tmp_path / "r")


def test_loss_map_model_gets_the_running_target_statistics_of_model_pt(tmp_path):
    import torch

    from featnorm.evaluation.checkpoint_loading import CheckpointError
    from featnorm.plotting.model_io import load_ijepa
    from featnorm.plotting.synthetic_runs import tiny_config, write_run

    run = write_run(tmp_path / "r", tiny_config("r", target_norm="running-batchnorm"))
    ckpt = torch.load(run / "model.pt", weights_only=True)
    stats = {k: v for k, v in ckpt["target_norm"].items() if v.is_floating_point()}  # mean, std (not the init flag)
    assert stats
    ckpt["target_norm"].update({k: torch.full_like(v, 3.0) for k, v in stats.items()})
    torch.save(ckpt, run / "model.pt")
    model, _ = load_ijepa(run / "model.pt")
    assert all(torch.all(model.target_norm.state_dict()[k] == 3.0) for k in stats)

    del ckpt["target_norm"]
    torch.save(ckpt, run / "model.pt")
    with pytest.raises(CheckpointError, match="target_norm"):
        load_ijepa(run / "model.pt")
