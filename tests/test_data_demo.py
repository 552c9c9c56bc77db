"""Generated demo data: deterministic, sizes in range, class given by structure not colour."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from featnorm.data.demo_classification import CLASSES, render, write_classification_demo
from featnorm.data.demo_depth import render_scene, write_nyu_mat

ROOT = Path(__file__).resolve().parents[1]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_classification_demo_is_deterministic_by_seed(tmp_path):
    write_classification_demo(tmp_path / "a", seed=7, n_train=20, n_val=10)
    write_classification_demo(tmp_path / "b", seed=7, n_train=20, n_val=10)
    write_classification_demo(tmp_path / "c", seed=8, n_train=20, n_val=10)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == CLASSES
    assert len(list((tmp_path / "a" / "val").rglob("*.jpg"))) == 10


def test_classification_images_have_varied_size_and_aspect():
    sizes = [render(i % 10, np.random.default_rng([0, 0, i])).shape[:2] for i in range(200)]
    h = np.array([s[0] for s in sizes])
    w = np.array([s[1] for s in sizes])
    assert h.min() >= 64 and w.min() >= 64 and h.max() <= 320 and w.max() <= 320
    a = h / w
    assert a.min() >= 0.5 - 1e-6 and a.max() <= 2 + 1e-6 and a.std() > 0.2


def test_class_is_not_readable_from_global_colour():
    feats, labels = [], []
    for i in range(250):
        img = render(i % 10, np.random.default_rng([1, 0, i])).astype(np.float32)
        feats.append(np.concatenate([img.mean((0, 1)), img.std((0, 1))]))
        labels.append(i % 10)
    x, y = np.array(feats), np.array(labels)
    x = (x - x.mean(0)) / x.std(0)
    tr, te = slice(0, 200), slice(200, 250)
    cent = np.stack([x[tr][y[tr] == c].mean(0) for c in range(10)])
    pred = ((x[te][:, None] - cent[None]) ** 2).sum(-1).argmin(1)
    acc = (pred == y[te]).mean()
    assert acc < 0.35, f"global colour statistics predict the class too well: {acc}"


def test_nyu_mat_has_the_real_files_layout_and_exact_depth(tmp_path):
    write_nyu_mat(tmp_path / "n.mat", seed=0, n_train=8, n_test=4, height=30, width=40)
    with h5py.File(tmp_path / "n.mat", "r") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (12, 3, 40, 30)
        assert f["depths"].dtype == np.float32 and f["depths"].shape == (12, 40, 30)
        tr = np.asarray(f["trainNdxs"]).ravel().astype(int)
        te = np.asarray(f["testNdxs"]).ravel().astype(int)
        assert len(tr) == 8 and len(te) == 4 and not set(tr) & set(te) and min(tr.min(), te.min()) == 1
        img0 = f["images"][0].transpose(2, 1, 0)
        dep0 = f["depths"][0].T
    ref_img, ref_dep = render_scene(np.random.default_rng([0, 0]), 30, 40)
    assert np.array_equal(img0, ref_img) and np.array_equal(dep0, ref_dep)
    assert (dep0 > 0.1).all() and (dep0 < 20).all()


def test_depth_is_camera_z_of_a_flat_wall():
    # rows near the horizon hit the back wall or objects; depth is smallest at the bottom (floor)
    img, dep = render_scene(np.random.default_rng([3, 3]), 60, 80)
    assert img.shape == (60, 80, 3) and dep.shape == (60, 80)
    assert dep[-1].mean() < dep[30].mean()


def test_make_demo_data_script_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("mdd", ROOT / "scripts" / "make_demo_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--kind", "classification", "--out", str(tmp_path / "c"), "--train", "10", "--val", "10"])
    mod.main(["--kind", "depth", "--out", str(tmp_path / "d.mat"), "--train", "3", "--val", "2", "--height", "24", "--width", "32"])
    assert len(list((tmp_path / "c").rglob("*.jpg"))) == 20 and (tmp_path / "d.mat").is_file()
    Image.open(next((tmp_path / "c").rglob("*.jpg"))).verify()


def test_every_element_of_the_structure_gets_its_own_colour():
    from featnorm.data.demo_classification import _elements

    for cls in range(len(CLASSES)):
        rng = np.random.default_rng([2, 0, cls])
        labels = _elements(cls, 96, 128, rng)
        assert len(np.unique(labels)) >= 3, CLASSES[cls]  # more than a foreground/background pair
    img = render(0, np.random.default_rng([2, 1, 0]))  # horizontal stripes
    row_colours = {tuple(np.round(img[r].mean(0) / 32)) for r in range(0, img.shape[0], 4)}
    assert len(row_colours) > 4
