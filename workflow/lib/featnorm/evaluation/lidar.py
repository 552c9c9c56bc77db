"""LiDAR and RankMe of a checkpoint's encoder on a fixed set of augmented views.

A view set is a list of `(PackedBatch, view_of_sample)` (the same convention as the
trainer's LiDAR diagnostic): `view_of_sample[s]` is the flat view index
`image * num_augmentations + augmentation` of the image with sample id `s` in the batch.
Each view is one random resize + random context mask of an image; its embedding is the mean
of the encoder's output features over the view's real context patches.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from featnorm.batch import PackedBatch
from featnorm.evaluation.features import autocast_for
from featnorm.metrics import lidar_score, smooth_rank
from featnorm.tokens import COL, NUM_IDS, PAD_ID, REGISTER, ROW, SAMPLE, is_patch


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


# ----------------------------------------------------------------------------- the view set


def pick_images(shards: list, num_images: int, seed: int, min_side: int, per_shard_fraction: float = 0.25) -> list[tuple[str, bytes]]:
    """A fixed, seeded subset of `num_images` encoded images (`(key, bytes)`), read from shards
    in a seeded order, at most about `num_images * per_shard_fraction` per shard (so the subset
    spreads over several shards without reading a whole large split). Images too small for
    the training pipeline are skipped."""
    from featnorm.data.resize import keep_image, open_image
    from featnorm.data.shards import BadInputLog, iter_samples
    from featnorm.data.train_pipeline import image_bytes

    rng = np.random.default_rng(seed)
    per_shard = max(1, int(np.ceil(num_images * per_shard_fraction))) if len(shards) > 1 else num_images
    picked: list[tuple[str, bytes]] = []
    bad = BadInputLog()
    for rounds in range(2):  # a second pass takes the rest when shards are few or small
        for i in rng.permutation(len(shards)):
            samples = list(iter_samples(shards[i], bad))
            taken = {k for k, _ in picked}
            cand = [s for s in (samples[j] for j in rng.permutation(len(samples))) if f"{shards[i]}/{s['__key__']}" not in taken]
            n_here = 0
            for s in cand:
                if len(picked) == num_images or (rounds == 0 and n_here == per_shard):
                    break
                data = image_bytes(s)
                if data is None:
                    continue
                try:
                    w, h = open_image(data).size
                except Exception:  # noqa: BLE001 - undecodable: skip
                    continue
                if keep_image(h, w, min_side):
                    picked.append((f"{shards[i]}/{s['__key__']}", data))
                    n_here += 1
            if len(picked) == num_images:
                return picked
    raise ValueError(f"the shards hold only {len(picked)} usable images, fewer than the {num_images} asked for LiDAR")


def view_batches(
    images: list[tuple[str, bytes]], spec, num_augmentations: int, seed: int, rows_per_batch: int = 256
) -> Iterator[tuple[PackedBatch, torch.Tensor]]:
    """One view per row: the context windows of a random resize + random mask of an image
    (training pipeline steps 2-4, `featnorm.data`), registers first. Deterministic in `seed`."""
    from featnorm.data.patchify import pixels_to_unit
    from featnorm.data.train_pipeline import make_item
    from featnorm.data.windows import window_token_index

    ws, nreg = spec.window_size, spec.num_registers
    length = nreg + spec.max_context_tokens
    rows_px, rows_ids, views = [], [], []

    def emit() -> tuple[PackedBatch, torch.Tensor]:
        batch = PackedBatch(torch.stack(rows_px), torch.stack(rows_ids), length)
        return batch, torch.tensor(views, dtype=torch.long)

    for i, (key, data) in enumerate(images):
        rng = np.random.default_rng([seed, i])
        for a in range(num_augmentations):
            item = make_item(data, key, rng, spec)
            ctx = item.permutation[: item.drawn]
            idx = window_token_index(item.gh, item.gw, ws)[ctx].reshape(-1)
            s = len(rows_px)  # one view per row; sample id = its row in the batch
            px = torch.zeros(length, spec.patch_dim)
            ids = torch.full((length, NUM_IDS), PAD_ID, dtype=torch.long)
            ids[:nreg, SAMPLE] = s
            ids[:nreg, REGISTER] = torch.arange(nreg)
            n = len(idx)
            px[nreg : nreg + n] = pixels_to_unit(item.patches[idx])
            ids[nreg : nreg + n, SAMPLE] = s
            ids[nreg : nreg + n, ROW] = torch.from_numpy(idx // item.gw)
            ids[nreg : nreg + n, COL] = torch.from_numpy(idx % item.gw)
            rows_px.append(px)
            rows_ids.append(ids)
            views.append(i * num_augmentations + a)
            if len(rows_px) == rows_per_batch:
                yield emit()
                rows_px, rows_ids, views = [], [], []
    if rows_px:
        yield emit()
