"""The paper config's DAG: every enabled run through every stage, built without any data."""

from __future__ import annotations

import yaml

from workflow_helpers import REPO, dry_run_jobs, job_counts, snakemake

FIGURES = ["loss_maps", "pca_features", "token_loss_distribution", "token_energy",
           "training_curves", "linear_probe_depth", "mask_picture", "mean_loss", "sample_losses",
           "pca_features_hsv"]


def paper_runs():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    enabled = [n for n, e in cfg["runs"].items() if (e or {}).get("enabled", True)]
    disabled = [n for n in cfg["runs"] if n not in enabled]
    return enabled, disabled


def test_paper_dry_run_builds_every_stage_of_every_enabled_run(tmp_path):
    res = snakemake("-n", "--nolock", "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "workflow specific profile profiles/default" in res.stdout + res.stderr
    jobs = dry_run_jobs(res.stdout)
    counts = job_counts(jobs)
    enabled, disabled = paper_runs()
    n = len(enabled)
    assert {"tanh", "ln"} <= set(enabled)
    assert counts["download"] == 4 and counts["pack_shards"] == 4  # imagenet + nyu, train + val
    for rule in ("run_config", "pretrain", "linear_probe", "depth_probe", "lidar"):
        assert counts[rule] == n, (rule, counts)
    assert counts["extract_features"] == 2 * n
    for fig in FIGURES:
        assert counts[f"fig_{fig}"] == 1
    assert counts["table_summary"] == 1 and counts["all"] == 1
    pretrained = {wc["run"] for rule, wc in jobs if rule == "pretrain"}
    assert pretrained == set(enabled)
    assert not pretrained & set(disabled)
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
    # the demo config replaces the paper config: none of the paper's ablation runs
    runs = {wc["run"] for rule, wc in dry_run_jobs(demo.stdout) if rule == "pretrain"}
    assert runs == {"tanh", "ln"}


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
    assert runs == {"tanh", "ln"}
    assert "later" not in res.stdout
