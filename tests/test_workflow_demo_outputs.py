"""The CPU demo end to end (`snakemake --cores 2 --configfile config/demo.yaml`): every table
and figure exists, every seed of every run (and of the random-init baseline) is evaluated, and
the summary table has a row per run with mean ± std over its seeds of the linear-probe and
k-NN accuracies and the depth RMSE, and the gain over random init. Slow (minutes): CI runs it
after the demo, when Snakemake has nothing left to do.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from workflow_helpers import REPO, dry_run_jobs, snakemake

FIGURES = ["loss_maps", "pca_features", "token_loss_distribution", "token_energy",
           "training_curves", "linear_probe_depth", "gain_vs_steps", "mask_picture", "mean_loss",
           "sample_losses", "pca_features_hsv"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_demo_writes_every_table_and_figure_with_a_row_per_run(tmp_path):
    res = snakemake("--cores", "2", "--configfile", "config/demo.yaml", timeout=3600)
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-8000:]

    cfg = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    results = REPO / cfg["results"]
    groups = [n for n, e in cfg["runs"].items() if (e or {}).get("enabled", True)]
    baselines = [n for n in groups if cfg["runs"][n].get("baseline")]
    assert baselines == ["random"] and len(cfg["seeds"]) >= 2
    runs = [f"{g}-s{s}" for g in groups for s in cfg["seeds"]]

    for fig in FIGURES:
        for ext in ("png", "pdf"):
            path = results / "paper" / "figures" / f"{fig}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    for ext in ("csv", "md", "tex"):
        path = results / "paper" / "tables" / f"summary.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path

    table = pd.read_csv(results / "paper" / "tables" / "summary.csv").set_index("run")
    assert sorted(table.index) == sorted(groups)
    assert (table["n"] == len(cfg["seeds"])).all()
    for column in ("linear top-1 best (%)", "kNN top-1 best (%)", "depth RMSE (m)"):
        assert table[column].notna().all(), (column, table)
        assert table[f"{column} std"].notna().all(), (column, table)  # a spread over the seeds
    for column in ("linear top-1 best (%)", "kNN top-1 best (%)"):
        assert ((table[column] >= 0) & (table[column] <= 100)).all()
    assert (table["depth RMSE (m)"] > 0).all()
    trained = [g for g in groups if g not in baselines]
    for column in ("linear top-1 gain (pts)", "kNN top-1 gain (pts)", "depth RMSE gain (m)"):
        assert table.loc[trained, column].notna().all() and table.loc[baselines, column].isna().all()
    gain = table.loc["tanh", "kNN top-1 best (%)"] - table.loc["random", "kNN top-1 best (%)"]
    assert table.loc["tanh", "kNN top-1 gain (pts)"] == pytest.approx(gain)
    md = (results / "paper" / "tables" / "summary.md").read_text()
    assert "random init" in md and " ± " in md

    for run in runs:
        run_dir = results / "runs" / run
        assert (run_dir / "config.yaml").is_file() and (run_dir / "model.pt").is_file()
        for name in ("linear_probe.json", "knn_probe.json", "depth_probe.json", "lidar.json", "depth_strips.png"):
            assert (run_dir / "eval" / name).is_file(), run_dir / "eval" / name
        step = "init_model" if run.startswith("random") else "pretrain"
        provenance = json.loads((run_dir / "provenance" / f"{step}.json").read_text())
        assert provenance["packages"]["torch"] and "commit" in provenance["git"]
        knn = json.loads((run_dir / "eval" / "knn_probe.json").read_text())
        assert knn["k"] == 20 and (knn["model_step"] == 0) == run.startswith("random")  # random init: step 0

    # Snakemake agrees that nothing is left to do.
    again = snakemake("-n", "--configfile", "config/demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr

    # After the demo, changing one run reruns only that run's chain and the figures/tables.
    changed = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    changed["runs"]["ln"]["model"]["objective"]["target_norm"] = "batchnorm"
    path = tmp_path / "demo_changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    dry = snakemake("-n", "--configfile", str(path))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    jobs = dry_run_jobs(dry.stdout)
    assert {wc["run"] for _, wc in jobs if "run" in wc} == {f"ln-s{s}" for s in cfg["seeds"]}
    # (the mask picture draws the first compared run's data only: tanh, unchanged)
    assert {rule for rule, wc in jobs if "run" not in wc} == {
        "fig_loss_maps", "fig_pca_features", "fig_token_loss_distribution", "fig_token_energy",
        "fig_training_curves", "fig_linear_probe_depth", "fig_gain_vs_steps", "fig_mean_loss",
        "fig_sample_losses", "fig_pca_features_hsv", "table_summary", "all"}
