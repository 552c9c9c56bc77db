"""A run with `train.gpus: N` asks for N GPUs and launches torchrun; others stay plain."""

from __future__ import annotations

import re

import yaml

from workflow_helpers import REPO, snakemake


def pretrain_commands(stdout: str) -> dict[str, tuple[str, str]]:
    """run -> (resources line, shell command) of every pretrain job of a `-n -p` output."""
    out = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", stdout):
        if not block.startswith("rule pretrain:"):
            continue
        run = re.search(r"wildcards: run=([\w-]+)", block).group(1)
        res = re.search(r"^\s+resources: (.+)$", block, re.M).group(1)
        cmd = re.search(r"^Shell command: (.+)$", block, re.M).group(1)
        out[run] = (res, cmd)
    return out


def test_gpus_setting_launches_torchrun_with_the_granted_gpus(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["gpu_jobs"] = "exclusive"  # the demo's jobs share the device; multi-GPU jobs need their own
    cfg["runs"]["tanh"].setdefault("train", {})["gpus"] = 2
    path = tmp_path / "multigpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path), "--resources", "gpu=2")
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = pretrain_commands(res.stdout)
    assert set(jobs) == {"tanh-s0", "tanh-s1", "ln-s0", "ln-s1"}  # config/demo.yaml: two seeds
    res_tanh, cmd_tanh = jobs["tanh-s1"]
    assert "gpu=2" in res_tanh
    assert "run_step.py --gpus 2" in cmd_tanh
    assert "-m torch.distributed.run --standalone --nproc-per-node 2 scripts/pretrain.py" in cmd_tanh
    res_ln, cmd_ln = jobs["ln-s0"]
    assert "gpu=1" in res_ln and "torch.distributed" not in cmd_ln
    assert "-- python scripts/pretrain.py" in cmd_ln


def test_gpus_is_not_part_of_the_run_hash():
    from featnorm.config import config_hash, run_config_from_dict

    one = run_config_from_dict({"train": {"batch_size": 8}})
    eight = run_config_from_dict({"train": {"batch_size": 8, "gpus": 8}})
    assert config_hash(one) == config_hash(eight)


def test_a_batch_not_divisible_by_the_gpus_is_refused():
    import pytest

    from featnorm.config import ConfigError, run_config_from_dict

    with pytest.raises(ConfigError, match="train.batch_size = 10 .* not divisible by train.gpus = 4"):
        run_config_from_dict({"train": {"batch_size": 10, "gpus": 4}})


def test_evaluation_gpus_launches_feature_extraction_with_torchrun(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["gpu_jobs"] = "exclusive"
    cfg.setdefault("evaluation", {})["gpus"] = 2
    path = tmp_path / "multigpu_eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path), "--resources", "gpu=2")
    assert res.returncode == 0, res.stdout + res.stderr
    blocks = [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", res.stdout) if b.startswith("rule extract_features:")]
    assert blocks
    for b in blocks:
        assert "gpu=2" in b
        assert "-m torch.distributed.run --standalone --nproc-per-node 2 scripts/extract_features.py" in b


def job_blocks(stdout: str) -> list[str]:
    """Every job block of a `-n -p` output that has a resources line."""
    return [b for b in re.split(r"\n(?=(?:local)?rule \w+:)", stdout) if re.search(r"^\s+resources: ", b, re.M)]


def test_shared_gpu_jobs_take_no_gpu_slot_so_jobs_run_side_by_side(tmp_path):
    """config/demo.yaml has `gpu_jobs: shared`: no job holds a slot of the profile's gpu=1
    (which would run the CPU demo's one-thread jobs one at a time) nor locks a device."""
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    assert cfg["gpu_jobs"] == "shared"
    cfg["results"] = str(tmp_path / "results")
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path), "--resources", "gpu=1")
    assert res.returncode == 0, res.stdout + res.stderr
    model_jobs = [b for b in job_blocks(res.stdout) if "run_step.py --gpus" in b]
    rules = {re.match(r"(?:local)?rule (\w+):", b).group(1) for b in model_jobs}
    assert {"pretrain", "extract_features", "linear_probe", "depth_probe", "lidar", "fig_loss_maps"} <= rules
    for b in model_jobs:
        res_line = re.search(r"^\s+resources: (.+)$", b, re.M).group(1)
        assert re.search(r"\bgpu=0\b", res_line), b
        assert "run_step.py --gpus 0 " in b

    cfg["gpu_jobs"] = "exclusive"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path), "--resources", "gpu=1")
    assert res.returncode == 0, res.stdout + res.stderr
    model_jobs = [b for b in job_blocks(res.stdout) if "run_step.py --gpus" in b]
    assert model_jobs and all("run_step.py --gpus 1 " in b for b in model_jobs)


def test_shared_gpu_jobs_refuse_a_multi_gpu_run_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["runs"]["ln"].setdefault("train", {})["gpus"] = 2
    path = tmp_path / "shared_ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--nolock", "--configfile", str(path))
    assert res.returncode != 0
    assert "gpu_jobs: shared" in res.stderr + res.stdout and "cannot use 2 GPUs" in res.stderr + res.stdout
