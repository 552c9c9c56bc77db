"""The paper config's DAG: every enabled run through every stage, built without any data."""

from __future__ import annotations

import yaml

from workflow_helpers import REPO, dry_run_jobs, job_counts, snakemake

FIGURES = ["loss_maps", "pca_features", "token_loss_distribution", "token_energy",
           "training_curves", "linear_probe_depth"]


def paper_runs():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    enabled = [n for n, e in cfg["runs"].items() if (e or {}).get("enabled", True)]
    disabled = [n for n in cfg["runs"] if n not in enabled]
    return enabled, disabled


def test_paper_dry_run_builds_every_stage_of_every_enabled_run(tmp_path):
    res = snakemake("-n", "--nolock", "--config", f"results={tmp_path}/results")
    assert res.returncode == 0, res.stdout + res.stderr
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
