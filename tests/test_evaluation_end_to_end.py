"""A short end-to-end evaluation of a tiny random-init model on small generated shards:
extract_features -> linear_probe, depth_probe and lidar, through the scripts' main()."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featnorm.config import run_config_from_dict, to_dict
from featnorm.data.demo_classification import jpeg_bytes, render
from featnorm.data.demo_depth import render_scene
from featnorm.data.nyu import npy_bytes
from featnorm.data.shards import ShardWriter
from featnorm.models.encoder import Encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import depth_probe as depth_probe_script  # noqa: E402
import extract_features as extract_script  # noqa: E402
import lidar as lidar_script  # noqa: E402
import linear_probe as linear_probe_script  # noqa: E402

TINY = {
    "model": {"patch_size": 4, "encoder": {"dim": 32, "depth": 2, "num_heads": 2, "num_registers": 1}},
    "data": {"min_side": 32, "max_side": 64},
}


def _write_classification(out: Path, n: int, seed: int, per_shard: int) -> None:
    rng = np.random.default_rng(seed)
    with ShardWriter(out, out.name, shard_bytes=per_shard * 6000, split=out.name) as w:
        for i in range(n):
            cls = i % 3
            img = np.asarray(Image.fromarray(render(cls, rng)).resize((72, 56)))
            w.write({"__key__": f"{i:06d}", "jpg": jpeg_bytes(img), "cls": str(cls)})


def _write_depth(out: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with ShardWriter(out, out.name, shard_bytes=40_000, split=out.name) as w:
        for i in range(n):
            img, depth = render_scene(rng, 48, 64)
            w.write({"__key__": f"{i:06d}", "jpg": jpeg_bytes(img), "depth.npy": npy_bytes(depth)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    cfg = run_config_from_dict(TINY)
    enc = Encoder(cfg.model.encoder, cfg.model.patch_dim)
    torch.save({"config": to_dict(cfg), "teacher": enc.state_dict(), "student": enc.state_dict(),
                "predictor": {}, "step": 3, "images_seen": 30}, root / "model.pt")
    _write_classification(root / "cls" / "train", 24, 0, per_shard=8)
    _write_classification(root / "cls" / "val", 12, 1, per_shard=8)
    _write_depth(root / "nyu" / "train", 8, 0)
    _write_depth(root / "nyu" / "val", 4, 1)
    return root


def test_features_then_linear_probe(setup, tmp_path):
    common = ["--model", str(setup / "model.pt"), "--image-size", "64", "--num-workers", "0", "--batch-size", "5",
              "--no-progress", "--device", "cpu"]
    for split in ("train", "val"):
        rc = extract_script.main(common + ["--shards", str(setup / "cls" / split), "--out", str(tmp_path / split)])
        assert rc == 0
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 24 and manifest["num_depths"] == 3
    assert len(manifest["shards"]) > 1
    # a second run finds the cache complete and does nothing
    assert extract_script.main(common + ["--shards", str(setup / "cls" / "train"), "--out", str(tmp_path / "train")]) == 0
    out = tmp_path / "linear_probe.json"
    rc = linear_probe_script.main(["--train-features", str(tmp_path / "train"), "--val-features", str(tmp_path / "val"),
                                   "--out", str(out), "--epochs", "3", "--batch-size", "8", "--device", "cpu",
                                   "--no-progress"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["top1"]) == 3 and len(res["top5"]) == 3 and res["num_classes"] == 3
    assert res["last_depth"] == 2 and 0 <= res["best_top1"] <= 100 and res["depths"] == [0, 1, 2]
    assert len(res["loss_curve"]["train_loss_mean"]) == 3 and res["standardize"] is False


def test_last_layer_features_then_one_linear_probe_labelled_with_its_depth(setup, tmp_path):
    common = ["--model", str(setup / "model.pt"), "--image-size", "64", "--num-workers", "0", "--batch-size", "5",
              "--no-progress", "--device", "cpu", "--mode", "last-layer"]
    for split in ("train", "val"):
        assert extract_script.main(common + ["--shards", str(setup / "cls" / split), "--out", str(tmp_path / split)]) == 0
    out = tmp_path / "linear_probe.json"
    rc = linear_probe_script.main(["--train-features", str(tmp_path / "train"), "--val-features", str(tmp_path / "val"),
                                   "--out", str(out), "--epochs", "2", "--batch-size", "8", "--device", "cpu",
                                   "--no-progress", "--standardize"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["depths"] == [2] and res["best_depth"] == 2 and res["last_depth"] == 2 and len(res["top1"]) == 1
    assert res["standardize"] is True


def test_extraction_with_loader_workers_matches_one_process(setup, tmp_path):
    common = ["--model", str(setup / "model.pt"), "--shards", str(setup / "cls" / "train"), "--image-size", "64",
              "--batch-size", "5", "--no-progress", "--device", "cpu"]
    assert extract_script.main(common + ["--out", str(tmp_path / "w0"), "--num-workers", "0"]) == 0
    assert extract_script.main(common + ["--out", str(tmp_path / "w2"), "--num-workers", "2"]) == 0
    from featnorm.evaluation.features import load_features

    f0, y0 = load_features(tmp_path / "w0")
    f2, y2 = load_features(tmp_path / "w2")
    assert torch.equal(y0, y2) and torch.equal(f0, f2)


def test_max_images_limits_extraction(setup, tmp_path):
    rc = extract_script.main(["--model", str(setup / "model.pt"), "--shards", str(setup / "cls" / "train"),
                              "--out", str(tmp_path / "f"), "--image-size", "64", "--num-workers", "0",
                              "--max-images", "10", "--no-progress", "--device", "cpu"])
    assert rc == 0
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["count"] == 10


def test_depth_probe_script(setup, tmp_path):
    out, strips = tmp_path / "depth_probe.json", tmp_path / "strips.png"
    rc = depth_probe_script.main(["--model", str(setup / "model.pt"), "--train-shards", str(setup / "nyu" / "train"),
                                  "--val-shards", str(setup / "nyu" / "val"), "--out", str(out), "--strips", str(strips),
                                  "--epochs", "2", "--batch-size", "4", "--image-size", "64", "--num-workers", "0",
                                  "--num-strips", "2", "--no-progress", "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["num_train"] == 8 and res["num_val"] == 4 and res["feature_depth"] == 1
    assert np.isfinite(res["rmse"]) and res["rmse"] > 0 and 0 <= res["delta1"] <= 1
    assert Image.open(strips).size == (3 * 64 + 8, 2 * 64 + 4)


def test_lidar_script(setup, tmp_path):
    out = tmp_path / "lidar.json"
    rc = lidar_script.main(["--model", str(setup / "model.pt"), "--shards", str(setup / "cls" / "train"),
                            "--out", str(out), "--num-images", "6", "--num-augmentations", "3",
                            "--batch-size", "7", "--no-progress", "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["lidar"] > 0 and res["rankme"] > 0 and res["num_images"] == 6
    rc = lidar_script.main(["--model", str(setup / "model.pt"), "--shards", str(setup / "cls" / "train"),
                            "--out", str(tmp_path / "again.json"), "--num-images", "6", "--num-augmentations", "3",
                            "--no-progress", "--device", "cpu"])
    assert json.loads((tmp_path / "again.json").read_text())["lidar"] == pytest.approx(res["lidar"], rel=1e-6)


def test_scripts_refuse_a_checkpoint_whose_config_cannot_be_built(setup, tmp_path, capsys):
    ckpt = torch.load(setup / "model.pt", weights_only=True)
    ckpt["config"]["model"]["encoder"]["pos_embed"] = "sinusoidal"
    bad = tmp_path / "bad_model.pt"
    torch.save(ckpt, bad)
    rc = extract_script.main(["--model", str(bad), "--shards", str(setup / "cls" / "val"), "--out", str(tmp_path / "f"),
                              "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bad_model.pt" in err and "pos_embed" in err and len(err.splitlines()) == 1
    rc = lidar_script.main(["--model", str(bad), "--shards", str(setup / "cls" / "val"), "--out", str(tmp_path / "l.json")])
    assert rc == 2 and "bad_model.pt" in capsys.readouterr().err
