"""Config checking: the schema and the run overrides stop a bad config before any job, naming
the key and the file; run resolution; the conda env and the constraints agree."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from featnorm.config import ConfigError
from featnorm.workflow.runs import resolve_run, resolve_runs, run_hash
from featnorm.workflow.source_hash import source_hash
from workflow_helpers import REPO, snakemake


def write_config(tmp_path, mutate):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def failed_dry_run(path):
    res = snakemake("-n", "--nolock", "--configfile", str(path))
    assert res.returncode != 0, res.stdout
    return res.stdout + res.stderr


def test_unknown_top_level_key_stops_the_workflow_naming_key_and_file(tmp_path):
    path = write_config(tmp_path, lambda c: c.update(resultz="x"))
    out = failed_dry_run(path)
    assert "resultz" in out and str(path) in out
    assert "Job stats" not in out


def test_wrong_type_in_evaluation_names_the_key(tmp_path):
    path = write_config(tmp_path, lambda c: c["evaluation"]["linear_probe"].update(epochs="many"))
    out = failed_dry_run(path)
    assert "evaluation.linear_probe.epochs" in out and str(path) in out


def test_unknown_run_entry_key_is_rejected(tmp_path):
    path = write_config(tmp_path, lambda c: c["runs"]["tanh"].update(enable=False))
    out = failed_dry_run(path)
    assert "runs.tanh" in out and "enable" in out and str(path) in out


def test_bad_run_override_key_names_run_key_and_file(tmp_path):
    path = write_config(tmp_path, lambda c: c["runs"]["ln"]["model"]["encoder"].update(out_nrom="layernorm"))
    out = failed_dry_run(path)
    assert "runs.ln" in out and "model.encoder.out_nrom" in out and str(path) in out


def test_bad_override_value_names_the_field(tmp_path):
    path = write_config(tmp_path, lambda c: c["defaults"]["model"]["encoder"].update(num_heads=5))
    out = failed_dry_run(path)
    assert "model.encoder" in out and "num_heads" in out


def test_compared_run_must_be_enabled(tmp_path):
    def mutate(c):
        c["runs"]["ln"]["enabled"] = False
    out = failed_dry_run(write_config(tmp_path, mutate))
    assert "figures.compare" in out and "ln" in out


def test_resolved_run_is_defaults_plus_overrides_plus_workflow_values():
    cfg = {
        "defaults": {"model": {"encoder": {"dim": 96, "num_heads": 3}}, "train": {"steps": 5}},
        "runs": {
            "a": {"model": {"encoder": {"out_norm": "layernorm"}}},
            "b": {"enabled": False, "description": "off", "train": {"steps": 7}},
        },
    }
    runs, meta = resolve_runs(cfg, "x.yaml", train_shards="res/data/imagenet/train")
    assert runs["a"]["name"] == "a" and runs["a"]["model"]["encoder"]["dim"] == 96
    assert runs["a"]["model"]["encoder"]["out_norm"] == "layernorm"
    assert runs["b"]["model"]["encoder"]["out_norm"] == "dyntanh"  # RunConfig default
    assert runs["b"]["train"]["steps"] == 7 and runs["a"]["train"]["steps"] == 5
    assert runs["a"]["data"]["train_shards"] == "res/data/imagenet/train"
    assert meta["a"]["enabled"] is True and meta["b"] == {"enabled": False, "description": "off"}
    assert run_hash(runs["a"]) != run_hash(runs["b"])


def test_run_errors_name_source_and_run():
    with pytest.raises(ConfigError, match=r"x\.yaml: runs\.a: .*model\.encoder\.nope"):
        resolve_runs({"runs": {"a": {"model": {"encoder": {"nope": 1}}}}}, "x.yaml", "d")
    with pytest.raises(ConfigError, match=r"x\.yaml: runs\.a\.data\.train_shards"):
        resolve_runs({"runs": {"a": {"data": {"train_shards": "elsewhere"}}}}, "x.yaml", "d")
    with pytest.raises(ConfigError, match="name"):
        resolve_run("a", {"name": "other"}, {})


def test_paper_and_demo_configs_resolve():
    for name in ("config.yaml", "demo.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        runs, meta = resolve_runs(cfg, name, "d")
        assert {"tanh", "ln"} <= set(runs)
        assert runs["tanh"]["model"]["encoder"]["out_norm"] == "dyntanh"
        assert runs["tanh"]["model"]["objective"]["target_norm"] == "disabled"
        assert runs["ln"]["model"]["encoder"]["out_norm"] == "layernorm"
        assert runs["ln"]["model"]["objective"]["target_norm"] == "layernorm"


def test_source_hash_follows_file_contents(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    h1 = source_hash(tmp_path, ["pkg", "missing.py"])
    assert h1 == source_hash(tmp_path, ["pkg", "missing.py"])
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    h2 = source_hash(tmp_path, ["pkg"])
    assert h2 != h1
    (tmp_path / "missing.py").write_text("")
    assert source_hash(tmp_path, ["pkg", "missing.py"]) != h2


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_conda_env_and_constraints_pin_every_pyproject_dependency_alike():
    constraints = _pins((REPO / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs" / "featnorm.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = _pins(pip)
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower().replace("_", "-")
        assert name in constraints, f"constraints.txt does not pin {name}"
        assert env_pins.get(name) == constraints[name], f"envs/featnorm.yaml pins {name} differently"
    assert constraints["torch"] == "2.14.1" and constraints["torchvision"] == "0.29.1"
    assert "featnorm" not in constraints
