"""Rerun logic: after a complete (faked) run, changing one run's settings reruns only that
run's chain plus the figures and tables; changing plotting code reruns only the figures
and tables; an unchanged workflow has nothing to do.

The workflow is copied to a temporary folder with every stage script replaced by a fake
that creates the files named by its output options, so the whole DAG "runs" in seconds
with the real rules, the real run_step.py wrapper and the real run-config writer.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from workflow_helpers import REPO, dry_run_jobs, job_counts, snakemake

FAKE_SCRIPT = '''\
"""Stand-in for a stage script: creates the files its output options name."""
import sys
from pathlib import Path

OUTPUT_FLAGS = {"--out", "--strips", "--png", "--pdf", "--npz", "--csv", "--md", "--tex"}
args = sys.argv[1:]
for flag, value in zip(args, args[1:]):
    if flag not in OUTPUT_FLAGS:
        continue
    path = Path(value)
    if path.suffix:  # a file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("fake\\n")
    else:  # a folder: the files rules declare inside folders
        for sub in ("train", "val"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        for name in ("manifest.json", "model.pt", "train_log.jsonl"):
            (path / name).write_text("{}\\n")
'''

KEEP_SCRIPTS = {"run_step.py", "write_run_config.py"}


def scripts_called_by_rules() -> set[str]:
    names = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        names.update(re.findall(r"scripts/(\w+\.py)", smk.read_text()))
    return names


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """A copy of the workflow with fake stage scripts, run once to completion."""
    root = tmp_path_factory.mktemp("wf")
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow",
                    ignore=shutil.ignore_patterns("__pycache__", "profiles"))
    (root / "config").mkdir()
    shutil.copy(REPO / "config" / "schema.yaml", root / "config" / "schema.yaml")
    (root / "envs").mkdir()
    shutil.copy(REPO / "envs" / "featnorm.yaml", root / "envs" / "featnorm.yaml")
    (root / "scripts").mkdir()
    for name in scripts_called_by_rules():
        if name in KEEP_SCRIPTS:
            shutil.copy(REPO / "scripts" / name, root / "scripts" / name)
        else:
            (root / "scripts" / name).write_text(FAKE_SCRIPT)
    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    cfg["results"] = "results"
    cfg["seeds"] = [0]
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = snakemake("--cores", "2", cwd=root, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    return root


def dry_jobs(root: Path) -> list[tuple[str, dict]]:
    res = snakemake("-n", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    return dry_run_jobs(res.stdout)


# every figure that shows the compared runs' models or results (the mask picture shows only
# the first compared run's data, so a change to the second run leaves it alone)
RUN_FIGURE_AND_TABLE_RULES = {
    "fig_loss_maps", "fig_pca_features", "fig_token_loss_distribution", "fig_token_energy",
    "fig_training_curves", "fig_linear_probe_depth", "fig_gain_vs_steps", "fig_sample_losses", "fig_mean_loss",
    "fig_pca_features_hsv", "table_summary", "all",
}
FIGURE_AND_TABLE_RULES = RUN_FIGURE_AND_TABLE_RULES | {"fig_mask_picture"}
SEEDS = ("s0",)  # the copy of config/demo.yaml runs one seed (fewer jobs); a test adds another


def test_complete_workflow_has_nothing_to_do(workflow_copy):
    assert dry_jobs(workflow_copy) == []


def test_changing_one_run_reruns_only_its_chain_and_the_figures(workflow_copy):
    path = workflow_copy / "config" / "config.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    cfg["runs"]["ln"]["model"]["objective"]["target_norm"] = "batchnorm"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        jobs = dry_jobs(workflow_copy)
    finally:
        path.write_text(original)
    per_run = {(rule, wc["run"]) for rule, wc in jobs if "run" in wc}
    assert {run for _, run in per_run} == {f"ln-{s}" for s in SEEDS}
    assert {rule for rule, _ in per_run} == {
        "run_config", "pretrain", "extract_features", "linear_probe", "knn_probe", "depth_probe", "lidar"}
    assert job_counts(jobs)["extract_features"] == 2 * len(SEEDS)
    others = {rule for rule, wc in jobs if "run" not in wc}
    assert others == RUN_FIGURE_AND_TABLE_RULES
    # and restoring the config restores "nothing to do"
    assert dry_jobs(workflow_copy) == []


def test_plotting_code_change_reruns_only_figures_and_tables(workflow_copy):
    module = workflow_copy / "workflow" / "lib" / "featnorm" / "plotting" / "style.py"
    original = module.read_text()
    module.write_text(original + "\n# a change\n")
    try:
        jobs = dry_jobs(workflow_copy)
    finally:
        module.write_text(original)
    assert {rule for rule, _ in jobs} == FIGURE_AND_TABLE_RULES


def test_model_code_change_reruns_training_but_not_data(workflow_copy):
    module = workflow_copy / "workflow" / "lib" / "featnorm" / "layers" / "dyntanh.py"
    original = module.read_text()
    module.write_text(original + "\n# a change\n")
    try:
        counts = job_counts(dry_jobs(workflow_copy))
    finally:
        module.write_text(original)
    assert counts["pretrain"] == 2 * len(SEEDS) and counts["table_summary"] == 1
    assert counts["init_model"] == len(SEEDS)  # the model's construction changed: so did random init
    assert not {"pack_shards", "demo_images", "demo_depth", "run_config"} & set(counts)


def test_training_loop_change_reruns_training_but_not_the_random_init_baseline(workflow_copy):
    module = workflow_copy / "workflow" / "lib" / "featnorm" / "train" / "schedule.py"
    original = module.read_text()
    module.write_text(original + "\n# a change\n")
    try:
        jobs = dry_jobs(workflow_copy)
    finally:
        module.write_text(original)
    assert job_counts(jobs)["pretrain"] == 2 * len(SEEDS)
    assert not any(wc.get("run", "").startswith("random") for _, wc in jobs)


def test_adding_a_seed_runs_only_the_new_seeds_chain_and_the_figures(workflow_copy):
    path = workflow_copy / "config" / "config.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    cfg["seeds"] = [0, 2]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        jobs = dry_jobs(workflow_copy)
    finally:
        path.write_text(original)
    per_run = {(rule, wc["run"]) for rule, wc in jobs if "run" in wc}
    assert {run for _, run in per_run} == {"tanh-s2", "ln-s2", "random-s2"}
    assert {rule for rule, run in per_run if run == "random-s2"} == {
        "run_config", "init_model", "extract_features", "linear_probe", "knn_probe", "depth_probe", "lidar"}
    assert ("pretrain", "tanh-s2") in per_run and ("pretrain", "random-s2") not in per_run
    # the per-image figures show each compared run's first seed: they stay
    assert {rule for rule, wc in jobs if "run" not in wc} == {
        "fig_training_curves", "fig_linear_probe_depth", "fig_gain_vs_steps", "table_summary", "all"}
