"""A generated classification set whose class is the structure of the scene.

Ten classes: horizontal, vertical and diagonal stripes, checkerboard, concentric rings,
scattered discs, scattered rectangles, a dot lattice, blobby texture and a line grid.
Colours, brightness, scale, phase, position and size are drawn independently of the class
(foreground and background colours from the same distribution for every class), so a
probe must read shapes and arrangement, not a global colour. Images are 64-320 px per
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


def _mask(cls: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """`(h, w)` float mask in [0, 1] of the class's structure."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = min(h, w)
    period = rng.uniform(0.08, 0.3) * s + 4
    phase = rng.uniform(0, 2 * np.pi)
    jitter = rng.uniform(-0.15, 0.15)  # small rotation, radians

    def stripes(u):
        return (np.sin(2 * np.pi * u / period + phase) > 0).astype(np.float32)

    if cls == 0:
        return stripes(y + jitter * x)
    if cls == 1:
        return stripes(x + jitter * y)
    if cls == 2:
        sign = 1 if rng.random() < 0.5 else -1
        return stripes((x + sign * y) / np.sqrt(2))
    if cls == 3:
        c = period / 2
        return ((np.floor((x + phase * c) / c) + np.floor((y + jitter * x) / c)) % 2).astype(np.float32)
    if cls == 4:
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
        return stripes(r)
    if cls == 5:
        m = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(3, 9)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.06, 0.2) * s
            m[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = 1
        return m
    if cls == 6:
        m = np.zeros((h, w), np.float32)
        for _ in range(rng.integers(3, 9)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            hh, hw = rng.uniform(0.05, 0.2) * s, rng.uniform(0.05, 0.2) * s
            m[(np.abs(y - cy) < hh) & (np.abs(x - cx) < hw)] = 1
        return m
    if cls == 7:
        c = period * 0.8
        r = c * rng.uniform(0.15, 0.3)
        dy = (y + phase * c) % c - c / 2
        dx = (x + phase * c) % c - c / 2
        return (dy * dy + dx * dx < r * r).astype(np.float32)
    if cls == 8:
        g = rng.standard_normal((int(rng.integers(4, 9)),) * 2).astype(np.float32)
        up = np.asarray(Image.fromarray(g).resize((w, h), Image.BICUBIC))
        return (up > np.median(up)).astype(np.float32)
    if cls == 9:
        c = period
        t = max(1.5, c * rng.uniform(0.08, 0.18))
        return (((x + phase * c) % c < t) | ((y + phase * c) % c < t)).astype(np.float32)
    raise ValueError(f"unknown class {cls}")


def render(cls: int, rng: np.random.Generator) -> np.ndarray:
    """One `(h, w, 3)` uint8 image of class `cls`."""
    h, w = _size(rng)
    m = _mask(cls, h, w, rng)[..., None]
    fg = rng.uniform(0, 255, 3).astype(np.float32)
    bg = rng.uniform(0, 255, 3).astype(np.float32)
    if np.abs(fg - bg).sum() < 120:  # keep the structure visible
        bg = 255 - fg
    img = bg + m * (fg - bg)
    # a random brightness ramp and noise, independent of the class
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
