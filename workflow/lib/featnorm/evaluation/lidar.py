"""LiDAR and RankMe of a checkpoint's encoder on a fixed set of augmented views.

A view set is a list of `(PackedBatch, view_of_sample)` (the same convention as the
trainer's LiDAR diagnostic): `view_of_sample[s]` is the flat view index
`image * num_augmentations + augmentation` of the image with sample id `s` in the batch.
Each view is one random resize + random context mask of an image; its embedding is the mean
of the encoder's output features over the view's real context patches.
"""

from __future__ import annotations

from typing import Iterable

import torch
from tqdm import tqdm

from featnorm.batch import PackedBatch
from featnorm.evaluation.features import autocast_for
from featnorm.metrics import lidar_score, smooth_rank
from featnorm.tokens import SAMPLE, is_patch


@torch.no_grad()
def pooled_context_by_sample(encoder: torch.nn.Module, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode the context segment; `(sample_ids (n,), features (n, dim))`, the mean over each
    image's real context patches (registers and padding excluded)."""
    pixels, ids = batch.context_pixels, batch.context_ids
    with autocast_for(pixels.device):
        feats = encoder(pixels, ids).float()  # (B, Lc, dim)
    patch = is_patch(ids)
    uniq, inverse = torch.unique(ids[..., SAMPLE][patch], return_inverse=True)
    sums = torch.zeros(len(uniq), feats.shape[-1], device=feats.device).index_add_(0, inverse, feats[patch])
    counts = torch.bincount(inverse, minlength=len(uniq)).clamp_min(1).to(feats.dtype)
    return uniq, sums / counts[:, None]


@torch.no_grad()
def view_embeddings(
    encoder: torch.nn.Module,
    views: Iterable[tuple[PackedBatch, torch.Tensor]],
    num_images: int,
    num_augmentations: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> torch.Tensor:
    """`(num_images, num_augmentations, dim)` float64 embeddings of every view (eval mode)."""
    encoder.eval()  # DiffMoE routes by its capacity predictor in eval mode
    total = num_images * num_augmentations
    out: torch.Tensor | None = None
    filled = torch.zeros(total, dtype=torch.bool)
    for batch, view_of_sample in tqdm(views, desc="LiDAR views", unit="batch", disable=not progress):
        sample_ids, feats = pooled_context_by_sample(encoder, batch.to(device))
        if out is None:
            out = torch.zeros(total, feats.shape[-1], dtype=torch.float64)
        idx = view_of_sample.to(sample_ids.device)[sample_ids].cpu()
        out[idx] = feats.double().cpu()
        filled[idx] = True
    if out is None or not bool(filled.all()):
        missing = total if out is None else int((~filled).sum())
        raise ValueError(f"the LiDAR view set misses {missing} of {total} views")
    return out.view(num_images, num_augmentations, -1)


def lidar_and_rankme(embeddings: torch.Tensor) -> dict[str, float]:
    """LiDAR of `(n, q, d)` view embeddings and RankMe of all `n * q` of them, as one `(n q, d)` matrix."""
    n, q, d = embeddings.shape
    return {"lidar": lidar_score(embeddings), "rankme": smooth_rank(embeddings.reshape(n * q, d))}
