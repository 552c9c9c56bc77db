"""Pack an image folder (one sub-folder per class) into WebDataset shards: keys `jpg`, `cls`.

Class indices come from the sorted sub-folder names (or a given `classes.json` list, so a
val split uses the train split's mapping) and are saved as `classes.json` next to the
shards. Samples are written in a fixed seeded order (classes interleaved, so a shuffle
buffer sees all classes). JPEG files are copied byte for byte; other formats are
converted to RGB JPEG (quality 90); `max_short_side` optionally downsizes first, as the
paper author's ImageNet shards (short side 256).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .shards import ShardWriter

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG"}


def list_classes(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"image folder {root} has no class sub-folders")
    return classes


def _jpeg(path: Path, max_short_side: int | None) -> bytes:
    data = path.read_bytes()
    if data[:3] == b"\xff\xd8\xff" and max_short_side is None:
        return data
    img = Image.open(io.BytesIO(data))
    img = img.convert("RGB")
    if max_short_side is not None and min(img.size) > max_short_side:
        w, h = img.size
        s = max_short_side / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    elif data[:3] == b"\xff\xd8\xff":
        return data
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pack_imagefolder(
    root: str | Path,
    out: str | Path,
    split: str,
    shard_bytes: int = 1 << 30,
    classes: list[str] | str | Path | None = None,
    max_short_side: int | None = None,
    seed: int = 0,
) -> dict:
    """Write `<out>/<split>-NNNNN.tar`, `manifest.json` and `classes.json`; returns the manifest."""
    root, out = Path(root), Path(out)
    if isinstance(classes, (str, Path)):
        classes = json.loads(Path(classes).read_text())
    classes = list(classes) if classes is not None else list_classes(root)
    index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[Path, int]] = []
    for c in list_classes(root):
        if c not in index:
            raise ValueError(f"class folder {root / c} is not in the class list ({len(classes)} classes)")
        files += [(p, index[c]) for p in sorted((root / c).iterdir()) if p.suffix in EXTENSIONS]
    if not files:
        raise FileNotFoundError(f"image folder {root} holds no images")
    order = np.random.default_rng(seed).permutation(len(files))
    out.mkdir(parents=True, exist_ok=True)
    with ShardWriter(out, split, shard_bytes, split=split, extra={"source": "imagefolder", "num_classes": len(classes)}) as w:
        for k, i in enumerate(order):
            path, label = files[i]
            w.write({"__key__": f"{k:08d}", "jpg": _jpeg(path, max_short_side), "cls": str(label)})
    (out / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
    return json.loads((out / "manifest.json").read_text())
