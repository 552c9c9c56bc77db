"""Generated NYU-Depth-v2-like data: ray-cast indoor scenes with their exact depth maps.

Each frame is a box-shaped room (floor with tiles, walls, ceiling) holding a few boxes
and spheres, seen by a pinhole camera (horizontal field of view ~62 degrees as the
Kinect) at a random height and yaw, lit by a point light with Lambert shading. The depth
map is the camera-space z distance in metres of the first hit, as in NYU.

`write_nyu_mat` stores frames in the layout of NYU's `nyu_depth_v2_labeled.mat` (MATLAB
v7.3 = HDF5, column-major, so h5py sees the axes reversed): `images` uint8 of shape
`(N, 3, W, H)` and `depths` float32 `(N, W, H)`, plus `trainNdxs` / `testNdxs` (1-based,
shape `(1, n)`), which the real release ships separately in `splits.mat`.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def render_scene(rng: np.random.Generator, height: int = 120, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """One frame: `(H, W, 3)` uint8 image and `(H, W)` float32 depth in metres."""
    f = 0.5 * width / np.tan(np.radians(31))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    d_cam = np.stack([(xs - width / 2 + 0.5) / f, -(ys - height / 2 + 0.5) / f, np.ones_like(xs)], -1)
    yaw = rng.uniform(-0.35, 0.35)
    pitch = rng.uniform(-0.2, 0.1)
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    d = d_cam @ (r_yaw @ r_pitch).T  # world directions; t along d = camera z depth
    cam_h = rng.uniform(1.0, 1.6)
    o = np.array([0.0, cam_h, 0.0])
    half_w, depth_room, ceil = rng.uniform(1.5, 3.5), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.2)

    big = 1e9
    t_best = np.full((height, width), big)
    normal = np.zeros((height, width, 3))
    albedo = np.zeros((height, width, 3))

    def update(t, n, col):
        nonlocal t_best
        hit = (t > 1e-6) & (t < t_best)
        t_best = np.where(hit, t, t_best)
        normal[hit] = n[hit] if np.ndim(n) == 3 else n
        albedo[hit] = col[hit] if np.ndim(col) == 3 else col

    with np.errstate(divide="ignore", invalid="ignore"):
        # room planes: (axis, value, inward normal)
        planes = [(1, 0.0, (0, 1, 0)), (1, ceil, (0, -1, 0)), (0, -half_w, (1, 0, 0)), (0, half_w, (-1, 0, 0)), (2, depth_room, (0, 0, -1)), (2, -1.0, (0, 0, 1))]
        wall_col = rng.uniform(0.4, 0.9, 3)
        for axis, val, n in planes:
            t = (val - o[axis]) / d[..., axis]
            t = np.where(np.isfinite(t), t, -1)
            if axis == 1 and val == 0.0:  # tiled floor
                p = o + t[..., None] * d
                tile = rng.uniform(0.3, 0.8)
                chk = ((np.floor(p[..., 0] / tile) + np.floor(p[..., 2] / tile)) % 2)[..., None]
                c1, c2 = rng.uniform(0.2, 0.9, 3), rng.uniform(0.2, 0.9, 3)
                col = c1 + chk * (c2 - c1)
            else:
                col = np.broadcast_to(wall_col * rng.uniform(0.85, 1.15), (height, width, 3))
            update(t, np.array(n, float), col)
        # boxes on the floor (slab method)
        for _ in range(rng.integers(1, 5)):
            size = rng.uniform([0.3, 0.3, 0.3], [1.2, 1.5, 1.2])
            cx, cz = rng.uniform(-half_w + 0.5, half_w - 0.5), rng.uniform(1.5, depth_room - 0.5)
            lo = np.array([cx - size[0] / 2, 0.0, cz - size[2] / 2])
            hi = lo + size
            t1, t2 = (lo - o) / d, (hi - o) / d
            tmin3, tmax3 = np.minimum(t1, t2), np.maximum(t1, t2)
            tmin, tmax = tmin3.max(-1), tmax3.min(-1)
            ok = (tmax >= np.maximum(tmin, 0)) & (tmin > 0)
            t = np.where(ok, tmin, -1)
            ax = tmin3.argmax(-1)
            n = np.zeros((height, width, 3))
            np.put_along_axis(n, ax[..., None], -np.sign(np.take_along_axis(d, ax[..., None], -1)), -1)
            update(t, n, np.broadcast_to(rng.uniform(0.1, 1.0, 3), (height, width, 3)))
        # spheres
        for _ in range(rng.integers(0, 4)):
            r = rng.uniform(0.2, 0.6)
            c = np.array([rng.uniform(-half_w + r, half_w - r), r + rng.uniform(0, 1.0) * (rng.random() < 0.3), rng.uniform(1.5, depth_room - r)])
            oc = o - c
            a = (d * d).sum(-1)
            b = 2 * (d @ oc)
            disc = b * b - 4 * a * (oc @ oc - r * r)
            t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), -1)
            p = o + t[..., None] * d
            n = (p - c) / r
            update(t, n, np.broadcast_to(rng.uniform(0.1, 1.0, 3), (height, width, 3)))

    p = o + t_best[..., None] * d
    light = np.array([rng.uniform(-half_w / 2, half_w / 2), ceil - 0.2, rng.uniform(1.0, depth_room / 2)])
    lv = light - p
    dist = np.linalg.norm(lv, axis=-1, keepdims=True)
    lam = np.clip((normal * lv / dist).sum(-1, keepdims=True), 0, 1)
    shade = 0.25 + 0.9 * lam / (1 + 0.05 * dist**2)
    img = np.clip(albedo * shade, 0, 1) ** (1 / 2.2)
    img = img + rng.normal(0, 0.01, img.shape)
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image, t_best.astype(np.float32)


def write_nyu_mat(path: str | Path, seed: int = 0, n_train: int = 400, n_test: int = 100, height: int = 120, width: int = 160) -> dict:
    """Write an NYU-layout .mat (HDF5) of `n_train + n_test` frames; returns counts."""
    n = n_train + n_test
    images = np.zeros((n, 3, width, height), np.uint8)
    depths = np.zeros((n, width, height), np.float32)
    for i in range(n):
        img, dep = render_scene(np.random.default_rng([seed, i]), height, width)
        images[i] = img.transpose(2, 1, 0)
        depths[i] = dep.T
    # interleave the split like the official one (not a contiguous block)
    order = np.random.default_rng([seed, 1_000_003]).permutation(n)
    train = np.sort(order[:n_train]) + 1
    test = np.sort(order[n_train:]) + 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
        f.create_dataset("images", data=images, track_times=False)
        f.create_dataset("depths", data=depths, track_times=False)
        f.create_dataset("trainNdxs", data=train[None].astype(np.float64), track_times=False)
        f.create_dataset("testNdxs", data=test[None].astype(np.float64), track_times=False)
    tmp.replace(path)
    return {"train": n_train, "test": n_test}
