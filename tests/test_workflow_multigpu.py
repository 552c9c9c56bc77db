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
