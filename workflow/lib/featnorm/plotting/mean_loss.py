"""The dataset-averaged loss map (the reference's plot-mean-loss).

Many images, all at one size (centre crop to `--image-size`, so every image has the same
`gh x gw` patch grid), each under a few random context/target masks, go through the I-JEPA
forward ("training" by default: batch repeat and 25 % capacities, as the reference); every
predicted token's loss is added at its grid position, over all images, masks and copies:

    mean[r, c] = sum of the losses predicted at (r, c) / number of predictions at (r, c)

The figure shows, per run, that map as a heatmap (the reference's loss-heatmap: `hot`, values
clipped to their 1st-99th percentiles) and the per-channel loss image (its loss-image): each
position's mean per-channel losses (D channels) laid out as a patch of `h x w x 3` values,
h = D // (3 x patch_size) and w = D / (3 h) (the reference's reshape: ViT-S, D = 384,
p = 16: 8 x 16 x 3), resized to `p x p` by nearest-exact, shown as RGB scaled between the
1st and 99th percentiles. A patch's average over its pixels and colours is the heatmap's value.

The reference packs several images per row; here each row holds one image (rows are
independent, so only batch-statistics target norms could tell the difference). Images are
processed `max(1, batch_size // masks)` at a time, all their masks in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from featnorm.batch import PackedBatch
from featnorm.config import RunConfig
from featnorm.plotting.image_sources import SourceImage, patchify
from featnorm.plotting.loss_maps import draw_mask_rows, mask_layout
from featnorm.plotting.model_io import autocast_for, load_ijepa
from featnorm.plotting.predicted_tokens import predicted_tokens
from featnorm.plotting.run_results import FigureInputError, RunResults
from featnorm.plotting.style import plt, quantile_scale, save_figure, setup_style
from featnorm.tokens import COL, ROW, is_patch


@dataclass
class MeanLoss:
    """Sums over every prediction at each of the `gh x gw` positions."""

    gh: int
    gw: int
    patch_size: int
    loss_sum: np.ndarray  # (gh * gw,) float64: token losses (mean over channels)
    channel_sum: np.ndarray  # (gh * gw, D) float64: per-channel losses
    count: np.ndarray  # (gh * gw,) predictions
    num_images: int
    num_masks: int  # per image

    def mean_map(self) -> np.ndarray:
        """`(gh, gw)` mean token loss, NaN where nothing was predicted."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.loss_sum / self.count, np.nan).reshape(self.gh, self.gw)

    def channel_mean(self) -> np.ndarray:
        """`(gh, gw, D)` mean per-channel losses (0 where nothing was predicted)."""
        mean = self.channel_sum / np.maximum(self.count, 1)[:, None]
        return mean.reshape(self.gh, self.gw, -1)


def channel_patch_shape(dim: int, patch_size: int, channels: int = 3) -> tuple[int, int]:
    """`(h, w)` of the `h x w x channels` patch that holds a token's `dim` channel losses."""
    h = dim // (patch_size * channels)
    if h < 1 or dim % (h * channels):
        raise FigureInputError(f"the per-channel loss image needs the encoder width ({dim}) to be a multiple of "
                               f"3 x (width // (3 x patch_size)) = 3 x {max(h, 1)}; use a width that is")
    return h, dim // (h * channels)


def channel_loss_image(channel_mean: np.ndarray, patch_size: int) -> np.ndarray:
    """`(gh, gw, D)` per-channel losses -> `(gh * p, gw * p, 3)` image: each position's D values
    as an `h x w x 3` patch (channel-last, row-major), resized to `p x p` (nearest-exact)."""
    gh, gw, d = channel_mean.shape
    h, w = channel_patch_shape(d, patch_size)
    x = torch.from_numpy(np.ascontiguousarray(channel_mean, dtype=np.float64)).reshape(gh * gw, h, w, 3)
    x = F.interpolate(x.permute(0, 3, 1, 2), size=(patch_size, patch_size), mode="nearest-exact")
    x = x.permute(0, 2, 3, 1).reshape(gh, gw, patch_size, patch_size, 3)
    return x.permute(0, 2, 1, 3, 4).reshape(gh * patch_size, gw * patch_size, 3).numpy()


