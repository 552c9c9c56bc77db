"""PCA feature maps: each image's patch features at one depth, first three principal
components shown as colours (one row per image, one column per run, the original first).

Features are the teacher encoder's `hiddens[depth]` (default -4: the 4th block from the end,
the depth the depth probe uses, before the output norm), computed on the whole image. The PCA
is fitted per image and per run. Two styles:

- "rgb" (default): the three projections as R, G, B, each min-max scaled between its own 1st
  and 99th percentiles; one colour per patch.
- "hsv": the reference's visualize-embeddings (after Perception Encoder, arXiv 2504.13181,
  B.3.2): features averaged with a 3x3 Gaussian blur of themselves (sigma 0.5, reflected
  edges), whitened PCA (each projection divided by its standard deviation), all three scaled
  together between their 1st and 99th percentiles, read as hue, saturation x 1.2 and value
  x 1.2, converted to RGB and clipped; shown bilinearly upsampled to the image.

Component signs are arbitrary; we orient each so its third moment is positive (the long tail,
usually the salient object, comes out bright) so figures are reproducible (the reference takes
whatever sign its PCA library returns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featnorm.plotting.image_grid import image_grid, save_image_grid
from featnorm.plotting.image_sources import SourceImage
from featnorm.plotting.model_io import load_teacher, teacher_features
from featnorm.plotting.run_results import RunResults
from featnorm.plotting.style import plt, quantile_scale

STYLES = ("rgb", "hsv")


def pca_rgb(features: torch.Tensor, clip: float = 1.0) -> np.ndarray:
    """`(N, D)` features -> `(N, 3)` in [0, 1]: projections on the first three principal
    components (float64 SVD of the centred features), sign-oriented, each min-max scaled
    between its `clip` and `100 - clip` percentiles. Missing components (N or D < 3) are 0."""
    x = features.detach().to(torch.float64).cpu()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(3, vh.shape[0])
    proj = (x @ vh[:k].T).numpy()  # (N, k)
    out = np.zeros((x.shape[0], 3))
    for c in range(k):
        p = proj[:, c]
        if s[c] <= 1e-12 * max(float(s[0]), 1e-300):
            continue  # no variance along this component: leave it black
        if np.mean(p**3) < 0:
            p = -p
        lo, hi = np.percentile(p, [clip, 100 - clip])
        out[:, c] = np.clip((p - lo) / (hi - lo), 0, 1) if hi > lo else 0.5
    return out


def pca_image(grid: torch.Tensor, clip: float = 1.0) -> np.ndarray:
    """`(gh, gw, D)` feature grid -> `(gh, gw, 3)` RGB in [0, 1]."""
    gh, gw, d = grid.shape
    return pca_rgb(grid.reshape(gh * gw, d), clip).reshape(gh, gw, 3)


def blur_half(grid: torch.Tensor, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """`(gh, gw, D)` -> `(x + gaussian_blur(x)) / 2`, the blur per channel over the grid with a
    `kernel_size` Gaussian of `sigma` and reflected edges (torchvision's `GaussianBlur`)."""
    x = grid.to(torch.float64).permute(2, 0, 1)[None]  # (1, D, gh, gw)
    half = kernel_size // 2
    if min(x.shape[-2:]) <= half:
        return grid.to(torch.float64)  # too small to reflect: nothing to blur
    t = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    d = x.shape[1]
    y = F.pad(x, (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(d, 1, 1, -1), groups=d)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(d, 1, -1, 1), groups=d)
    return ((x + y) / 2)[0].permute(1, 2, 0)


def whitened_pca(features: torch.Tensor, k: int = 3) -> np.ndarray:
    """`(N, D)` -> `(N, k)` projections on the first k principal components, each divided by
    its standard deviation (N - 1 denominator; sklearn's `whiten=True`), sign-oriented as
    `pca_rgb`; components without variance are 0."""
    x = features.detach().to(torch.float64).cpu()
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    out = np.zeros((x.shape[0], k))
    for c in range(min(k, vh.shape[0])):
        if s[c] <= 1e-12 * max(float(s[0]), 1e-300):
            continue
        p = (x @ vh[c]).numpy() / (float(s[c]) / max(x.shape[0] - 1, 1) ** 0.5)
        out[:, c] = -p if np.mean(p**3) < 0 else p
    return out


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """`(..., 3)` hue, saturation, value -> RGB by the hexcone formulas (matplotlib's
    `hsv_to_rgb` for inputs in [0, 1]; here saturation and value may exceed 1, as the
    reference's boosted colours do, and the caller clips)."""
    h, s, v = (np.asarray(hsv, dtype=np.float64)[..., i] for i in range(3))
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.astype(np.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    grey = s == 0
    return np.stack([np.where(grey, v, r), np.where(grey, v, g), np.where(grey, v, b)], -1)


def hsv_image(grid: torch.Tensor, boost: tuple[float, float, float] = (1.0, 1.2, 1.2)) -> np.ndarray:
    """`(gh, gw, D)` features -> `(gh, gw, 3)` RGB in [0, 1], the reference's visualize-embeddings
    colouring (see the module docstring)."""
    gh, gw, d = grid.shape
    hsv = quantile_scale(whitened_pca(blur_half(grid).reshape(gh * gw, d))) * np.asarray(boost)
    return np.clip(hsv_to_rgb(hsv), 0, 1).reshape(gh, gw, 3)


def upsample_bilinear(rgb: np.ndarray, factor: int) -> np.ndarray:
    """`(gh, gw, 3)` -> `(gh * factor, gw * factor, 3)`, bilinear with antialiasing (as the
    reference enlarges its feature images to the image's size)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    y = F.interpolate(x, scale_factor=factor, mode="bilinear", antialias=True)
    return y[0].permute(1, 2, 0).clamp(0, 1).numpy()


def make_pca_figure(images: list[SourceImage], rgb: dict[str, list[np.ndarray]], paths: list[str | Path],
                    depth_label: str, style: str = "rgb") -> plt.Figure:
    """rgb: run -> one `(h, w, 3)` array per image (the patch grid, or upsampled for "hsv")."""
    runs = list(rgb)
    fig, axes = image_grid(images, 1 + len(runs), extra_height=0.5)
    for k, run in enumerate(runs):
        for i in range(len(images)):
            axes[i, 1 + k].imshow(rgb[run][i], interpolation="nearest")
        axes[0, 1 + k].set_title(run, fontsize=9)
    if style == "rgb":
        title = f"First three principal components of teacher features ({depth_label}) as RGB"
    else:
        title = f"Teacher features ({depth_label}): blurred, whitened PCA as hue / saturation / value"
    return save_image_grid(fig, axes, title, paths)


def depth_label(depth: int, num_blocks: int) -> str:
    """Human name of `hiddens[depth]` for an encoder of `num_blocks` blocks."""
    d = depth % (num_blocks + 1)
    return "patch embedding" if d == 0 else f"output of block {d} of {num_blocks}"


def pca_for_runs(runs: list[RunResults], images: list[SourceImage], depth: int = -4,
                 device: torch.device | str = "cpu", style: str = "rgb") -> tuple[dict[str, list[np.ndarray]], str]:
    """run -> one PCA image per image (`(gh, gw, 3)` for "rgb"; for "hsv" upsampled to the
    image's pixels), and a label of the depth used."""
    if style not in STYLES:
        raise ValueError(f"PCA style {style!r} is not one of {STYLES}")
    out: dict[str, list[np.ndarray]] = {}
    label = ""
    for run in runs:
        encoder, cfg = load_teacher(run.model_path, device)
        label = depth_label(depth, cfg.model.encoder.depth)
        out[run.name] = []
        for img in images:
            grid = teacher_features(encoder, img.pixels, cfg, torch.device(device), depth)
            if style == "rgb":
                out[run.name].append(pca_image(grid))
            else:
                out[run.name].append(upsample_bilinear(hsv_image(grid), cfg.model.patch_size))
        del encoder
    return out, label
