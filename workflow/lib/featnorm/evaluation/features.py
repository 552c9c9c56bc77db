"""Mean-pooled features of every encoder depth, cached on disk as float16 shards.

What is pooled (as the reference's `validate`): the teacher's `hiddens` (the embedding output
and every block's output, before the output norm), averaged over every token of the image:
patches and, when the encoder has them, its register tokens (`pool_registers=False`: patches
only). Extraction modes (the reference's `validation_extraction_mode`): "all-depths"
(`extract-layers`: every depth, one linear probe each) or "last-layer" (`lastlayer`: only the
last block's output, still before the output norm; one probe).

One feature shard per image shard, so an interrupted extraction resumes at image-shard
granularity without decoding what is done, whatever the number of loader workers:

    manifest.json          {"format", "source", "source_shards": [image shard names, in order],
                            "num_depths", "dim", "dtype", "depth_indices": [encoder depth of
                            each feature column] (absent in older caches: 0..num_depths-1),
                            "shards": {image shard name: {"file", "count"}}, "count", "complete"}
    features-00000.pt      {"features": (count, num_depths, dim) float16, "labels": (count,) long,
                            "keys": [sample key] or None}
                           (the features of image shard number 00000 of `source_shards`, rows
                           sorted by sample key when keys are known, so the order does not
                           depend on how many loader workers decoded the shard)

Feature files and the manifest are written atomically (temporary file + rename), and the
manifest lists a shard only once its file is complete. `load_features` concatenates the
shards in `source_shards` order.

Several processes (`torchrun ... scripts/extract_features.py`): rank r extracts the image
shards r, r + N, r + 2N, ... into its own part directory `.parts/w<N>-r<r>/` (a complete
cache of its own, resumable as above); when all parts are complete, rank 0 moves their
feature files into place under their global names and writes the one manifest
(`merge_feature_parts`). The result is the same directory a single process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from featnorm.tokens import is_padding, is_patch

FORMAT = "featnorm-features-v2"
MANIFEST = "manifest.json"


@dataclass
class ShardBatch:
    """Images of one image shard, one per row; `last` marks the shard's final batch."""

    shard: str  # image shard name (a key of the manifest's "shards")
    pixels: torch.Tensor  # (B, L, patch_dim)
    token_ids: torch.Tensor  # (B, L, 4)
    labels: torch.Tensor | None  # (B,) long, or None (stored as -1)
    last: bool
    keys: list[str] | None = None  # sample keys; when given, a shard's rows are stored sorted by key


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


EXTRACTION_MODES = ("all-depths", "last-layer")


def mean_pool(hiddens: torch.Tensor, token_ids: torch.Tensor, include_registers: bool = False) -> torch.Tensor:
    """`(n, B, L, dim)` -> `(B, n, dim)`, mean over the real patch tokens, and the register
    tokens too with `include_registers`; padding never counts."""
    keep = ~is_padding(token_ids) if include_registers else is_patch(token_ids)
    mask = keep.to(hiddens.dtype)  # (B, L)
    summed = torch.einsum("nbld,bl->bnd", hiddens, mask)
    return summed / mask.sum(1).clamp_min(1)[:, None, None]


def select_depths(hiddens: torch.Tensor, mode: str) -> tuple[torch.Tensor, list[int]]:
    """`(depth + 1, B, L, dim)` -> the extraction mode's depths and their indices."""
    if mode == "all-depths":
        return hiddens, list(range(hiddens.shape[0]))
    if mode == "last-layer":
        return hiddens[-1:], [hiddens.shape[0] - 1]
    raise ValueError(f"extraction mode {mode!r} is not one of {EXTRACTION_MODES}")


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


