"""Every packer on generated data: image folder, NYU .mat, existing WebDataset shards."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest

from featnorm.data.demo_classification import CLASSES, write_classification_demo
from featnorm.data.demo_depth import write_nyu_mat
from featnorm.data.imagefolder import pack_imagefolder
from featnorm.data.nyu import pack_nyu_mat, read_frame
from featnorm.data.shards import ShardError, index_webdataset, iter_samples, resolve_shards, sha256_file


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_classification_demo(root / "cls", seed=0, n_train=60, n_val=20)
    write_nyu_mat(root / "nyu.mat", seed=0, n_train=12, n_test=5, height=48, width=64)
    return root


def test_imagefolder_packer_writes_manifest_classes_and_labels(demo, tmp_path):
    m = pack_imagefolder(demo / "cls" / "train", tmp_path / "train", "train", shard_bytes=100_000)
    assert m["num_samples"] == 60 and len(m["shards"]) > 1 and m["keys"] == ["cls", "jpg"]
    assert json.loads((tmp_path / "train" / "classes.json").read_text()) == CLASSES
    for s in m["shards"]:
        assert sha256_file(tmp_path / "train" / s["name"]) == s["sha256"]
    labels = []
    for p in resolve_shards(tmp_path / "train"):
        for sample in iter_samples(p):
            labels.append(int(sample["cls"]))
            assert sample["jpg"][:3] == b"\xff\xd8\xff"
    assert sorted(labels) == sorted(i % 10 for i in range(60))
    # the folder's JPEG bytes are copied, not re-encoded
    src = {p.read_bytes() for p in (demo / "cls" / "train").rglob("*.jpg")}
    assert all(s["jpg"] in src for p in resolve_shards(tmp_path / "train") for s in iter_samples(p))


def test_packers_are_byte_identical_on_rerun(demo, tmp_path):
    a = pack_imagefolder(demo / "cls" / "val", tmp_path / "a", "val", shard_bytes=50_000)
    b = pack_imagefolder(demo / "cls" / "val", tmp_path / "b", "val", shard_bytes=50_000)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    c = pack_nyu_mat(demo / "nyu.mat", tmp_path / "c", "train")
    d = pack_nyu_mat(demo / "nyu.mat", tmp_path / "d", "train")
    assert c["shards"][0]["sha256"] == d["shards"][0]["sha256"]


def test_nyu_packer_uses_split_and_keeps_depth(demo, tmp_path):
    tr = pack_nyu_mat(demo / "nyu.mat", tmp_path / "train", "train")
    te = pack_nyu_mat(demo / "nyu.mat", tmp_path / "test", "test")
    assert tr["num_samples"] == 12 and te["num_samples"] == 5
    assert tr["keys"] == ["depth.npy", "jpg"]
    keys = set()
    with h5py.File(demo / "nyu.mat", "r") as f:
        assert f["images"].shape == (17, 3, 64, 48) and f["depths"].shape == (17, 64, 48)
        for sample in iter_samples(resolve_shards(tmp_path / "train")[0]):
            i = int(sample["__key__"])
            keys.add(i)
            _, dep = read_frame(f, i)
            got = np.load(io.BytesIO(sample["depth.npy"]))
            assert got.shape == (48, 64) and np.array_equal(got, dep)
    te_keys = {int(s["__key__"]) for s in iter_samples(resolve_shards(tmp_path / "test")[0])}
    assert not keys & te_keys and len(keys | te_keys) == 17


def test_nyu_packer_accepts_index_list(demo, tmp_path):
    m = pack_nyu_mat(demo / "nyu.mat", tmp_path / "x", "train", indices=[0, 3, 5])
    assert m["num_samples"] == 3


def test_nyu_packer_reads_the_official_matlab_v5_split_file(demo, tmp_path):
    from scipy.io import savemat

    # NYU's splits.mat: 1-based trainNdxs / testNdxs as column vectors, MATLAB v5 (not HDF5)
    savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[2], [4], [7]]), "testNdxs": np.array([[1], [3]])})
    assert not h5py.is_hdf5(tmp_path / "splits.mat")
    te = pack_nyu_mat(demo / "nyu.mat", tmp_path / "test", "test", split_file=tmp_path / "splits.mat")
    keys = sorted(int(s["__key__"]) for s in iter_samples(resolve_shards(tmp_path / "test")[0]))
    assert te["num_samples"] == 2 and keys == [0, 2]


def test_nyu_split_file_that_is_no_mat_fails_in_one_line(demo, tmp_path):
    (tmp_path / "splits.mat").write_text("not a mat file")
    with pytest.raises(ValueError, match=r"cannot read split file .*splits\.mat.*--indices"):
        pack_nyu_mat(demo / "nyu.mat", tmp_path / "t", "test", split_file=tmp_path / "splits.mat")


def test_webdataset_source_verifies_without_reencoding(demo, tmp_path):
    src = pack_imagefolder(demo / "cls" / "val", tmp_path / "src", "val", shard_bytes=50_000)
    m = index_webdataset(str(tmp_path / "src"), tmp_path / "idx", "val", ["jpg", "cls"])
    assert m["num_samples"] == 20
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in src["shards"]]
    assert len(resolve_shards(tmp_path / "idx")) == len(src["shards"])
    with pytest.raises(ValueError, match="lacks keys"):
        index_webdataset(str(tmp_path / "src"), tmp_path / "idx2", "val", ["jpg", "depth.npy"])


def test_missing_shard_and_empty_pattern_raise_naming_the_path(tmp_path):
    for i in range(3):
        (tmp_path / f"train-{i:05d}.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="train-00003.tar"):
        resolve_shards(str(tmp_path / "train-{00000..00003}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="empty"):
        resolve_shards(tmp_path / "empty")
    with pytest.raises(ShardError, match="no shards"):
        resolve_shards("")


def test_pack_shards_script_packs_and_reports_bad_input_in_one_line(demo, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "pack_shards.py"
    spec = importlib.util.spec_from_file_location("ps", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--source", "imagefolder", "--input", str(demo / "cls" / "val"), "--split", "val", "--out", str(tmp_path / "v")])
    assert json.loads(capsys.readouterr().out)["num_samples"] == 20
    with pytest.raises(SystemExit, match="does not exist"):
        mod.main(["--source", "nyu-mat", "--input", str(tmp_path / "missing.mat"), "--split", "train", "--out", str(tmp_path / "n")])
