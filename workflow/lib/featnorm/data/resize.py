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
import warnings

import numpy as np
from PIL import Image


def keep_image(height: int, width: int, min_side: int) -> bool:
    """Step 1: drop images whose mean side is below `min_side`."""
    return (height + width) / 2 >= min_side


def random_resize_shape(
    height: int,
    width: int,
    rng: np.random.Generator,
    min_side: int,
    max_side: int,
    multiple: int,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """Step 2: a random target `(height, width)` keeping the aspect ratio (the reference's rule).

    1. An integer side length s is drawn uniformly in [min_side, min(round(mean side), max_side)].
    2. Both sides are scaled by s / mean side (floats).
    3. If that holds more than `max_pixels` pixels (default max_side**2), both sides are
       scaled down to the cap and truncated to integers.
    4. Each side is rounded to a multiple of `multiple` (patch_size x window_size) with
       Python's `round` (half to even: 4.5 multiples -> 4), then kept in
       [1, max_side // multiple] multiples.
    5. While the short side has fewer than 2 multiples, one multiple is added to **both**
       sides (an aspect-ratio-preserving nudge of the reference). For images more than
       about 3 times wider than tall (or taller than wide) the long side can then be one
       multiple above max_side, e.g. 64 x 288 at max_side 256. We keep that, as the
       reference (its fixtures hold such sizes): the short side is then exactly 2 multiples,
       so such an image has at most 2 x (max_side // multiple + 1) windows, fewer than a
       max_side x max_side image whenever max_side holds 3 or more multiples (18 vs 64
       windows at the paper's settings, 10 vs 16 at the demo's); its context and target
       fit the rows (tests/test_data_resize.py). Patch positions then reach
       (max_side + multiple) / patch_size - 1 along the long side.

    Rounding uses `round(x)` of Python, which rounds exact halves to the even integer; the
    draw is an integer, as the reference's `randint`. The random stream itself differs
    (NumPy here, Python's `random` there), so only the distribution of sizes can match.
    """
    mean_side = (height + width) / 2
    hi = min(int(round(mean_side)), max_side)
    if hi < min_side:
        raise ValueError(
            f"image {height}x{width} has mean side {mean_side} < min_side {min_side}; filter it with keep_image first"
        )
    side = int(rng.integers(min_side, hi + 1)) if hi > min_side else hi
    scale = side / mean_side
    h, w = height * scale, width * scale
    cap = max_side * max_side if max_pixels is None else max_pixels
    if h * w > cap:
        shrink = (cap / (w * h)) ** 0.5
        h, w = int(h * shrink), int(w * shrink)
    # the reference clamps to max_side itself; rounding that down to a multiple only differs
    # when max_side is not one (the reference's sizes would then not split into windows)
    top = max(1, max_side // multiple)
    gh = min(max(int(round(h / multiple)), 1), top)
    gw = min(max(int(round(w / multiple)), 1), top)
    while min(gh, gw) < 2:
        gh, gw = gh + 1, gw + 1
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
