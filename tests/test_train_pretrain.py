"""scripts/pretrain.py end to end on generated demo shards, in real subprocesses:
exact resume after SIGKILL, SIGTERM checkpoint, config-hash refusal, the finished-run
check, the NaN guard's exit, and a falling loss.

These start Python processes (a few seconds each on a loaded 2-core machine); they are
part of the default suite.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pretrain.py"

TINY = {
    "name": "tiny",
    "seed": 0,
    "model": {"encoder": {"dim": 64, "depth": 2, "num_heads": 2}, "predictor": {"dim": 32, "depth": 2, "num_heads": 1}},
    "data": {"min_side": 64, "max_side": 64, "max_context_tokens": 16, "max_target_tokens": 24,
             "rows_per_pack": 8, "shuffle_buffer": 50, "num_workers": 1},
    "train": {"batch_size": 8, "steps": 24, "lr_warmup_steps": 5, "ema_warmup_steps": 5, "checkpoint_every": 4,
              "rankme_every": 6, "lidar_every": 8, "lidar_images": 6, "lidar_augmentations": 3},
}


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory):
    from featnorm.data.demo_classification import write_classification_demo
    from featnorm.data.imagefolder import pack_imagefolder

    root = tmp_path_factory.mktemp("demo")
    write_classification_demo(root / "raw", seed=0, n_train=120, n_val=10)
    pack_imagefolder(root / "raw" / "train", root / "shards", "train", shard_bytes=500_000)
    return root / "shards"


def write_config(path: Path, shards: Path, **train) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["train_shards"] = str(shards)
    cfg["train"].update(train)
    path.write_text(yaml.safe_dump(cfg))
    return path


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "workflow" / "lib") + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def pretrain(*args, **kw):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--threads", "1"],
                          env=env(), capture_output=True, text=True, timeout=300, **kw)


def start(*args):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args), "--threads", "1"],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def newest_step(ckpt_dir: Path) -> int:
    steps = [int(p.name[5:14]) for p in ckpt_dir.glob("ckpt-*.pt")] if ckpt_dir.is_dir() else []
    return max(steps, default=-1)


def wait_for(cond, proc, timeout=240.0):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"process ended early: {proc.communicate()}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(demo_shards, tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    cfg = write_config(d / "run.yaml", demo_shards)
    r = pretrain("--config", cfg, "--out", d / "out", "--checkpoint-dir", d / "ck")
    assert r.returncode == 0, r.stderr
    return d, cfg


def test_sigkill_after_a_checkpoint_then_restart_repeats_the_uninterrupted_losses(uninterrupted, tmp_path):
    full_dir, cfg = uninterrupted
    out, ck = tmp_path / "out", tmp_path / "ck"
    proc = start("--config", cfg, "--out", out, "--checkpoint-dir", ck)
    wait_for(lambda: newest_step(ck) >= 8, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()
    killed_at = newest_step(ck)
    r = pretrain("--config", cfg, "--out", out, "--checkpoint-dir", ck)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stderr and killed_at < 24

    a, b = rows(full_dir / "out"), rows(out)
    assert [x["step"] for x in a] == [x["step"] for x in b]
    assert any("lidar" in x for x in a) and any("rankme" in x for x in a)
    for x, y in zip(a, b):
        for key in ("loss", "lr", "ema_beta", "images_seen", "mask_rate", "mean_side", "rankme", "lidar"):
            if key in x:
                assert abs(x[key] - y[key]) <= 1e-6, (key, x, y)
    m1 = torch.load(full_dir / "out" / "model.pt", weights_only=True)
    m2 = torch.load(out / "model.pt", weights_only=True)
    assert m1["step"] == m2["step"] == 24 and m1["images_seen"] == m2["images_seen"]
    for k, v in m1["teacher"].items():
        assert torch.allclose(v, m2["teacher"][k], atol=1e-6), k


def test_model_pt_holds_weights_and_config_for_evaluation(uninterrupted):
    from featnorm.evaluation.checkpoint_loading import load_encoder

    full_dir, _ = uninterrupted
    m = torch.load(full_dir / "out" / "model.pt", weights_only=True)
    assert set(m) == {"config", "teacher", "student", "predictor", "target_norm", "step", "images_seen"}
    encoder, cfg = load_encoder(full_dir / "out" / "model.pt")
    assert cfg.model.encoder.dim == 64 and not encoder.training
    assert yaml.safe_load((full_dir / "out" / "config.yaml").read_text())["train"]["steps"] == 24
    step_rows = [x for x in rows(full_dir / "out") if "loss" in x]
    assert set(step_rows[0]) >= {"step", "images_seen", "loss", "lr", "ema_beta", "images_per_s",
                                 "tokens_per_s", "mask_rate", "mean_side"}


def test_finished_run_is_not_trained_again(uninterrupted):
    full_dir, cfg = uninterrupted
    r = pretrain("--config", cfg, "--out", full_dir / "out", "--checkpoint-dir", full_dir / "ck")
    assert r.returncode == 0 and "already exists and is complete" in r.stdout


def test_sigterm_writes_a_checkpoint_and_exits_zero(demo_shards, tmp_path):
    cfg = write_config(tmp_path / "run.yaml", demo_shards, steps=200, checkpoint_every=1000, lidar_every=0)
    out, ck = tmp_path / "out", tmp_path / "ck"
    proc = start("--config", cfg, "--out", out, "--checkpoint-dir", ck)
    wait_for(lambda: (out / "train_log.jsonl").exists() and len(rows(out)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in err
    last = max(x["step"] for x in rows(out))
    assert 3 <= last < 200 and newest_step(ck) == last
    assert not (out / "model.pt").exists()


def test_checkpoint_of_another_config_is_refused_in_one_line(uninterrupted, tmp_path):
    full_dir, _ = uninterrupted
    shards = yaml.safe_load((full_dir / "run.yaml").read_text())["data"]["train_shards"]
    other = write_config(tmp_path / "other.yaml", Path(shards), lr_peak=1e-3)
    r = pretrain("--config", other, "--out", tmp_path / "out", "--checkpoint-dir", full_dir / "ck")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--force-resume" in r.stderr


def test_nan_loss_exits_nonzero_with_the_step(demo_shards, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("pretrain_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from featnorm.ijepa import IJEPA

    forward = IJEPA.forward
    calls = {"n": 0}

    def poisoned(self, batch, generator=None, **kw):
        out = forward(self, batch, generator=generator, **kw)
        calls["n"] += 1
        if calls["n"] == 6:
            out.loss = out.loss + float("inf")
        return out

    monkeypatch.setattr(IJEPA, "forward", poisoned)
    cfg = write_config(tmp_path / "run.yaml", demo_shards, lidar_every=0)
    rc = script.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error: loss is inf at step 6;" in err and "ckpt-000000004.pt" in err
    assert newest_step(tmp_path / "ck") == 4
    assert not (tmp_path / "out" / "model.pt").exists()


def test_tiny_model_loss_falls_on_demo_data(demo_shards, tmp_path):
    """IJEPA-LN (LayerNorm targets keep the target scale fixed, so losses are comparable
    across steps): the mean loss of the last 20 of 300 steps is clearly below the first 20."""
    from featnorm.config import run_config_from_dict
    from featnorm.train.data_source import build_train_data
    from featnorm.train.trainer import Trainer

    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["train_shards"] = str(demo_shards)
    cfg["model"]["encoder"]["out_norm"] = "layernorm"
    cfg["model"]["objective"] = {"target_norm": "layernorm"}
    cfg["train"].update(steps=300, checkpoint_every=1000, rankme_every=0, lidar_every=0)
    cfg = run_config_from_dict(cfg)
    torch.set_num_threads(1)
    Trainer(cfg, build_train_data(cfg, tmp_path / "ck"), tmp_path / "out", tmp_path / "ck", progress=False).run()
    losses = [x["loss"] for x in rows(tmp_path / "out") if "loss" in x]
    assert len(losses) == 300
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.85 * first, (first, last)
