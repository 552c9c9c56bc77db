"""Every figure/table script runs on a small generated set of run directories (tiny models
saved as model.pt, made-up logs and eval files) and writes its files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from featnorm.plotting.synthetic_runs import tiny_config, write_image_folder, write_run, write_shard

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SCRIPT_NAMES = [
    "fig_loss_maps",
    "fig_pca_features",
    "fig_token_loss_distribution",
    "fig_token_energy",
    "fig_training_curves",
    "fig_linear_probe_depth",
    "fig_gain_vs_steps",
    "fig_sample_losses",
    "fig_mean_loss",
    "table_summary",
]


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"plotting_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    runs = root / "runs"
    write_run(runs / "ijepa-tanh", tiny_config("ijepa-tanh"), seed=0)
    write_run(runs / "ijepa-ln", tiny_config("ijepa-ln", out_norm="layernorm", target_norm="layernorm"), seed=1,
              evals=("linear_probe",))  # no depth probe, no LiDAR yet: blank cells
    write_run(runs / "ijepa-abs", tiny_config("ijepa-abs", pos_embed="absolute"), seed=2,
              with_model=False, with_log=False, evals=())  # a run that has produced nothing yet
    write_image_folder(root / "my_images", 3, size=80)
    write_shard(root / "val" / "val-000000.tar", 4, size=72)
    return root


def run_dirs(results, *names):
    return [str(results / "runs" / n) for n in names]


def assert_written(*paths):
    for p in paths:
        assert Path(p).is_file() and Path(p).stat().st_size > 0, p


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_script_help_exits_cleanly(name, capsys):
    with pytest.raises(SystemExit) as e:
        script(name).main(["--help"])
    assert e.value.code == 0
    assert "--runs" in capsys.readouterr().out


def test_fig_loss_maps_from_an_image_folder_writes_png_pdf_and_maps(results, tmp_path):
    out = tmp_path / "loss_maps"
    script("fig_loss_maps").main(["--runs", *run_dirs(results, "ijepa-tanh", "ijepa-ln"), "--names", "Tanh", "LN",
                                  "--image-dir", str(results / "my_images"), "--num-images", "2",
                                  "--image-size", "64", "--masks", "20", "--batch-size", "8", "--device", "cpu",
                                  "--out", str(out)])
    assert_written(f"{out}.png", f"{out}.pdf", f"{out}.npz")
    import numpy as np

    maps = np.load(f"{out}.npz")
    assert maps["Tanh/mean"].shape == (2, 8, 8) and maps["LN/count"].sum() > 0


def test_fig_token_loss_distribution_from_shards_writes_stats_csv(results, tmp_path):
    png, pdf = tmp_path / "d.png", tmp_path / "d.pdf"
    script("fig_token_loss_distribution").main([
        "--runs", *run_dirs(results, "ijepa-tanh", "ijepa-ln"), "--shards", str(results / "val"),
        "--num-images", "2", "--image-size", "64", "--masks", "10", "--device", "cpu",
        "--png", str(png), "--pdf", str(pdf)])
    assert_written(png, pdf, tmp_path / "d.csv")  # the CSV goes beside the figure by default
    stats = pd.read_csv(tmp_path / "d.csv")
    assert list(stats["run"]) == ["ijepa-tanh", "ijepa-ln"]
    assert {"p99", "kurtosis", "p99_over_median"} <= set(stats.columns)


def test_fig_sample_losses_and_mean_loss_write_their_numbers(results, tmp_path):
    runs = run_dirs(results, "ijepa-tanh", "ijepa-ln")
    script("fig_sample_losses").main(["--runs", *runs, "--shards", str(results / "val"), "--num-images", "3",
                                      "--image-size", "64", "--masks", "4", "--device", "cpu",
                                      "--out", str(tmp_path / "samples")])
    assert_written(tmp_path / "samples.png", tmp_path / "samples.pdf", tmp_path / "samples.csv")
    table = pd.read_csv(tmp_path / "samples.csv")
    assert len(table) == 6 and (table["sample_mean"] > 0).all() and (table["sample_var"] >= 0).all()
    script("fig_mean_loss").main(["--runs", *runs, "--image-dir", str(results / "my_images"), "--num-images", "3",
                                  "--image-size", "64", "--masks", "2", "--forward", "predict-all", "--device", "cpu",
                                  "--no-progress", "--out", str(tmp_path / "mean")])
    assert_written(tmp_path / "mean.png", tmp_path / "mean.pdf", tmp_path / "mean.npz")
    import numpy as np

    npz = np.load(tmp_path / "mean.npz")
    assert npz["ijepa-ln/mean"].shape == (8, 8) and npz["ijepa-ln/count"].sum() > 0


def test_fig_pca_features_and_token_energy(results, tmp_path):
    runs = run_dirs(results, "ijepa-tanh", "ijepa-ln")
    common = ["--image-dir", str(results / "my_images"), "--num-images", "2", "--image-size", "64", "--device", "cpu"]
    script("fig_pca_features").main(["--runs", *runs, *common, "--depth", "-2", "--out", str(tmp_path / "pca")])
    assert_written(tmp_path / "pca.png", tmp_path / "pca.pdf")
    script("fig_pca_features").main(["--runs", *runs, *common, "--style", "hsv", "--out", str(tmp_path / "hsv")])
    assert_written(tmp_path / "hsv.png", tmp_path / "hsv.pdf")
    script("fig_token_energy").main(["--runs", *runs, *common, "--out", str(tmp_path / "energy")])
    assert_written(tmp_path / "energy.png", tmp_path / "energy.pdf", tmp_path / "energy.csv")
    energy = pd.read_csv(tmp_path / "energy.csv")
    ln = energy[energy["run"] == "ijepa-ln"]
    assert (ln["cv"] < 1e-2).all()  # LayerNorm without affine: every token has the same norm


def test_figures_that_need_a_model_name_the_missing_file(results, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script("fig_token_energy").main(["--runs", *run_dirs(results, "ijepa-tanh", "ijepa-abs"),
                                         "--image-dir", str(results / "my_images"), "--out", str(tmp_path / "e")])
    assert "ijepa-abs/model.pt" in capsys.readouterr().err


def test_user_errors_are_one_line_messages_not_tracebacks(results, tmp_path):
    with pytest.raises(SystemExit) as e:
        script("fig_pca_features").main(["--runs", *run_dirs(results, "ijepa-tanh"), "--depth", "-9", "--device", "cpu",
                                         "--image-dir", str(results / "my_images"), "--image-size", "64",
                                         "--out", str(tmp_path / "p")])
    assert "depth -9 does not exist in an encoder of 3 blocks" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        script("fig_token_energy").main(["--runs", *run_dirs(results, "ijepa-tanh"), "--shards", str(tmp_path / "nowhere"),
                                         "--out", str(tmp_path / "e")])
    assert "nowhere" in str(e.value.code)


def test_fig_training_curves_and_linear_probe_depth_tolerate_missing_results(results, tmp_path):
    runs = run_dirs(results, "ijepa-tanh", "ijepa-ln", "ijepa-abs")
    script("fig_training_curves").main(["--runs", *runs, "--out", str(tmp_path / "curves")])
    assert_written(tmp_path / "curves.png", tmp_path / "curves.pdf")
    script("fig_linear_probe_depth").main(["--runs", *runs, "--png", str(tmp_path / "lp.png")])
    assert_written(tmp_path / "lp.png")
    assert not (tmp_path / "lp.pdf").exists()


def test_table_summary_has_a_row_per_run_differing_settings_and_blank_missing_cells(results, tmp_path):
    script("table_summary").main(["--runs", *run_dirs(results, "ijepa-tanh", "ijepa-ln", "ijepa-abs"),
                                  "--out", str(tmp_path / "summary")])
    assert_written(tmp_path / "summary.csv", tmp_path / "summary.md", tmp_path / "summary.tex")
    df = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False, dtype=str)
    assert list(df["run"]) == ["ijepa-tanh", "ijepa-ln", "ijepa-abs"]
    # the settings that differ, and only those
    assert {"encoder.out_norm", "objective.target_norm", "encoder.pos_embed"} <= set(df.columns)
    assert "encoder.dim" not in df.columns and "name" not in df.columns
    assert list(df["encoder.out_norm"]) == ["dyntanh", "layernorm", "dyntanh"]
    metrics = ["linear top-1 best (%)", "best depth", "linear top-1 last (%)", "kNN top-1 best (%)",
               "kNN top-1 last (%)", "depth RMSE (m)", "LiDAR", "RankMe", "images seen", "train hours",
               "encoder params", "predictor params"]
    assert df.columns[-len(metrics):].tolist() == metrics
    tanh, ln, absent = (df.iloc[i] for i in range(3))
    assert all(tanh[m] != "" for m in metrics)
    assert ln["depth RMSE (m)"] == "" and ln["LiDAR"] == "" and ln["RankMe"] == ""
    assert ln["linear top-1 best (%)"] != "" and ln["encoder params"] != ""
    assert all(absent[m] == "" for m in metrics)  # nothing yet: blank, never 0
    assert int(tanh["images seen"]) == 720 and int(tanh["best depth"]) == 2
    assert float(tanh["linear top-1 best (%)"]) > float(tanh["linear top-1 last (%)"])
    md = (tmp_path / "summary.md").read_text().splitlines()
    assert len(md) == 2 + 3 and md[0].startswith("| run")
    assert "| ijepa-abs " in md[-1] and " 0 " not in md[-1].split("|", 5)[-1]
    tex = (tmp_path / "summary.tex").read_text()
    assert "\\begin{tabular}" in tex and "ijepa-ln" in tex



@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """tanh and ln, two seeds each, with snapshots at steps 20 and 40, and a random-init baseline."""
    import json

    root = tmp_path_factory.mktemp("seeded")
    for seed in (0, 1):
        for name, kw in (("tanh", {}), ("ln", {"out_norm": "layernorm", "target_norm": "layernorm"})):
            cfg = tiny_config(f"{name}-s{seed}", **kw)
            cfg.seed = seed
            cfg.train.snapshot_steps = (20, 40)
            d = write_run(root / f"{name}-s{seed}", cfg, seed=seed)
            for step in (20, 40, 80):  # 80: not in the config (an earlier one's): never read
                path = d / "eval" / "snapshots" / f"knn_probe-step-{step}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"top1": [10.0 + step / 4 + seed], "best_top1": 10.0 + step / 4 + seed,
                                            "model_step": step, "images_seen": 12 * step}))
        cfg = tiny_config(f"random-s{seed}")
        cfg.seed = seed
        write_run(root / f"random-s{seed}", cfg, seed=seed, with_log=False, evals=("linear_probe", "knn_probe"))
    return root


def _seeded_args(root):
    names = [f"{g}-s{s}" for g in ("tanh", "ln", "random") for s in (0, 1)]
    return ["--runs", *[str(root / n) for n in names], "--groups", *[n[:-3] for n in names],
            "--baselines", "random", "--reference", "tanh=random", "ln=random"]


def test_seed_groups_in_the_table_and_the_per_depth_and_gain_figures(seeded, tmp_path):
    args = _seeded_args(seeded)
    script("table_summary").main(args + ["--out", str(tmp_path / "summary")])
    df = pd.read_csv(tmp_path / "summary.csv")
    assert list(df["run"]) == ["tanh", "ln", "random"] and list(df["n"]) == [2, 2, 2]
    assert df["kNN top-1 gain (pts)"].notna().tolist() == [True, True, False]
    assert "± " in (tmp_path / "summary.md").read_text()
    script("fig_linear_probe_depth").main(args + ["--out", str(tmp_path / "lp")])
    assert_written(tmp_path / "lp.png", tmp_path / "lp.pdf")
    script("fig_gain_vs_steps").main(args + ["--out", str(tmp_path / "gain")])
    assert_written(tmp_path / "gain.png", tmp_path / "gain.pdf", tmp_path / "gain.csv")
    curves = pd.read_csv(tmp_path / "gain.csv")
    assert sorted(set(curves["step"])) == [0, 20, 40, 60]  # start, snapshots of the config, final model
    assert set(curves["n"]) == {2}
    # the training curves take only trained runs; a group's seeds share its entry
    trained = [str(seeded / f"{g}-s{s}") for g in ("tanh", "ln") for s in (0, 1)]
    script("fig_training_curves").main(["--runs", *trained, "--groups", "tanh", "tanh", "ln", "ln",
                                        "--out", str(tmp_path / "curves")])
    assert_written(tmp_path / "curves.png")


def test_gain_figure_without_a_baseline_is_a_usage_error(seeded, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script("fig_gain_vs_steps").main(["--runs", str(seeded / "tanh-s0"), "--out", str(tmp_path / "g")])
    assert "--baselines" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
