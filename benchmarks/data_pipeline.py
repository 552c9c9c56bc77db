#!/usr/bin/env python
"""Benchmark the training data pipeline; writes JSON.

Throughput: images per second of TrainLoader (decode, resize, patchify, split, pack, float
batches) with 0, 1 and 2 DataLoader workers on (a) the demo classification shards and
(b) shards of natural-looking JPEGs (1/f-noise colour images, quality 90, sides 64-320),
at the paper's settings with the default packing.

Packing: for each packing mode (`first-fit`, the default and the reference's; `best-fit`;
`best-fit` with `packing_rebalance`) at the paper's settings (max side 256, 128 + 192
tokens, 64 rows per pack) and the demo's (config/demo.yaml: max side 128, 32 + 48 tokens,
16 rows per pack): the fill of the context and target segments (real tokens / slots),
images per row, and the mean context fraction (context windows / windows per image) as
drawn and as packed, on ImageNet-like image sizes (short side 256, common aspect ratios;
sizes only) and on the demo shards (the real pipeline). The first packs and the last,
partial one are left out (the best-fit buffer fills up first).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data.demo_classification import write_classification_demo  # noqa: E402
from featnorm.data.imagefolder import pack_imagefolder  # noqa: E402
from featnorm.config import run_config_from_dict  # noqa: E402
from featnorm.data.packing import PackItem, packing_efficiency  # noqa: E402
from featnorm.data.resize import random_resize_shape  # noqa: E402
from featnorm.data.shards import ShardWriter  # noqa: E402
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader, num_images  # noqa: E402
from featnorm.data.windows import context_window_range  # noqa: E402
from featnorm.tokens import PAD_ID, SAMPLE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER = PipelineSpec.defaults()  # max side 256, 128 + 192 tokens, 64 rows per pack
PACKINGS = {"first-fit": {"packing": "first-fit"}, "best-fit": {"packing": "best-fit"},
            "best-fit-rebalance": {"packing": "best-fit", "packing_rebalance": True}}


def demo_spec() -> PipelineSpec:
    """The data settings of config/demo.yaml's `defaults` (max side 128, 32 + 48 tokens, 16 rows)."""
    defaults = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["defaults"]
    return PipelineSpec.from_config(run_config_from_dict(defaults))


def natural_jpeg(rng: np.random.Generator) -> bytes:
    side = rng.uniform(64, 320)
    a = np.exp(rng.uniform(np.log(0.5), np.log(2)))
    h, w = int(np.clip(side * np.sqrt(a), 64, 320)), int(np.clip(side / np.sqrt(a), 64, 320))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
    amp = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w))
    chans = []
    mix = rng.normal(size=(3, 3)) * 0.4 + np.eye(3)
    base = [np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random((h, w // 2 + 1))), s=(h, w)) for _ in range(3)]
    for c in range(3):
        x = sum(mix[c, k] * base[k] for k in range(3))
        x = (x - x.mean()) / (x.std() + 1e-8)
        chans.append(x * rng.uniform(30, 60) + rng.uniform(60, 190))
    img = np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_natural_shards(out: Path, n: int, seed: int = 0) -> None:
    with ShardWriter(out, "train", shard_bytes=4 << 20) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "jpg": natural_jpeg(np.random.default_rng([seed, i])), "cls": "0"})


def throughput(shards: Path, workers: int, epochs: int, batch_size: int) -> dict:
    torch.set_num_threads(1)
    loader = TrainLoader(shards, PAPER, batch_size=batch_size, seed=0, num_workers=workers)
    t = time.perf_counter()
    c = time.process_time()
    load = os.getloadavg()[0]
    n = 0
    effs = []
    for e in range(epochs):
        for b in loader.epoch_batches(e):
            n += num_images(b)
            if b.pixels.shape[0] == batch_size:
                effs.append(packing_efficiency(b.token_ids, b.context_length))
    dt = time.perf_counter() - t
    cpu = time.process_time() - c
    eff = np.array(effs).mean(0).tolist() if effs else [None, None]
    # On a shared machine wall-clock rates depend on the other load; with 0 workers the
    # main process's CPU time is the whole cost, so images per CPU-second is the
    # load-independent figure (single core).
    return {"workers": workers, "images": n, "seconds": round(dt, 2), "images_per_s": round(n / dt, 1),
            "main_process_cpu_s": round(cpu, 2), "images_per_main_cpu_s": round(n / cpu, 1),
            "load_average_before": round(load, 2),
            "efficiency_full_batches": {"context": eff[0], "target": eff[1]}}


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
        a = rng.choice([4 / 3, 4 / 3, 4 / 3, 1.0, 3 / 4, 1.5, 1.25])
        h, w = (256, int(256 * a)) if a >= 1 else (int(256 / a), 256)
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
    """Every packing mode at the paper's and the demo's settings."""
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/out/data_pipeline.json")
    ap.add_argument("--workdir", default=None, help="where to build the shards (default: a temp dir)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=320)
    ap.add_argument("--packing-images", type=int, default=30000, help="ImageNet-like sizes packed per mode and setting")
    ap.add_argument("--packing-only", action="store_true", help="skip the throughput runs")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        demo, natural = work / "demo_shards", work / "natural_shards"
        if not (demo / "manifest.json").is_file():
            write_classification_demo(work / "demo_folder", seed=0, n_train=a.images, n_val=0)
            pack_imagefolder(work / "demo_folder" / "train", demo, "train", shard_bytes=4 << 20)
        result = {"host": platform.node(), "cpus": os.cpu_count(),
                  "settings": {"paper": dataclasses.asdict(PAPER), "demo": dataclasses.asdict(demo_spec()),
                               "batch_size": a.batch_size}}
        if not a.packing_only:
            if not (natural / "manifest.json").is_file():
                make_natural_shards(natural, a.images)
            for name, path in (("demo", demo), ("natural_jpeg", natural)):
                result[name] = {"throughput": [throughput(path, int(w), a.epochs, a.batch_size) for w in a.workers.split(",")]}
                print(name, json.dumps(result[name]), flush=True)
        result["packing"] = packing_table(demo, a.packing_images)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
