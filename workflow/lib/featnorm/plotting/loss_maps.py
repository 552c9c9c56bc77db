"""Loss maps (the paper's main figure): per-token prediction loss averaged over random masks.

For one evaluation image (a `gh x gw` patch grid, 16 x 16 for 256 x 256 pixels) we draw M
random context/target splits exactly as the training pipeline does (whole windows; the number
of context windows uniform in `data.windows.context_window_range`), put one split per batch
row (context segment, then target segment, the run's segment lengths), and run the I-JEPA
module on them (`predicted_tokens`). By default that is the training forward, as the
reference's plot-sample-losses does: every row is repeated `batch_repeat` (4) times and each
copy predicts a random 25 % of the target windows from a random 25 % of the context windows;
forward mode "predict-all" predicts every target token from every context token instead. A
position's map value is the mean of its losses over every prediction of it (mask m, copy j):

    map[r, c] = sum_{m,j} loss_{m,j}(r, c) [ (r, c) predicted in (m, j) ] / sum_{m,j} [ ... ]

Rows are independent (attention never crosses samples), so batching many masks per forward
gives the same numbers as one mask (and one copy) at a time (checked in
tests/test_plotting_loss_maps.py), except for target norms that use batch statistics
(`batchnorm`), which depend on the batch. Per image we also keep the reference's per-sample
statistics: the mean over rows (masks x copies) of each row's mean token loss and of its
token-loss variance.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from featnorm.batch import PackedBatch
from featnorm.config import RunConfig
from featnorm.data.packing import segment_lengths
from featnorm.data.windows import context_window_range, window_token_index
from featnorm.plotting.image_grid import column_colorbar, image_grid, save_image_grid
from featnorm.plotting.image_sources import SourceImage, patchify
from featnorm.plotting.model_io import autocast_for, load_ijepa
from featnorm.plotting.predicted_tokens import predicted_tokens, row_loss_stats
from featnorm.plotting.run_results import FigureInputError, RunResults
from featnorm.plotting.style import plt
from featnorm.tokens import COL, REGISTER, ROW, SAMPLE, is_patch, padding_ids


@dataclass(frozen=True)
class MaskLayout:
    """How one image's random splits are laid out in a batch row."""

    gh: int
    gw: int
    window_size: int
    lo: int  # allowed number of context windows: lo..hi (drawn uniformly)
    hi: int
    context_length: int  # tokens of the context segment (registers included)
    target_length: int
    num_registers: int
    fits_training_rows: bool = True  # False: the image is larger than the run's training rows

    @property
    def num_windows(self) -> int:
        return (self.gh // self.window_size) * (self.gw // self.window_size)


def mask_layout(cfg: RunConfig, gh: int, gw: int) -> MaskLayout:
    """The split rule and segment lengths of the run's data config for a `gh x gw` grid.

    An image with more windows than the run's training rows can hold (e.g. 256 x 256 images
    for a model trained on rows sized for 128 px images) keeps the split ratios
    (`data.context_ratio_min/max`), and the rows are sized to fit it instead of to
    `data.max_context_tokens / max_target_tokens`; `fits_training_rows` is then False.
    """
    ws, d = cfg.model.window_size, cfg.data
    w2 = ws * ws
    T = (gh // ws) * (gw // ws)
    reg = cfg.model.encoder.num_registers
    try:
        lo, hi = context_window_range(T, d.context_ratio_min, d.context_ratio_max,
                                      d.max_context_tokens // w2, d.max_target_tokens // w2)
        lc, lt = segment_lengths(d.max_context_tokens, d.max_target_tokens, ws, reg)
        fits = True
    except ValueError:
        lo, hi = context_window_range(T, d.context_ratio_min, d.context_ratio_max, T)
        lc, lt = segment_lengths(hi * w2, (T - lo) * w2, ws, reg)
        fits = False
    return MaskLayout(gh, gw, ws, lo, hi, lc, lt, reg, fits)


def draw_mask_rows(pixels: torch.Tensor, layout: MaskLayout, num: int, rng: np.random.Generator) -> PackedBatch:
    """`num` rows, each the image of `pixels (gh * gw, patch_dim)` (row-major patches) under its
    own random split: [registers][context windows][pad] | [target windows][pad]. The batch is
    on the device of `pixels`."""
    ws, w2 = layout.window_size, layout.window_size**2
    T = layout.num_windows
    tok = torch.from_numpy(window_token_index(layout.gh, layout.gw, ws).astype(np.int64))  # (T, w2)
    perm = torch.from_numpy(np.argsort(rng.random((num, T)), axis=1))  # (num, T) window order
    n_ctx = torch.from_numpy(rng.integers(layout.lo, layout.hi + 1, size=num))  # (num,)
    reg_slots = -(-layout.num_registers // w2) * w2
    cap_c = (layout.context_length - reg_slots) // w2
    cap_t = layout.target_length // w2

    def segment(start: torch.Tensor, count: torch.Tensor, slots: int) -> torch.Tensor:
        """`(num, slots * w2)` flat patch index of each slot, -1 where the slot is padding."""
        j = torch.arange(slots)[None]
        take = j < count[:, None]
        win = perm.gather(1, (start[:, None] + j).clamp(max=T - 1))
        idx = tok[win]  # (num, slots, w2)
        return torch.where(take[..., None], idx, -1).reshape(num, slots * w2)

    ctx = segment(torch.zeros_like(n_ctx), n_ctx, cap_c)
    tgt = segment(n_ctx, T - n_ctx, cap_t)
    flat = torch.cat([torch.full((num, reg_slots), -1), ctx, tgt], dim=1)  # (num, L)
    real = flat >= 0
    safe = flat.clamp(min=0)
    ids = padding_ids(num, flat.shape[1])
    rows = torch.div(safe, layout.gw, rounding_mode="floor")
    ids[..., SAMPLE] = torch.where(real, 0, ids[..., SAMPLE])
    ids[..., ROW] = torch.where(real, rows, ids[..., ROW])
    ids[..., COL] = torch.where(real, safe % layout.gw, ids[..., COL])
    if layout.num_registers:
        ids[:, : layout.num_registers, SAMPLE] = 0
        ids[:, : layout.num_registers, REGISTER] = torch.arange(layout.num_registers)
    # gather where the image lives (the device): only the small id tensors cross over
    safe, real = safe.to(pixels.device), real.to(pixels.device)
    pix = pixels[safe] * real[..., None].to(pixels.dtype)
    return PackedBatch(pix, ids.to(pixels.device), layout.context_length)


def accumulate_token_losses(
    token_losses: torch.Tensor, target_ids: torch.Tensor, gw: int, sums: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Add each real target token's loss `(B, Lt)` to `sums[row * gw + col]` and 1 to `counts`
    (both `(gh * gw,)` float64, updated in place). Returns the real tokens' losses `(N,)`."""
    real = is_patch(target_ids)
    pos = (target_ids[..., ROW] * gw + target_ids[..., COL])[real]
    losses = token_losses[real].to(torch.float64)
    sums.index_add_(0, pos.to(sums.device), losses.to(sums.device))
    counts.index_add_(0, pos.to(counts.device), torch.ones_like(losses, device=counts.device))
    return losses


@dataclass
class LossMap:
    mean: np.ndarray  # (gh, gw) mean loss per position over its predictions (NaN if never predicted)
    count: np.ndarray  # (gh, gw) number of predictions of the position (masks x copies)
    token_losses: np.ndarray | None  # (N,) every predicted real target token's loss, when kept
    sample_mean: float = float("nan")  # mean over rows (masks x copies) of the row's mean token loss
    sample_var: float = float("nan")  # mean over rows of the row's token-loss variance (unbiased)


@torch.no_grad()
def compute_loss_map(
    model: torch.nn.Module,
    cfg: RunConfig,
    image: np.ndarray,
    num_masks: int,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    keep_token_losses: bool = False,
    forward: str = "training",
) -> LossMap:
    """The loss map of one `(H, W, 3)` uint8 image under `num_masks` random splits and the
    forward mode `forward` ("training" or "predict-all", see the module docstring). Seeded: the
    same seed gives the same masks and window draws for every run of the same config, so runs
    are compared on equal masks. `batch_size` counts masks (rows before the batch repeat)."""
    device = torch.device(device)
    pixels, _, _ = patchify(image, cfg.model.patch_size)
    pixels = pixels.to(device)
    gh, gw = image.shape[0] // cfg.model.patch_size, image.shape[1] // cfg.model.patch_size
    layout = mask_layout(cfg, gh, gw)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)  # the training forward's window draws
    sums = torch.zeros(gh * gw, dtype=torch.float64)
    counts = torch.zeros(gh * gw, dtype=torch.float64)
    kept: list[np.ndarray] = []
    row_means, row_vars = [], []
    model.eval()
    done = 0
    while done < num_masks:
        b = min(batch_size, num_masks - done)
        batch = draw_mask_rows(pixels, layout, b, rng)
        with autocast_for(device):
            pred = predicted_tokens(model, batch, forward, gen)
        losses = accumulate_token_losses(pred.token_losses.cpu(), pred.target_ids.cpu(), gw, sums, counts)
        mean_r, var_r = row_loss_stats(pred)
        row_means.append(mean_r.cpu())
        row_vars.append(var_r.cpu())
        if keep_token_losses:
            kept.append(losses.numpy().astype(np.float32))
        done += b
    mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.nan)
    return LossMap(
        mean=mean.view(gh, gw).numpy(),
        count=counts.view(gh, gw).numpy(),
        token_losses=np.concatenate(kept) if keep_token_losses else None,
        sample_mean=float(torch.cat(row_means).nanmean()),
        sample_var=float(torch.cat(row_vars).nanmean()),
    )


# ----------------------------------------------------------------------------- figure


def upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(gh, gw)` -> `(H, W)` by repeating each patch value over its pixels."""
    return np.repeat(np.repeat(grid, size[0] // grid.shape[0], axis=0), size[1] // grid.shape[1], axis=1)


def make_loss_map_figure(
    images: list[SourceImage],
    maps: dict[str, list[np.ndarray]],
    paths: list[str | Path],
    num_masks: int,
    cmap: str = "inferno",
    forward: str = "training",
) -> plt.Figure:
    """Rows: images. Columns: the image, then per run `image x loss / max(loss)` (each image's map
    normalized by its own maximum) and the loss heatmap on one colour scale per run, shown by the
    colorbar under that run's heatmaps."""
    runs = list(maps)
    fig, axes = image_grid(images, 1 + 2 * len(runs))
    for k, run in enumerate(runs):
        run_maps = maps[run]
        vmin = float(np.nanmin([np.nanmin(m) for m in run_maps]))
        vmax = float(np.nanmax([np.nanmax(m) for m in run_maps]))
        c_over, c_heat = 1 + 2 * k, 2 + 2 * k
        im = None
        for i, (img, m) in enumerate(zip(images, run_maps)):
            norm = np.nan_to_num(m / np.nanmax(m), nan=0.0)
            weight = upsample(norm, img.pixels.shape[:2])[..., None]
            axes[i, c_over].imshow((img.pixels.astype(np.float32) * weight).astype(np.uint8))
            im = axes[i, c_heat].imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        axes[0, c_over].set_title(f"{run}\nimage × loss/max", fontsize=9)
        axes[0, c_heat].set_title(f"{run}\nmean token loss", fontsize=9)
        column_colorbar(fig, im, axes[:, c_heat], f"{run}: loss, scale {vmin:.3g}–{vmax:.3g}")
    how = "training forward: every mask x batch repeat" if forward == "training" else "every target predicted"
    return save_image_grid(fig, axes, f"Per-token loss averaged over {num_masks:,} random masks ({how})", paths)


def save_maps(path: str | Path, images: list[SourceImage], maps: dict[str, list[np.ndarray]],
              counts: dict[str, list[np.ndarray]]) -> Path:
    """The numbers behind the figure: `<run>/mean` and `<run>/count` arrays `(images, gh, gw)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"image_names": np.array([im.name for im in images])}
    for run in maps:
        arrays[f"{run}/mean"] = np.stack(maps[run])
        arrays[f"{run}/count"] = np.stack(counts[run])
    np.savez_compressed(path, **arrays)
    return path


def loss_maps_for_runs(
    runs: list[RunResults],
    images: list[SourceImage],
    num_masks: int,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
    keep_token_losses: bool = False,
    progress: bool = True,
    forward: str = "training",
) -> dict[str, list[LossMap]]:
    """For every run (its model.pt): one `LossMap` per image. Image i gets mask seed `seed + i`
    in every run."""
    out: dict[str, list[LossMap]] = {}
    for run in runs:
        model, cfg = load_ijepa(run.model_path, device)
        unit = cfg.model.patch_size * cfg.model.window_size
        out[run.name] = []
        for i, img in enumerate(tqdm(images, desc=f"loss maps {run.name}", disable=not progress)):
            h, w = img.pixels.shape[:2]
            if h % unit or w % unit:
                raise FigureInputError(f"images of {h}x{w} pixels do not split into {unit} px windows "
                                 f"(patch_size x window_size of run {run.name}); choose --image-size as a multiple of {unit}")
            if i == 0:
                layout = mask_layout(cfg, h // cfg.model.patch_size, w // cfg.model.patch_size)
                if not layout.fits_training_rows:
                    print(f"note: {h}x{w} images have more windows than run {run.name}'s training rows hold "
                          f"(data.max_context_tokens / max_target_tokens); masks keep its context ratios "
                          f"({layout.lo}-{layout.hi} of {layout.num_windows} windows) in larger rows", file=sys.stderr)
            out[run.name].append(compute_loss_map(model, cfg, img.pixels, num_masks, batch_size, seed + i, device,
                                                  keep_token_losses, forward))
        del model
    return out


def maps_and_counts(results: dict[str, list[LossMap]]) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """run -> per-image mean maps, and run -> per-image counts."""
    return ({run: [lm.mean for lm in lms] for run, lms in results.items()},
            {run: [lm.count for lm in lms] for run, lms in results.items()})


def pooled_token_losses(results: dict[str, list[LossMap]]) -> dict[str, np.ndarray]:
    """run -> every kept token loss of every image, `(N,)`."""
    return {run: np.concatenate([lm.token_losses for lm in lms]) for run, lms in results.items()}
