"""The random-resize rule of the training pipeline (SPEC section 2, steps 1-2), and decoding.

`random_resize_shape` only does arithmetic on sizes; `decode_resized` decodes an image
straight to that size. For JPEGs it asks the decoder for a DCT-downscaled draft first
(`Image.draft`), which makes decoding several times faster for images much larger than
the target; the draft is never smaller than the target, so the result is a true
bilinear downscale.

`decode_resized_torchvision` (`data.decode: torchvision`) decodes with torchvision's
libjpeg-turbo binding (`torchvision.io.decode_jpeg`, no draft: always the full image) and
resizes with torchvision's antialiased bilinear filter: the same pixels as PIL's full
decode + bilinear resize to within one grey level. PIL's draft is another antialiasing
filter: where it applies (a downscale by 2x or more) images differ from the full decode's
by a few grey levels on average. benchmarks/data_pipeline.py measures both decoders.
torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work in
the pinned 0.29.1.
"""

from __future__ import annotations

import io
import math
import warnings

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


def decode_resized_torchvision(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Decode encoded image bytes with torchvision and resize them bilinearly (antialiased)
    to `size = (height, width)`: `(height, width, 3)` uint8. Like PIL here, EXIF orientation
    is not applied."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    from torchvision.transforms.v2.functional import resize

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for TorchCodec; they still work (constraints.txt pins 0.29.1)
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated")
        if data[:2] == b"\xff\xd8":  # JPEG
            img = decode_jpeg(raw, mode=ImageReadMode.RGB)
        else:
            img = decode_image(raw, mode=ImageReadMode.RGB)
    if tuple(img.shape[1:]) != tuple(size):
        img = resize(img, list(size), antialias=True)
    return img.permute(1, 2, 0).contiguous().numpy()


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
