"""Mean-pooled features of every encoder depth, cached on disk as float16 shards.

Layout of an output directory:
    manifest.json          {"format", "num_depths", "dim", "dtype", "shard_size", "source",
                            "shards": [{"file", "count"}], "count", "complete"}
    features-00000.pt      {"features": (count, num_depths, dim) float16, "labels": (count,) long}

Shards and the manifest are written atomically (temporary file + rename), and the manifest
lists a shard only once its file is complete, so an interrupted extraction resumes after the
last listed shard: the first `count` images of the (deterministic, unshuffled) evaluation
stream are skipped without being encoded.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import torch
from tqdm import tqdm

from featnorm.tokens import is_patch

FORMAT = "featnorm-features-v1"
MANIFEST = "manifest.json"


class FeatureCacheError(RuntimeError):
    """A feature directory that is missing, incomplete or from another source."""


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (SPEC: bf16 everywhere on GPU), nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_all_depths(encoder: torch.nn.Module, pixels: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """`(B, L, patch_dim)`, `(B, L, 4)` -> hiddens `(depth + 1, B, L, dim)` in float32.

    The caller puts the encoder in eval mode (DiffMoE routes differently in eval).
    """
    with autocast_for(pixels.device):
        _, hiddens = encoder(pixels, token_ids, return_all_depths=True)
    return hiddens.float()


def mean_pool(hiddens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """`(depth + 1, B, L, dim)` -> `(B, depth + 1, dim)`, mean over real patch tokens only."""
    mask = is_patch(token_ids).to(hiddens.dtype)  # (B, L): no registers, no padding
    summed = torch.einsum("nbld,bl->bnd", hiddens, mask)
    return summed / mask.sum(1).clamp_min(1)[:, None, None]


def _atomic_torch_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_manifest(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise FeatureCacheError(f"{path}: not a feature manifest (format {manifest.get('format')!r}, expected {FORMAT!r})")
    return manifest


def _skip_images(batches: Iterable[tuple], skip: int) -> Iterator[tuple]:
    """Drop the first `skip` images of a stream of `(pixels, token_ids, labels)` batches."""
    for batch in batches:
        n = batch[0].shape[0]
        if skip >= n:
            skip -= n
            continue
        if skip:
            batch = tuple(t[skip:] for t in batch)
            skip = 0
        yield batch


def extract_features(
    encoder: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    out_dir: str | Path,
    *,
    source: dict | None = None,
    shard_size: int = 10_000,
    total: int | None = None,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    progress: bool = True,
) -> dict:
    """Encode every image of `batches` and write mean-pooled features of all depths.

    batches: `(pixels (B, L, patch_dim), token_ids (B, L, 4), labels (B,) or None)`, one image
    per row, in a fixed order (resume skips the images already written).
    source: identifies what is extracted (model path, shard dir); a resume with another source
    is refused rather than mixing features. Returns the final manifest.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    source = source or {}
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest.get("source", {}) != source:
        raise FeatureCacheError(
            f"{out_dir / MANIFEST}: holds features of {manifest.get('source')}, not of {source}; "
            "delete the directory or choose another --out"
        )
    if manifest is None:
        manifest = {"format": FORMAT, "source": source, "shard_size": shard_size, "shards": [], "count": 0,
                    "complete": False, "num_depths": None, "dim": None, "dtype": "float16"}
    if manifest["complete"]:
        return manifest
    shard_size = manifest["shard_size"]
    done = manifest["count"]
    limit = min(total, max_images) if (total is not None and max_images is not None) else (max_images or total)
    encoder.eval()  # DiffMoE: eval routing

    pending_f: list[torch.Tensor] = []
    pending_y: list[torch.Tensor] = []
    pending = 0

    def flush() -> None:
        nonlocal pending_f, pending_y, pending
        feats = torch.cat(pending_f)
        labels = torch.cat(pending_y)
        name = f"features-{len(manifest['shards']):05d}.pt"
        _atomic_torch_save({"features": feats, "labels": labels}, out_dir / name)
        manifest["shards"].append({"file": name, "count": int(feats.shape[0])})
        manifest["count"] += int(feats.shape[0])
        manifest["num_depths"], manifest["dim"] = int(feats.shape[1]), int(feats.shape[2])
        _atomic_write_json(manifest, out_dir / MANIFEST)
        pending_f, pending_y, pending = [], [], 0

    bar = tqdm(total=limit, initial=done, unit="img", desc=f"features -> {out_dir.name}", disable=not progress)
    seen = done
    for pixels, token_ids, labels in _skip_images(batches, done):
        if limit is not None and seen >= limit:
            break
        if limit is not None and seen + pixels.shape[0] > limit:
            keep = limit - seen
            pixels, token_ids = pixels[:keep], token_ids[:keep]
            labels = None if labels is None else labels[:keep]
        b = pixels.shape[0]
        pixels = pixels.to(device, non_blocking=True)
        token_ids = token_ids.to(device, non_blocking=True)
        pooled = mean_pool(encode_all_depths(encoder, pixels, token_ids), token_ids)
        finite = torch.finfo(torch.float16).max
        pooled = pooled.clamp(-finite, finite).to(torch.float16).cpu()
        labels = torch.full((b,), -1, dtype=torch.long) if labels is None else labels.long().cpu()
        # split across shard boundaries so every shard but the last holds exactly shard_size
        start = 0
        while start < b:
            take = min(shard_size - pending, b - start)
            pending_f.append(pooled[start : start + take])
            pending_y.append(labels[start : start + take])
            pending += take
            start += take
            if pending == shard_size:
                flush()
        seen += b
        bar.update(b)
    bar.close()
    if pending:
        flush()
    manifest["complete"] = True
    _atomic_write_json(manifest, out_dir / MANIFEST)
    return manifest


def load_features(feature_dir: str | Path, allow_incomplete: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All shards of a feature directory: `(N, num_depths, dim)` float16 and `(N,)` long labels."""
    feature_dir = Path(feature_dir)
    manifest = read_manifest(feature_dir)
    if manifest is None:
        raise FeatureCacheError(f"{feature_dir}: no {MANIFEST}; run extract_features.py first")
    if not manifest["complete"] and not allow_incomplete:
        raise FeatureCacheError(
            f"{feature_dir / MANIFEST}: extraction is incomplete ({manifest['count']} images so far); "
            "rerun extract_features.py to resume it"
        )
    if not manifest["shards"]:
        raise FeatureCacheError(f"{feature_dir}: the feature cache holds no images")
    feats, labels = [], []
    for shard in manifest["shards"]:
        blob = torch.load(feature_dir / shard["file"], map_location="cpu", weights_only=True)
        if blob["features"].shape[0] != shard["count"]:
            raise FeatureCacheError(f"{feature_dir / shard['file']}: holds {blob['features'].shape[0]} rows, manifest says {shard['count']}")
        feats.append(blob["features"])
        labels.append(blob["labels"])
    return torch.cat(feats), torch.cat(labels)
