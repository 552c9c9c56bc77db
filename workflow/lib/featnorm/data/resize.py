"""The random-resize rule of the training pipeline (SPEC section 2, steps 1-2), and decoding.

`random_resize_shape` only does arithmetic on sizes; `decode_resized` decodes an image
straight to that size. For JPEGs it asks the decoder for a DCT-downscaled draft first
(`Image.draft`), which makes decoding several times faster for images much larger than
the target; the draft is never smaller than the target, so the result is a true
bilinear downscale.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def keep_image(height: int, width: int, min_side: int) -> bool:
    """Step 1: drop images whose mean side is below `min_side`."""
    return (height + width) / 2 >= min_side


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def random_resize_shape(
    height: int,
    width: int,
    rng: np.random.Generator,
    min_side: int,
    max_side: int,
    multiple: int,
) -> tuple[int, int]:
    """Step 2: a random target `(height, width)` keeping the aspect ratio.

    A side length s is drawn uniformly in [min_side, min(mean side, max_side)]; both sides
    are scaled by s / mean side; the pixel count is capped at max_side**2; each side is
    rounded to a multiple of `multiple` (patch_size x window_size), at least 2 multiples
    and at most max_side (rounded down to a multiple).
    """
    mean_side = (height + width) / 2
    hi = min(mean_side, max_side)
    side = rng.uniform(min_side, hi) if hi > min_side else float(hi)
    scale = side / mean_side
    h, w = height * scale, width * scale
    if h * w > max_side * max_side:
        shrink = math.sqrt(max_side * max_side / (h * w))
        h, w = h * shrink, w * shrink
    top = max(2, max_side // multiple)
    gh = min(max(round_half_up(h / multiple), 2), top)
    gw = min(max(round_half_up(w / multiple), 2), top)
    return gh * multiple, gw * multiple


def open_image(data: bytes) -> Image.Image:
    """A lazily decoded PIL image (only the header is read)."""
    return Image.open(io.BytesIO(data))


def decode_resized(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Decode `img` (from `open_image`) and resize it bilinearly to `size = (height, width)`.

    Returns `(height, width, 3)` uint8.
    """
    h, w = size
    if img.format == "JPEG":
        img.draft("RGB", (w, h))
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def center_crop_resize(img: Image.Image, size: int, resample: int = Image.BILINEAR) -> np.ndarray:
    """Centre crop to a square and resize to `size x size`; `(size, size, 3)` uint8 (eval pipeline)."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if img.format == "JPEG" and s >= 2 * size:
        # The draft keeps at least `size` pixels over the crop's side; crop box scales with it.
        scale_req = (max(1, w * size // s), max(1, h * size // s))
        img.draft("RGB", scale_req)
        f = img.size[0] / w
        left, top, s = int(left * f), int(top * f), int(s * f)
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((size, size), resample, box=(left, top, left + s, top + s))
    return np.asarray(img, dtype=np.uint8)


def center_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """`(top, left, side)` of the centred square crop of an image."""
    s = min(height, width)
    return (height - s) // 2, (width - s) // 2, s
