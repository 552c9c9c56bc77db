"""A generated classification set whose class is the structure of the scene.

Ten classes: horizontal, vertical and diagonal stripes, checkerboard, concentric rings,
scattered discs, scattered rectangles, a dot lattice, blobby regions and a line grid.
Every element of the structure (a stripe, a cell, a disc, a region, the background) gets
its own random colour, and brightness, scale, phase, position and size are drawn
independently of the class, so nothing but the geometry tells the classes apart. That is
also what makes the demo a test of I-JEPA: the colour of a masked element cannot be
predicted from the context, its geometry can, so the features that predict masked regions
are the ones that carry the class (with one random colour pair per image, as an earlier
version had, predicting the colour was most of the task and trained encoders did not beat
a random one). Images are 64-320 px per
side with aspect 0.5-2, written as JPEG (quality 90) in the image-folder layout
`<out>/<split>/<NN-name>/<index>.jpg` that `imagefolder.pack_imagefolder` packs.
Image i of a split is drawn from `default_rng([seed, split, i])`: deterministic by seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [
    "00-hstripes",
    "01-vstripes",
    "02-diagonal",
    "03-checker",
    "04-rings",
    "05-discs",
    "06-rectangles",
    "07-dots",
    "08-blobs",
    "09-grid",
]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def _size(rng: np.random.Generator) -> tuple[int, int]:
    side = rng.uniform(64, 320)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    h = int(np.clip(round(side * np.sqrt(aspect)), 64, 320))
    w = int(np.clip(round(side / np.sqrt(aspect)), 64, 320))
    h = int(np.clip(h, -(-w // 2), 2 * w))  # rounding must not leave [0.5, 2]
    return h, w


def _elements(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """`(h, w)` int64 map of the class's structure: one label per element (a band, a cell, a
    disc, a region, the background), so that every element can get its own colour."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    period = rng.uniform(0.08, 0.3) * s + 4
    phase = rng.uniform(0, 1)  # in periods
    jitter = rng.uniform(-0.15, 0.15)  # small rotation, radians

    def bands(u):  # half-period bands along u: alternating elements, as stripes
        return np.floor(2 * (u / period + phase)).astype(np.int64)

    if cls == 0:
        return bands(y + jitter * x)
    if cls == 1:
        return bands(x + jitter * y)
    if cls == 2:
        sign = 1 if rng.random() < 0.5 else -1
        return bands((x + sign * y) / np.sqrt(2))
    if cls == 3:
        c = period / 2
        return (np.floor((x + phase * c) / c) * 4096 + np.floor((y + jitter * x) / c)).astype(np.int64)
    if cls == 4:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        return bands(np.sqrt((y - cy) ** 2 + (x - cx) ** 2))
    if cls in (5, 6):  # discs or rectangles on a background (label 0)
        m = np.zeros((h, w), np.int64)
        for k in range(int(rng.integers(3, 9))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            if cls == 5:
                r = rng.uniform(0.06, 0.2) * s
                m[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = k + 1
            else:
                hh, hw = rng.uniform(0.05, 0.2) * s, rng.uniform(0.05, 0.2) * s
                m[(np.abs(y - cy) < hh) & (np.abs(x - cx) < hw)] = k + 1
        return m
    if cls == 7:  # a lattice of dots
        c = period * 0.8
        r = c * rng.uniform(0.15, 0.3)
        u, v = y + phase * c, x + phase * c
        dy, dx = u % c - c / 2, v % c - c / 2
        return np.where(dy * dy + dx * dx < r * r, 1 + np.floor(u / c) * 4096 + np.floor(v / c), 0).astype(np.int64)
    if cls == 8:  # blobby regions: four levels of smooth noise
        g = rng.standard_normal((int(rng.integers(4, 9)),) * 2).astype(np.float32)
        up = np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC))
        return np.digitize(up, np.quantile(up, [0.25, 0.5, 0.75])).astype(np.int64)
    if cls == 9:  # a grid of lines (label 0) around cells
        c = period
        t = max(1.5, c * rng.uniform(0.08, 0.18))
        u, v = x + phase * c, y + phase * c
        line = (u % c < t) | (v % c < t)
        return np.where(line, 0, 1 + np.floor(u / c) * 4096 + np.floor(v / c)).astype(np.int64)
    raise ValueError(f"unknown class {cls}")


def render(cls: int, rng: np.random.Generator) -> np.ndarray:
    """One `(h, w, 3)` uint8 image of class `cls`: every element of its structure in its own
    random colour, a random brightness ramp and pixel noise."""
    h, w = _size(rng)
    labels = _elements(cls, h, w, rng)
    _, index = np.unique(labels, return_inverse=True)
    palette = rng.uniform(0, 255, (int(index.max()) + 1, 3)).astype(np.float32)
    img = palette[index.reshape(h, w)]
    gy, gx = rng.uniform(-0.3, 0.3, 2)
    ramp = 1 + gy * (np.arange(h, dtype=np.float32)[:, None, None] / h - 0.5) + gx * (np.arange(w, dtype=np.float32)[None, :, None] / w - 0.5)
    img = img * ramp + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_classification_demo(out: str | Path, seed: int = 0, n_train: int = 2000, n_val: int = 500) -> dict:
    """Write `<out>/train` and `<out>/val` image folders; returns counts per split."""
    out = Path(out)
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([seed, SPLIT_CODES[split], i])
            cls = i % len(CLASSES)
            path = out / split / CLASSES[cls] / f"{i:06d}.jpg"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(jpeg_bytes(render(cls, rng)))
            tmp.replace(path)
        counts[split] = n
    return counts
