"""Config checking: the schema and the run overrides stop a bad config before any job, naming
the key and the file; run resolution; the conda env and the constraints agree."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from featnorm.config import ConfigError
from featnorm.workflow.runs import reference_baselines, resolve_run, resolve_runs, run_hash
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
    assert meta["a"]["enabled"] is True and meta["b"] == {
        "enabled": False, "description": "off", "group": "b", "seed": 0, "baseline": None, "like": None}
    assert run_hash(runs["a"]) != run_hash(runs["b"])


def test_run_errors_name_source_and_run():
    with pytest.raises(ConfigError, match=r"x\.yaml: runs\.a: .*model\.encoder\.nope"):
        resolve_runs({"runs": {"a": {"model": {"encoder": {"nope": 1}}}}}, "x.yaml", "d")
    with pytest.raises(ConfigError, match=r"x\.yaml: runs\.a\.data\.train_shards"):
        resolve_runs({"runs": {"a": {"data": {"train_shards": "elsewhere"}}}}, "x.yaml", "d")
    with pytest.raises(ConfigError, match="name"):
        resolve_run("a", {"name": "other"}, {})


def test_paper_demo_and_cpu_study_configs_resolve():
    for name in ("config.yaml", "demo.yaml", "cpu_study.yaml"):
        cfg = yaml.safe_load((REPO / "config" / name).read_text())
        runs, meta = resolve_runs(cfg, name, "d")
        first = {m["group"]: r for r, m in reversed(list(meta.items()))}  # each group's first copy
        assert {"tanh", "ln", "random"} <= set(first)
        tanh, ln, random = (runs[first[g]] for g in ("tanh", "ln", "random"))
        assert tanh["model"]["encoder"]["out_norm"] == "dyntanh"
        assert tanh["model"]["objective"]["target_norm"] == "disabled"
        assert ln["model"]["encoder"]["out_norm"] == "layernorm"
        assert ln["model"]["objective"]["target_norm"] == "layernorm"
        assert meta[first["random"]]["baseline"] == "random-init" and random["model"] == tanh["model"]
        assert reference_baselines(meta, list(meta))["ln"] == "random"


def test_seeds_make_one_run_per_seed_named_after_it():
    cfg = {
        "seeds": [0, 1],
        "defaults": {"seed": 7, "train": {"steps": 5}},
        "runs": {
            "a": {},
            "b": {"seeds": [3]},
            "c": {"seed": 5},  # its own single seed: keeps its name
        },
    }
    runs, meta = resolve_runs(cfg, "x.yaml", "d")
    assert list(runs) == ["a-s0", "a-s1", "b-s3", "c"]
    assert [runs[r]["seed"] for r in runs] == [0, 1, 3, 5]
    assert [runs[r]["name"] for r in runs] == list(runs)
    assert {m["group"] for m in meta.values()} == {"a", "b", "c"}
    assert meta["a-s1"]["seed"] == 1 and meta["a-s1"]["group"] == "a"
    assert run_hash(runs["a-s0"]) != run_hash(runs["a-s1"])  # own checkpoint folders
    # without any seeds list every run keeps its name and the defaults' seed
    plain, _ = resolve_runs({"defaults": {"seed": 7}, "runs": {"a": {}}}, "x.yaml", "d")
    assert list(plain) == ["a"] and plain["a"]["seed"] == 7


def test_a_baseline_copies_its_like_runs_config_and_seeds():
    cfg = {
        "runs": {
            "tanh": {"seeds": [0, 2], "model": {"encoder": {"out_norm": "dyntanh"}}, "train": {"steps": 9}},
            "ln": {"seeds": [0, 2], "model": {"encoder": {"out_norm": "layernorm"}}},
            "rand_ln": {"baseline": "random-init", "like": "ln", "seeds": [4]},
            "rand": {"baseline": "random-init", "like": "tanh"},
        },
    }
    runs, meta = resolve_runs(cfg, "x.yaml", "d")
    assert [r for r in runs if meta[r]["baseline"]] == ["rand_ln-s4", "rand-s0", "rand-s2"]
    for seed in (0, 2):
        base, trained = runs[f"rand-s{seed}"], runs[f"tanh-s{seed}"]
        assert {k: v for k, v in base.items() if k != "name"} == {k: v for k, v in trained.items() if k != "name"}
    assert runs["rand_ln-s4"]["model"]["encoder"]["out_norm"] == "layernorm" and runs["rand_ln-s4"]["seed"] == 4
    assert meta["rand-s0"]["like"] == "tanh" and meta["rand-s0"]["group"] == "rand"
    # gains: against the baseline that is `like` the group, else the first baseline
    assert reference_baselines(meta, list(runs)) == {"tanh": "rand", "ln": "rand_ln"}
    only_tanh = [r for r in runs if meta[r]["group"] != "rand_ln"]
    assert reference_baselines(meta, only_tanh) == {"tanh": "rand", "ln": "rand"}
    assert reference_baselines(meta, ["tanh-s0", "ln-s0"]) == {}


@pytest.mark.parametrize("runs, message", [
    ({"r": {"baseline": "random-init", "like": "nope"}}, r"runs\.r\.like = 'nope' names no trained run"),
    ({"r": {"baseline": "random-init", "like": "a", "model": {"encoder": {"dim": 8}}}},
     r"runs\.r: a baseline takes the config of its `like` run; remove \['model'\]"),
    ({"r": {"baseline": "pretrained", "like": "a"}}, r"runs\.r\.baseline = 'pretrained'"),
    ({"r": {"baseline": "random-init", "like": "s"}, "s": {"baseline": "random-init", "like": "a"}},
     r"runs\.r\.like = 's' names no trained run"),
    ({"b": {"seeds": [1, 1]}}, r"runs\.b\.seeds = \[1, 1\] repeats a seed"),
    ({"b": {"seeds": []}}, r"runs\.b\.seeds = \[\]: give a non-empty list"),
    ({"b": {"seeds": [1], "seed": 2}}, r"runs\.b sets both `seed` and `seeds`"),
    ({"b": {"seeds": [0]}, "b-s0": {}}, r"runs\.b: the run name b-s0 is used twice"),
])
def test_bad_baselines_and_seeds_are_one_line_errors_naming_the_run(runs, message):
    with pytest.raises(ConfigError, match=r"x\.yaml: " + message):
        resolve_runs({"runs": {"a": {}, **runs}}, "x.yaml", "d")


def test_baseline_and_seed_keys_are_checked_by_the_schema():
    # in process (the snakemake round trip of schema errors is tested above)
    import jsonschema

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    good = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    jsonschema.validate(good, schema)

    def errors(mutate):
        cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
        mutate(cfg)
        return [".".join(map(str, e.absolute_path)) + ": " + e.message
                for e in jsonschema.Draft202012Validator(schema).iter_errors(cfg)]

    assert any(e.startswith("runs.r:") and "like" in e for e in errors(lambda c: c["runs"].update(r={"baseline": "random-init"})))
    assert any(e.startswith("runs.r:") and "baseline" in e for e in errors(lambda c: c["runs"].update(r={"like": "tanh"})))
    assert any(e.startswith("runs.r.baseline:") for e in errors(lambda c: c["runs"].update(r={"baseline": "trained", "like": "tanh"})))
    assert any(e.startswith("seeds.1:") for e in errors(lambda c: c.update(seeds=[0, -1])))
    assert any(e.startswith("seeds:") for e in errors(lambda c: c.update(seeds=[1, 1])))
    assert any(e.startswith("runs.tanh.seeds:") for e in errors(lambda c: c["runs"]["tanh"].update(seeds=[])))
    assert any(e.startswith("evaluation.knn.k:") for e in errors(lambda c: c["evaluation"].update(knn={"k": 0})))
    assert any(e.startswith("evaluation.knn:") for e in errors(lambda c: c["evaluation"].update(knn={"kk": 3})))


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
