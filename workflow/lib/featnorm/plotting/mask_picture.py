"""The mask picture (the reference's make-viz): how the training pipeline split and packed images.

The first packed training rows of a run (its data config, seed and shards, exactly as the
trainer's first batch starts) are drawn back as images: for every image of a row, its patches
at their (row, col) positions, the context patches (those the student encoder sees) crossed
by a black X along both diagonals, as the reference marks them, the target patches plain.
Above each row's images a strip shows the row itself: its token slots coloured by image, the
context segment then the target segment, padding grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from featnorm.batch import PackedBatch
from featnorm.config import RunConfig
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader
from featnorm.plotting.style import plt, save_figure, setup_style
from featnorm.tokens import COL, ROW, SAMPLE, is_patch


@dataclass
class SamplePicture:
    row: int  # packed row of the batch
    sample: int  # sample id (unique in the batch)
    pixels: np.ndarray  # (gh * p, gw * p, 3) uint8, context patches X-marked, uncovered patches black
    context: np.ndarray  # (gh, gw) bool: patch in the row's context segment
    target: np.ndarray  # (gh, gw) bool: patch in the row's target segment


def first_training_rows(cfg: RunConfig, rows: int, shards: str | Path | None = None) -> PackedBatch:
    """The first `rows` packed rows the run's training would see (its data config, seed and
    loader workers), pixels as uint8 (0..255)."""
    loader = TrainLoader(shards or cfg.data.train_shards, PipelineSpec.from_config(cfg), batch_size=rows,
                         seed=cfg.seed, num_workers=cfg.data.num_workers, pixels="uint8")
    return next(iter(loader.epoch_batches(0)))


def x_mark(patch_size: int) -> np.ndarray:
    """`(p, p)` bool: the two diagonals of a patch."""
    eye = np.eye(patch_size, dtype=bool)
    return eye | eye[::-1]


def sample_pictures(batch: PackedBatch, patch_size: int) -> list[SamplePicture]:
    """Every image of every row of `batch` (uint8 pixels `(B, L, p*p*3)`), in row order."""
    pixels = batch.pixels.to(torch.uint8).numpy()
    ids = batch.token_ids.numpy()
    real = is_patch(batch.token_ids).numpy()
    lc, p = batch.context_length, patch_size
    mark = x_mark(p)
    out = []
    for r in range(ids.shape[0]):
        samples = np.unique(ids[r, real[r], SAMPLE])
        for s in samples:
            mine = real[r] & (ids[r, :, SAMPLE] == s)
            pos = ids[r, mine][:, [ROW, COL]]
            gh, gw = pos.max(0) + 1
            img = np.zeros((gh, gw, p, p, 3), np.uint8)
            context = np.zeros((gh, gw), bool)
            target = np.zeros((gh, gw), bool)
            for j in np.flatnonzero(mine):
                y, x = ids[r, j, ROW], ids[r, j, COL]
                patch = pixels[r, j].reshape(p, p, 3).copy()
                if j < lc:
                    patch[mark] = 0
                    context[y, x] = True
                else:
                    target[y, x] = True
                img[y, x] = patch
            out.append(SamplePicture(r, int(s), img.transpose(0, 2, 1, 3, 4).reshape(gh * p, gw * p, 3),
                                     context, target))
    return out


def row_strip(token_ids: torch.Tensor, context_length: int) -> np.ndarray:
    """`(L,)` colour index of each slot of one row: -1 padding, else the rank of its sample
    id among the row's images (registers take their image's colour)."""
    s = token_ids[:, SAMPLE].numpy()
    out = np.full(s.shape, -1)
    real = s != -100
    _, rank = np.unique(s[real], return_inverse=True)
    out[real] = rank
    return out


def make_mask_picture(batch: PackedBatch, pictures: list[SamplePicture], paths: list[str | Path],
                      run: str = "") -> plt.Figure:
    """One band per packed row: the row's token strip on top, its images below."""
    setup_style()
    rows = sorted({pic.row for pic in pictures})
    per_row = {r: [pic for pic in pictures if pic.row == r] for r in rows}
    ncols = max(len(v) for v in per_row.values())
    fig = plt.figure(figsize=(1.9 * max(ncols, 3), 2.4 * len(rows) + 0.6), layout="constrained")
    bands = np.atleast_1d(fig.subfigures(len(rows), 1))
    cmap = plt.get_cmap("tab10")
    lc = batch.context_length
    for band, r in zip(bands, rows):
        axes = band.subplots(2, ncols, height_ratios=[0.12, 1.0], squeeze=False)
        strip_ax = band.add_subplot(axes[0, 0].get_gridspec()[0, :])
        for ax in axes[0]:
            ax.remove()
        idx = row_strip(batch.token_ids[r], lc)
        colours = np.array([(0.85, 0.85, 0.85) if i < 0 else cmap(i % 10)[:3] for i in idx])
        strip_ax.imshow(colours[None], aspect="auto", interpolation="nearest")
        strip_ax.axvline(lc - 0.5, color="black", lw=1.5)
        strip_ax.set_xticks([])
        strip_ax.set_yticks([])
        strip_ax.grid(False)
        for x, text in ((lc / 2, "context segment"), (lc + (len(idx) - lc) / 2, "target segment")):
            strip_ax.text(x - 0.5, 0, text, ha="center", va="center", fontsize=6, color="white", weight="bold")
        strip_ax.set_title(f"packed row {r}: {len(per_row[r])} image(s), token slots coloured by image "
                           "(grey: padding)", fontsize=8)
        for k, ax in enumerate(axes[1]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if k >= len(per_row[r]):
                ax.axis("off")
                continue
            pic = per_row[r][k]
            ax.imshow(pic.pixels, interpolation="nearest")
            colour = cmap(row_strip(batch.token_ids[r], lc)[batch.token_ids[r, :, SAMPLE].numpy() == pic.sample][0] % 10)
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(2.5)
            ax.set_xlabel(f"{int(pic.context.sum())} context / {int(pic.target.sum())} target patches", fontsize=6)
    title = "Context (X) and target patches of the first packed training rows"
    fig.suptitle(f"{title}{f' ({run})' if run else ''}", fontsize=10)
    save_figure(fig, paths)
    return fig