@torch.no_grad()
def dataset_mean_loss(
    model: torch.nn.Module,
    cfg: RunConfig,
    images: Iterable[SourceImage],
    masks: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    forward: str = "training",
) -> MeanLoss:
    """Sum every predicted token's loss (and per-channel losses) at its position over all
    `images` (same size), `masks` random masks each (seeded: equal masks for every run)."""
    device = torch.device(device)
    model.eval()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    per_forward = max(1, batch_size // masks)
    acc: MeanLoss | None = None
    layout = None
    group: list[PackedBatch] = []

    def run(group: list[PackedBatch]) -> None:
        batch = PackedBatch(torch.cat([b.pixels for b in group]), torch.cat([b.token_ids for b in group]),
                            group[0].context_length)
        with autocast_for(device):
            pred = predicted_tokens(model, batch, forward, gen, channel_losses=True)
        keep = pred.token_mask & is_patch(pred.target_ids)  # a position: patches only, never registers
        ids = pred.target_ids[keep].cpu()
        pos = (ids[:, ROW] * acc.gw + ids[:, COL]).numpy()
        np.add.at(acc.loss_sum, pos, pred.token_losses[keep].double().cpu().numpy())
        np.add.at(acc.channel_sum, pos, pred.channel_losses[keep].double().cpu().numpy())
        np.add.at(acc.count, pos, 1)

    for image in images:
        h, w = image.pixels.shape[:2]
        if layout is None:
            gh, gw = h // cfg.model.patch_size, w // cfg.model.patch_size
            layout = mask_layout(cfg, gh, gw)
            acc = MeanLoss(gh, gw, cfg.model.patch_size, np.zeros(gh * gw), np.zeros((gh * gw, cfg.model.encoder.dim)), np.zeros(gh * gw),
                           0, masks)
        elif (h // cfg.model.patch_size, w // cfg.model.patch_size) != (acc.gh, acc.gw):
            raise FigureInputError(f"image {image.name} is {h}x{w} pixels, the first was {acc.gh}x{acc.gw} patches; "
                                   "the mean loss map needs images of one size")
        pixels = patchify(image.pixels, cfg.model.patch_size)[0].to(device)
        group.append(draw_mask_rows(pixels, layout, masks, rng))
        acc.num_images += 1
        if len(group) == per_forward:
            run(group)
            group = []
    if acc is None:
        raise FigureInputError("no images for the mean loss map")
    if group:
        run(group)
    return acc


def mean_loss_for_runs(runs: list[RunResults], make_images: Callable[[], Iterable[SourceImage]], masks: int = 1,
                       batch_size: int = 256, seed: int = 0, device: torch.device | str = "cpu",
                       forward: str = "training", progress: bool = True) -> dict[str, MeanLoss]:
    """run -> its `MeanLoss` over the images `make_images()` yields (called once per run, so
    thousands of images are read as a stream, not held)."""
    out = {}
    for run in runs:
        model, cfg = load_ijepa(run.model_path, device)
        images = tqdm(make_images(), desc=f"mean loss {run.name}", unit="img", disable=not progress)
        out[run.name] = dataset_mean_loss(model, cfg, images, masks, batch_size, seed, device, forward)
        del model
    return out


def make_mean_loss_figure(results: dict[str, MeanLoss], paths: list[str | Path],
                          forward: str = "training") -> plt.Figure:
    """One row per run: the mean loss heatmap (loss units, colour range its 1st-99th
    percentiles) and the per-channel loss image."""
    setup_style()
    runs = list(results)
    fig, axes = plt.subplots(len(runs), 2, figsize=(7.0, 3.4 * len(runs)), squeeze=False, layout="constrained")
    for i, run in enumerate(runs):
        res = results[run]
        m = res.mean_map()
        finite = m[np.isfinite(m)]
        lo, hi = (np.quantile(finite, [0.01, 0.99]) if finite.size else (0.0, 1.0))
        im = axes[i, 0].imshow(m, cmap="hot", vmin=lo, vmax=hi if hi > lo else lo + 1e-12, interpolation="nearest")
        cb = fig.colorbar(im, ax=axes[i, 0], shrink=0.8)
        cb.set_label("mean token loss", fontsize=7)
        cb.ax.tick_params(labelsize=6)
        try:
            axes[i, 1].imshow(quantile_scale(channel_loss_image(res.channel_mean(), res.patch_size)),
                              interpolation="nearest")
        except FigureInputError as e:  # a width that has no RGB patch layout: say so in the panel
            axes[i, 1].text(0.5, 0.5, str(e), ha="center", va="center", wrap=True, fontsize=7,
                            transform=axes[i, 1].transAxes)
        axes[i, 0].set_ylabel(run, fontsize=9)
        axes[i, 0].set_title("mean loss per position" if i == 0 else "", fontsize=9)
        axes[i, 1].set_title("per-channel loss image" if i == 0 else "", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    first = results[runs[0]]
    how = "training forward" if forward == "training" else "every target predicted"
    fig.suptitle(f"Loss averaged over {first.num_images:,} images x {first.num_masks} mask(s) ({how})", fontsize=10)
    save_figure(fig, paths)
    return fig


def save_mean_loss(path: str | Path, results: dict[str, MeanLoss]) -> Path:
    """`<run>/mean` `(gh, gw)`, `<run>/count` `(gh, gw)`, `<run>/channel_mean` `(gh, gw, D)` and,
    when the width has an RGB patch layout, `<run>/channel_image` `(H, W, 3)` (unscaled)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for run, res in results.items():
        arrays[f"{run}/mean"] = res.mean_map()
        arrays[f"{run}/count"] = res.count.reshape(res.gh, res.gw)
        arrays[f"{run}/channel_mean"] = res.channel_mean()
        try:
            arrays[f"{run}/channel_image"] = channel_loss_image(res.channel_mean(), res.patch_size)
        except FigureInputError:
            pass  # the width has no RGB patch layout; channel_mean holds the numbers
    np.savez_compressed(path, **arrays)
    return path

