"""Pack NYU-Depth-v2's labeled `.mat` (HDF5 / MATLAB v7.3) into WebDataset shards.

The file stores, transposed by MATLAB's column-major order, `images` uint8 `(N, 3, W, H)`
and `depths` float32 `(N, W, H)` (metres). Samples get keys `jpg` (quality 95) and
`depth.npy` (float32 `(H, W)`, `np.save` bytes). The split comes from `indices`
(0-based), else from `trainNdxs` / `testNdxs` (1-based, as in NYU's `splits.mat`) inside
the .mat or in a separate HDF5 split file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from .shards import ShardWriter

SPLIT_DATASETS = {"train": "trainNdxs", "test": "testNdxs", "val": "testNdxs"}


def _split_source(split_file: str | Path):
    """NYU's `splits.mat` is a MATLAB v5 file (scipy reads it); a v7.3 file is HDF5 (h5py)."""
    if h5py.is_hdf5(split_file):
        return h5py.File(split_file, "r")
    from scipy.io import loadmat

    try:
        return loadmat(split_file)
    except Exception as e:  # scipy raises several types for a file that is not a .mat
        raise ValueError(
            f"cannot read split file {split_file} as a MATLAB .mat ({e}); pass the split as a JSON "
            "list of 0-based indices with --indices"
        ) from None


def split_indices(mat: h5py.File, split: str, split_file: str | Path | None = None) -> np.ndarray:
    """0-based frame indices of `split` from `trainNdxs` / `testNdxs` (1-based, as in NYU's
    `splits.mat`), read from `split_file` (MATLAB v5 or HDF5) or else from the labeled .mat."""
    name = SPLIT_DATASETS.get(split)
    if name is None:
        raise ValueError(f"split {split!r} is not one of {sorted(SPLIT_DATASETS)}; or pass explicit indices")
    src = mat if split_file is None else _split_source(split_file)
    if name not in src:
        raise ValueError(
            f"{split_file or mat.filename} has no dataset {name!r}; pass --split-file or --indices with the split"
        )
    return np.asarray(src[name]).ravel().astype(np.int64) - 1


def read_frame(mat: h5py.File, i: int) -> tuple[np.ndarray, np.ndarray]:
    """`(H, W, 3)` uint8 image and `(H, W)` float32 depth of frame i (0-based)."""
    img = np.ascontiguousarray(mat["images"][i].transpose(2, 1, 0))
    dep = np.ascontiguousarray(mat["depths"][i].T).astype(np.float32)
    return img, dep


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def pack_nyu_mat(
    mat_path: str | Path,
    out: str | Path,
    split: str,
    shard_bytes: int = 1 << 30,
    indices: list[int] | str | Path | None = None,
    split_file: str | Path | None = None,
) -> dict:
    mat_path, out = Path(mat_path), Path(out)
    if not mat_path.is_file():
        raise FileNotFoundError(f"NYU .mat file {mat_path} does not exist")
    with h5py.File(mat_path, "r") as mat:
        for k in ("images", "depths"):
            if k not in mat:
                raise ValueError(f"{mat_path} has no dataset {k!r}; is it nyu_depth_v2_labeled.mat?")
        if isinstance(indices, (str, Path)):
            idx = np.asarray(json.loads(Path(indices).read_text()), dtype=np.int64)
        elif indices is not None:
            idx = np.asarray(indices, dtype=np.int64)
        else:
            idx = split_indices(mat, split, split_file)
        n = mat["images"].shape[0]
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"split indices for {split!r} must lie in 0..{n - 1} (file has {n} frames)")
        with ShardWriter(out, split, shard_bytes, split=split, extra={"source": "nyu-mat"}) as w:
            for i in idx:
                img, dep = read_frame(mat, int(i))
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                w.write({"__key__": f"{int(i):05d}", "jpg": buf.getvalue(), "depth.npy": npy_bytes(dep)})
    return json.loads((out / "manifest.json").read_text())

