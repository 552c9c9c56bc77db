"""Images for the per-image figures (loss maps, PCA, token energy).

They come from validation shards (WebDataset tars, as written by `pack_shards.py` or
downloaded) or from a folder of the user's own images, and are prepared like the evaluation
pipeline: centre crop to a square, resize to `size` x `size` (256: a 16 x 16 patch grid).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from featnorm.data.patchify import patchify as patchify_image
from featnorm.data.patchify import pixels_to_unit
from featnorm.data.resize import center_crop_resize
from featnorm.data.shards import ShardError, iter_samples, resolve_shards
from featnorm.plotting.run_results import FigureInputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class ImageSourceError(FigureInputError):
    """No usable images where the user pointed; the message names the path."""


@dataclass
class SourceImage:
    name: str  # shard key or file name, shown on the figure
    pixels: np.ndarray  # (size, size, 3) uint8, centre-cropped and resized


def center_square(image: Image.Image, size: int) -> np.ndarray:
    """Centre crop to a square, resize to `size` x `size` (bilinear), as the evaluation pipeline
    does -> `(size, size, 3)` uint8."""
    return center_crop_resize(image, size)


def iter_images_from_shards(shards: str | Path, count: int, size: int = 256, skip: int = 0) -> Iterator[SourceImage]:
    """The first `count` images (after `skip`) of the shards (a split directory with its
    manifest.json, a directory of .tar files, or a brace pattern), in shard order, one at a
    time. Undecodable images are skipped; none at all is an `ImageSourceError`."""
    try:
        paths = resolve_shards(str(shards))
    except ShardError as e:
        raise ImageSourceError(str(e)) from None
    given = seen = 0
    for shard in paths:
        for sample in iter_samples(shard):
            data = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
            if data is None:
                continue
            seen += 1
            if seen <= skip:
                continue
            try:
                image = SourceImage(sample["__key__"], center_square(Image.open(io.BytesIO(data)), size))
            except Exception:  # noqa: BLE001 - a corrupt image is skipped, not fatal
                continue
            yield image
            given += 1
            if given == count:
                return
    if not given:
        raise ImageSourceError(f"no decodable images found in shards {shards}")


def iter_images_from_folder(folder: str | Path, count: int, size: int = 256, skip: int = 0) -> Iterator[SourceImage]:
    """The first `count` images (after `skip`) of a folder (searched recursively, sorted by
    path), one at a time."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageSourceError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    given = 0
    for p in files[skip:]:
        try:
            with Image.open(p) as img:
                image = SourceImage(p.stem, center_square(img, size))
        except Exception:  # noqa: BLE001
            continue
        yield image
        given += 1
        if given == count:
            return
    if not given:
        raise ImageSourceError(f"no decodable images ({', '.join(IMAGE_EXTS)}) found in {folder}")


def images_from_shards(shards: str | Path, count: int, size: int = 256, skip: int = 0) -> list[SourceImage]:
    return list(iter_images_from_shards(shards, count, size, skip))


def images_from_folder(folder: str | Path, count: int, size: int = 256, skip: int = 0) -> list[SourceImage]:
    return list(iter_images_from_folder(folder, count, size, skip))


def iter_images(
    shards: str | Path | None = None,
    image_dir: str | Path | None = None,
    count: int = 4,
    size: int = 256,
    skip: int = 0,
) -> Iterator[SourceImage]:
    """Images from exactly one of `shards` and `image_dir`, one at a time (for thousands of
    images, which a list would hold in memory)."""
    if (shards is None) == (image_dir is None):
        raise ImageSourceError("give exactly one of --shards DIR (validation shards) or --image-dir DIR")
    if shards is not None:
        return iter_images_from_shards(shards, count, size, skip)
    return iter_images_from_folder(image_dir, count, size, skip)


def load_images(
    shards: str | Path | None = None,
    image_dir: str | Path | None = None,
    count: int = 4,
    size: int = 256,
    skip: int = 0,
) -> list[SourceImage]:
    return list(iter_images(shards, image_dir, count, size, skip))


def patchify(image: np.ndarray, patch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(H, W, 3)` uint8 -> pixels `(L, p*p*3)` float in [-1, 1] (row-major patches, laid out as the
    data pipeline does) and each patch's grid row and col, two `(L,)` long tensors."""
    grid = patchify_image(image, patch_size)  # (gh, gw, p*p*3)
    gh, gw, d = grid.shape
    pixels = pixels_to_unit(grid.reshape(gh * gw, d))
    rows = torch.arange(gh).repeat_interleave(gw)
    cols = torch.arange(gw).repeat(gh)
    return pixels, rows, cols
