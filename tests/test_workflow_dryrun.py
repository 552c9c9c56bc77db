"""The paper config's DAG: every enabled run through every stage, built without any data."""

from __future__ import annotations

import yaml

from workflow_helpers import REPO, dry_run_jobs, job_counts, snakemake

FIGURES = ["loss_maps", "pca_features", "token_loss_distribution", "token_energy",
           "training_curves", "linear_probe_depth", "gain_vs_steps", "mask_picture", "mean_loss",
           "sample_losses", "pca_features_hsv"]


def paper_runs():
    """(enabled trained runs, enabled baselines, disabled runs) of config/config.yaml."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    enabled = [n for n, e in cfg["runs"].items() if (e or {}).get("enabled", True)]
    baselines = [n for n in enabled if cfg["runs"][n].get("baseline")]
    disabled = [n for n in cfg["runs"] if n not in enabled]
    return [n for n in enabled if n not in baselines], baselines, disabled


def test_paper_dry_run_builds_every_stage_of_every_enabled_run(tmp_path):
    res = snakemake("-n", "--nolock", "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "workflow specific profile profiles/default" in res.stdout + res.stderr
    jobs = dry_run_jobs(res.stdout)
    counts = job_counts(jobs)
    trained, baselines, disabled = paper_runs()
    n = len(trained) + len(baselines)
    assert {"tanh", "ln"} <= set(trained) and baselines == ["random"]
    assert counts["download"] == 4 and counts["pack_shards"] == 4  # imagenet + nyu, train + val
    for rule in ("run_config", "linear_probe", "knn_probe", "depth_probe", "lidar"):
        assert counts[rule] == n, (rule, counts)
    assert counts["pretrain"] == len(trained) and counts["init_model"] == 1
    assert counts["extract_features"] == 2 * n
    assert "extract_snapshot_features" not in counts  # snapshots are off in the paper config
    for fig in FIGURES:
        assert counts[f"fig_{fig}"] == 1
    assert counts["table_summary"] == 1 and counts["all"] == 1
    pretrained = {wc["run"] for rule, wc in jobs if rule == "pretrain"}
    assert pretrained == set(trained)
    assert not pretrained & set(disabled)
    assert {wc["run"] for rule, wc in jobs if rule == "init_model"} == {"random"}
    for fig in FIGURES:
        assert f"{tmp_path}/results/paper/figures/{fig}.pdf" in res.stdout
    for ext in ("csv", "md", "tex"):
        assert f"{tmp_path}/results/paper/tables/summary.{ext}" in res.stdout


def test_demo_dry_run_has_every_rule_of_the_paper_workflow_but_download(tmp_path):
    paper = snakemake("-n", "--nolock", "--config", f"results={tmp_path}/p")
    demo = snakemake("-n", "--nolock", "--configfile", "config/demo.yaml", "--config", f"results={tmp_path}/d")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    paper_rules = set(job_counts(dry_run_jobs(paper.stdout)))
    demo_rules = set(job_counts(dry_run_jobs(demo.stdout)))
    assert paper_rules - demo_rules == {"download"}
    assert demo_rules - paper_rules == {"demo_images", "demo_depth"}
    # the demo config replaces the paper config: none of the paper's ablation runs; two seeds each
    jobs = dry_run_jobs(demo.stdout)
    assert {wc["run"] for rule, wc in jobs if rule == "pretrain"} == {"tanh-s0", "tanh-s1", "ln-s0", "ln-s1"}
    assert {wc["run"] for rule, wc in jobs if rule == "init_model"} == {"random-s0", "random-s1"}
    assert {wc["run"] for rule, wc in jobs if rule == "knn_probe"} == {
        "tanh-s0", "tanh-s1", "ln-s0", "ln-s1", "random-s0", "random-s1"}
    assert f"{tmp_path}/d/runs/ln-s1/eval/knn_probe.json" in demo.stdout


def test_cpu_study_trains_three_seeds_and_probes_every_snapshot(tmp_path):
    res = snakemake("-n", "--nolock", "--configfile", "config/cpu_study.yaml", "--config", f"results={tmp_path}/s")
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = dry_run_jobs(res.stdout)
    cfg = yaml.safe_load((REPO / "config" / "cpu_study.yaml").read_text())
    seeds, snaps = cfg["seeds"], cfg["defaults"]["train"]["snapshot_steps"]
    assert len(seeds) >= 3
    assert {wc["run"] for rule, wc in jobs if rule == "pretrain"} == {f"{r}-s{s}" for r in ("tanh", "ln") for s in seeds}
    assert {(wc["run"], int(wc["step"])) for rule, wc in jobs if rule == "knn_snapshot"} == {
        (f"{r}-s{s}", step) for r in ("tanh", "ln") for s in seeds for step in snaps}
    assert f"{tmp_path}/s/paper/figures/gain_vs_steps.png" in res.stdout


def test_one_figure_is_a_target_of_its_own(tmp_path):
    # targets before --config / --configfile, which take several values
    res = snakemake(f"{tmp_path}/r/paper/figures/training_curves.png",
                    "-n", "--nolock", "--config", f"results={tmp_path}/r")
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(dry_run_jobs(res.stdout))
    assert counts["fig_training_curves"] == 1
    assert "fig_loss_maps" not in counts and "table_summary" not in counts


def test_local_data_sources_feed_pack_shards_without_downloads(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split).mkdir(parents=True)
    (tmp_path / "nyu.mat").write_bytes(b"")
    (tmp_path / "splits.mat").write_bytes(b"")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["datasets"] = {
        "imagenet": {"source": "imagefolder", "path": str(tmp_path / "imagenet")},
        "nyu": {"source": "nyu-mat", "path": str(tmp_path / "nyu.mat"), "split_file": str(tmp_path / "splits.mat")},
    }
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    counts = job_counts(dry_run_jobs(res.stdout))
    assert "download" not in counts and counts["pack_shards"] == 4
    packs = [line for line in res.stdout.splitlines() if "scripts/pack_shards.py" in line]
    assert any(f"--source imagefolder --input {tmp_path}/imagenet/val" in p and "--classes" in p for p in packs)
    assert any(f"--source nyu-mat --input {tmp_path}/nyu.mat --split val" in p and "--split-file" in p for p in packs)


def test_a_source_that_needs_a_path_requires_one(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["datasets"]["imagenet"] = {"source": "imagefolder"}
    path = tmp_path / "nopath.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--nolock", "--configfile", str(path))
    assert res.returncode != 0
    assert "datasets.imagenet" in res.stdout + res.stderr and "path" in res.stdout + res.stderr


def test_a_disabled_run_stays_out_of_the_dag(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["runs"]["later"] = {"enabled": False, "model": {"encoder": {"num_registers": 8}}}
    path = tmp_path / "disabled.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--nolock", "--configfile", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    runs = {wc.get("run") for _, wc in dry_run_jobs(res.stdout)} - {None}
    assert runs == {f"{g}-s{s}" for g in ("tanh", "ln", "random") for s in (0, 1)}
    assert "later" not in res.stdout


def test_snapshot_steps_give_each_snapshot_features_and_knn_only(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["defaults"]["train"]["snapshot_steps"] = [20, 60]
    path = tmp_path / "snapshots.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = snakemake("-n", "-p", "--nolock", "--configfile", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = dry_run_jobs(res.stdout)
    trained = {f"{g}-s{s}" for g in ("tanh", "ln") for s in (0, 1)}
    knn = {(wc["run"], wc["step"]) for rule, wc in jobs if rule == "knn_snapshot"}
    assert knn == {(r, step) for r in trained for step in ("20", "60")}  # no baseline snapshots
    feats = [wc for rule, wc in jobs if rule == "extract_snapshot_features"]
    assert len(feats) == 2 * len(knn) and {wc["split"] for wc in feats} == {"train", "val"}
    assert f"--model {tmp_path}/results/runs/tanh-s1/snapshots/step-20.pt" in res.stdout
    # snapshots get nothing but the k-NN probe
    assert not any("snapshots" in wc.get("run", "") for _, wc in jobs)
    assert job_counts(jobs)["linear_probe"] == 6

