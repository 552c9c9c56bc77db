"""The packing-mode table of benchmarks/data_pipeline.py (a helper module, not a script).

For each packing mode (`first-fit`, the default and the reference's; `best-fit`; `best-fit`
with `packing_rebalance`) at the paper's settings (max side 256, 128 + 192 tokens, 64 rows
per pack) and the demo's (config/demo.yaml: max side 128, 32 + 48 tokens, 16 rows per
pack): the fill of the context and target segments (real tokens / slots), images per row,
and the mean context fraction (context windows / windows per image) as drawn and as
packed, on ImageNet-like image sizes (short side 256, common aspect ratios; sizes only)
and on the demo shards (the real pipeline). The first packs and the last, partial one are
left out (the best-fit buffer fills up first).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import yaml

from featnorm.config import run_config_from_dict
from featnorm.data.packing import PackItem, packing_efficiency
from featnorm.data.resize import random_resize_shape
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader
from featnorm.data.windows import context_window_range
from featnorm.tokens import PAD_ID, SAMPLE

REPO = Path(__file__).resolve().parents[1]
PAPER = PipelineSpec.defaults()  # max side 256, 128 + 192 tokens, 64 rows per pack
PACKINGS = {"first-fit": {"packing": "first-fit"}, "best-fit": {"packing": "best-fit"},
            "best-fit-rebalance": {"packing": "best-fit", "packing_rebalance": True}}
IMAGENET_ASPECTS = (4 / 3, 4 / 3, 4 / 3, 1.0, 3 / 4, 1.5, 1.25)  # width / height, ImageNet-like mix


def imagenet_like_size(rng: np.random.Generator) -> tuple[int, int]:
    """`(height, width)` of an image of the author's ImageNet shards: short side 256."""
    a = float(rng.choice(IMAGENET_ASPECTS))
    return (256, int(256 * a)) if a >= 1 else (int(256 / a), 256)


def demo_spec() -> PipelineSpec:
    """The data settings of config/demo.yaml's `defaults` (max side 128, 32 + 48 tokens, 16 rows)."""
    defaults = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["defaults"]
    return PipelineSpec.from_config(run_config_from_dict(defaults))


def _summary(packs: list[dict], skip: int = 2) -> dict:
    """Mean fill, images per row and context fractions over full packs, the first `skip` and
    the last (the flush) left out."""
    rows = packs[0]["rows"]
    full = [p for p in packs[:-1] if p["rows"] == rows][skip:]
    if not full:
        return {"packs": 0}
    ctx = [f for p in full for f in p["context_fraction_packed"]]
    out = {
        "packs": len(full),
        "rows_per_pack": rows,
        "images": sum(p["images"] for p in full),
        "context_fill": float(np.mean([p["fill"][0] for p in full])),
        "target_fill": float(np.mean([p["fill"][1] for p in full])),
        "context_fill_min": float(np.min([p["fill"][0] for p in full])),
        "target_fill_min": float(np.min([p["fill"][1] for p in full])),
        "images_per_row": sum(p["images"] for p in full) / sum(p["rows"] for p in full),
        "mean_context_fraction_packed": float(np.mean(ctx)),
    }
    drawn = [f for p in full for f in p.get("context_fraction_drawn", [])]
    if drawn:
        out["mean_context_fraction_drawn"] = float(np.mean(drawn))
    return out


def _packed_fractions(token_ids: np.ndarray, context_length: int) -> list[float]:
    """Context windows / windows of every image of a pack (from its token ids)."""
    s = np.asarray(token_ids)[..., SAMPLE]
    ids = s[s != PAD_ID]
    total = np.bincount(ids)
    ctx = np.bincount(s[:, :context_length][s[:, :context_length] != PAD_ID], minlength=len(total))
    return (ctx[total > 0] / total[total > 0]).tolist()


def packs_on_shards(shards: Path, spec: PipelineSpec) -> dict:
    """The real pipeline (decode, resize, split, pack) over one epoch of `shards`."""
    loader = TrainLoader(shards, spec, batch_size=spec.rows_per_pack, seed=0)
    packs = []
    for d in loader.packs(0):
        packs.append({"rows": d["token_ids"].shape[0], "images": int(d["num_images"]),
                      "fill": packing_efficiency(d["token_ids"], d["context_length"]),
                      "context_fraction_packed": _packed_fractions(d["token_ids"], d["context_length"])})
    return _summary(packs)


def packs_imagenet_like(spec: PipelineSpec, n: int = 30000, seed: int = 0) -> dict:
    """Packing only (zero pixels) of `n` images of ImageNet-like sizes under `spec`."""
    rng = np.random.default_rng(seed)
    packer = spec.packer()
    unit = spec.patch_size * spec.window_size
    w2 = spec.window_size**2
    lc = spec.segments[0]
    packs, drawn = [], {}
    t = time.perf_counter()

    def record(p):
        packs.append({"rows": p.pixels.shape[0], "images": p.num_images, "fill": packing_efficiency(p.token_ids, lc),
                      "context_fraction_packed": [c / w for c, w in zip(p.num_context, p.num_windows)],
                      "context_fraction_drawn": [drawn.pop(k) for k in p.keys]})

    for i in range(n):
        h, w = imagenet_like_size(rng)
        hh, ww = random_resize_shape(h, w, rng, spec.min_side, spec.max_side, unit, spec.max_pixels)
        gh, gw = hh // spec.patch_size, ww // spec.patch_size
        tw = (gh // spec.window_size) * (gw // spec.window_size)
        lo, hi = context_window_range(tw, spec.context_ratio_min, spec.context_ratio_max,
                                      spec.max_context_tokens // w2, spec.max_target_tokens // w2)
        d = int(rng.integers(lo, hi + 1))
        drawn[i] = d / tw
        pixels = np.broadcast_to(np.zeros((1, 1), np.uint8), (gh * gw, spec.patch_dim))  # sizes only
        packer.add(PackItem(pixels, gh, gw, rng.permutation(tw), lo, hi, d, key=i))
        if packer.ready():
            record(packer.pack())
    dt = time.perf_counter() - t
    for p in packer.flush():
        record(p)
    return {**_summary(packs), "source_images": n, "packer_images_per_s": round(n / dt, 1)}


def packing_table(demo_shards: Path, images: int) -> dict:
    """Every packing mode at the paper's and the demo's settings, keyed `setting/mode`."""
    out = {}
    for setting, base in (("paper", PAPER), ("demo", demo_spec())):
        for mode, change in PACKINGS.items():
            spec = dataclasses.replace(base, **change)
            out[f"{setting}/{mode}"] = {
                "imagenet_like_sizes": packs_imagenet_like(spec, n=images),
                "demo_shards": packs_on_shards(demo_shards, spec),
            }
            print(setting, mode, json.dumps(out[f"{setting}/{mode}"]), flush=True)
    return out