def extract_features(
    encoder: torch.nn.Module,
    make_batches: Callable[[set[str]], Iterable[ShardBatch]],
    source_shards: list[str],
    out_dir: str | Path,
    *,
    source: dict | None = None,
    total: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    mode: str = "all-depths",
    pool_registers: bool = True,
) -> dict:
    """Encode every image and write mean-pooled features of the mode's depths, per image shard.

    make_batches(done): the batches of every image shard not in `done`, batches of several
    shards may interleave (loader workers), a shard's batches in order, the last flagged.
    source_shards: all image shard names in dataset order. source: identifies what is
    extracted (model, shards, settings); resuming with another source is refused rather
    than mixing features. `mode`, `pool_registers`: see the module docstring. Returns the final
    manifest.
    """
    if mode not in EXTRACTION_MODES:
        raise ValueError(f"extraction mode {mode!r} is not one of {EXTRACTION_MODES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    source = source or {}
    manifest = read_manifest(out_dir)
    if manifest is not None and (manifest.get("source") != source or manifest.get("source_shards") != list(source_shards)):
        raise FeatureCacheError(
            f"{out_dir / MANIFEST}: holds features of {manifest.get('source')}, not of {source}; "
            "delete the directory or choose another --out"
        )
    if manifest is None:
        manifest = {"format": FORMAT, "source": source, "source_shards": list(source_shards), "num_depths": None,
                    "dim": None, "dtype": "float16", "shards": {}, "count": 0, "complete": False}
    if manifest["complete"]:
        return manifest
    index = {name: i for i, name in enumerate(source_shards)}
    done = set(manifest["shards"])
    encoder.eval()  # DiffMoE: eval routing
    pending: dict[str, tuple[list[torch.Tensor], list[torch.Tensor], list[str] | None]] = {}
    finite = torch.finfo(torch.float16).max

    bar = tqdm(total=total, initial=manifest["count"], unit="img", desc=f"features -> {out_dir}", disable=not progress)
    for b in make_batches(done):
        if b.shard in done:
            raise FeatureCacheError(f"image shard {b.shard} was extracted already; the batch source repeated it")
        feats, labels, keys = pending.setdefault(b.shard, ([], [], []))
        n = b.pixels.shape[0]
        if n:
            if b.keys is None or keys is None:
                pending[b.shard] = (feats, labels, None)
            else:
                keys.extend(b.keys)
            token_ids = b.token_ids.to(device, non_blocking=True)
            hiddens, manifest["depth_indices"] = select_depths(
                encode_all_depths(encoder, b.pixels.to(device, non_blocking=True), token_ids), mode)
            pooled = mean_pool(hiddens, token_ids, include_registers=pool_registers)
            feats.append(pooled.clamp(-finite, finite).to(torch.float16).cpu())
            labels.append(torch.full((n,), -1, dtype=torch.long) if b.labels is None else b.labels.long().cpu())
            bar.update(n)
        if b.last:
            f, y, k = pending.pop(b.shard)
            f = torch.cat(f) if f else torch.zeros(0, manifest["num_depths"] or 0, manifest["dim"] or 0, dtype=torch.float16)
            y = torch.cat(y) if y else torch.zeros(0, dtype=torch.long)
            if k:
                order = sorted(range(len(k)), key=k.__getitem__)
                f, y, k = f[order], y[order], [k[i] for i in order]
            name = f"features-{index[b.shard]:05d}.pt"
            _atomic_torch_save({"features": f, "labels": y, "keys": k or None}, out_dir / name)
            manifest["shards"][b.shard] = {"file": name, "count": int(f.shape[0])}
            manifest["count"] += int(f.shape[0])
            if f.shape[0]:
                manifest["num_depths"], manifest["dim"] = int(f.shape[1]), int(f.shape[2])
            done.add(b.shard)
            _atomic_write_json(manifest, out_dir / MANIFEST)
    bar.close()
    missing = [s for s in source_shards if s not in manifest["shards"]]
    if missing:
        raise FeatureCacheError(f"{out_dir}: the batch source ended before image shards {missing[:3]} were complete")
    manifest["complete"] = True
    _atomic_write_json(manifest, out_dir / MANIFEST)
    return manifest


def part_dir(out_dir: str | Path, rank: int, world_size: int) -> Path:
    """Where rank `rank` of `world_size` extraction processes writes its share."""
    return Path(out_dir) / ".parts" / f"w{world_size}-r{rank}"


def merge_feature_parts(out_dir: str | Path, parts: list[Path], source_shards: list[str], source: dict) -> dict:
    """Move the feature files of complete per-rank part caches into `out_dir` under their
    global names and write its complete manifest; the part directories are removed.
    Safe to rerun after an interruption (a file already moved is found in place)."""
    out_dir = Path(out_dir)
    index = {name: i for i, name in enumerate(source_shards)}
    manifest = {"format": FORMAT, "source": source, "source_shards": list(source_shards), "num_depths": None,
                "dim": None, "dtype": "float16", "shards": {}, "count": 0, "complete": False}
    for part in parts:
        m = read_manifest(part)
        if m is None or not m["complete"] or m.get("source") != source:
            raise FeatureCacheError(f"{part}: this rank's features are missing or incomplete; rerun the extraction")
        for name, entry in m["shards"].items():
            dst = f"features-{index[name]:05d}.pt"
            src = part / entry["file"]
            if src.exists():
                os.replace(src, out_dir / dst)
            elif not (out_dir / dst).exists():
                raise FeatureCacheError(f"{src}: listed in {part / MANIFEST} but missing; delete {part} and rerun")
            manifest["shards"][name] = {"file": dst, "count": int(entry["count"])}
            manifest["count"] += int(entry["count"])
        if m["num_depths"] is not None:
            manifest["num_depths"], manifest["dim"] = m["num_depths"], m["dim"]
        if m.get("depth_indices") is not None:
            manifest["depth_indices"] = m["depth_indices"]
    missing = [s for s in source_shards if s not in manifest["shards"]]
    if missing:
        raise FeatureCacheError(f"{out_dir}: no rank extracted image shards {missing[:3]}")
    manifest["complete"] = True
    _atomic_write_json(manifest, out_dir / MANIFEST)
    shutil.rmtree(out_dir / ".parts", ignore_errors=True)
    return manifest


def feature_depth_indices(feature_dir: str | Path) -> list[int]:
    """The encoder depth of each feature column of a cache (0 = patch embedding, d = block d)."""
    manifest = read_manifest(feature_dir)
    if manifest is None:
        raise FeatureCacheError(f"{feature_dir}: no {MANIFEST}; run extract_features.py first")
    if manifest.get("depth_indices") is not None:
        return [int(d) for d in manifest["depth_indices"]]
    return list(range(int(manifest["num_depths"] or 0)))


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
    if not manifest["count"]:
        raise FeatureCacheError(f"{feature_dir}: the feature cache holds no images")
    feats, labels = [], []
    for name in manifest["source_shards"]:
        shard = manifest["shards"].get(name)
        if shard is None or not shard["count"]:
            continue
        blob = torch.load(feature_dir / shard["file"], map_location="cpu", weights_only=True)
        if blob["features"].shape[0] != shard["count"]:
            raise FeatureCacheError(f"{feature_dir / shard['file']}: holds {blob['features'].shape[0]} rows, manifest says {shard['count']}")
        feats.append(blob["features"])
        labels.append(blob["labels"])
    return torch.cat(feats), torch.cat(labels)
