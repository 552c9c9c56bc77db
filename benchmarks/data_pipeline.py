#!/usr/bin/env python
"""Benchmark the training data pipeline; writes JSON.

Measures images per second of TrainLoader (decode, resize, patchify, split, pack, float
batches) with 0, 1 and 2 DataLoader workers on (a) the demo classification shards and
(b) shards of natural-looking JPEGs (1/f-noise colour images, quality 90, sides 64-320),
and packing efficiency (real tokens / slots) of the context and target segments at the
paper's settings (max side 256, 128 + 192 tokens, 64 rows per pack), on those shards and
on ImageNet-like image sizes (short side 256, common aspect ratios; sizes only), the latter
also with `data.packing_rebalance: false` (every image keeps its drawn split).
"""

from __future__ import annotations

import argparse
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data.demo_classification import write_classification_demo  # noqa: E402
from featnorm.data.imagefolder import pack_imagefolder  # noqa: E402
from featnorm.data.packing import PackItem, Packer, packing_efficiency  # noqa: E402
from featnorm.data.resize import random_resize_shape  # noqa: E402
from featnorm.data.shards import ShardWriter  # noqa: E402
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader, num_images  # noqa: E402
from featnorm.data.windows import context_window_range  # noqa: E402

PAPER = PipelineSpec.defaults()  # max side 256, 128 + 192 tokens, 64 rows per pack


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


def packs_on_shards(shards: Path) -> dict:
    loader = TrainLoader(shards, PAPER, batch_size=64, seed=0)
    effs = []
    for d in loader.packs(0):
        if d["token_ids"].shape[0] == 64 and len(effs) < 10**6:
            effs.append(packing_efficiency(d["token_ids"], d["context_length"]))
    e = np.array(effs[:-1]) if len(effs) > 1 else np.array(effs)  # the last full pack may hold the flush
    return {"packs": len(e), "context": float(e[:, 0].mean()), "target": float(e[:, 1].mean())}


def packs_imagenet_like(n: int = 30000, seed: int = 0, rebalance: bool = True) -> dict:
    """`rebalance=False`: the packer keeps every image's drawn split (data.packing_rebalance)."""
    rng = np.random.default_rng(seed)
    packer = Packer(64, 128, 192, 2, 3, rebalance=rebalance)
    effs, drawn, used = [], [], []
    items = {}
    t = time.perf_counter()
    for i in range(n):
        a = rng.choice([4 / 3, 4 / 3, 4 / 3, 1.0, 3 / 4, 1.5, 1.25])
        h, w = (256, int(256 * a)) if a >= 1 else (int(256 / a), 256)
        hh, ww = random_resize_shape(h, w, rng, 64, 256, 32)
        gh, gw = hh // 16, ww // 16
        tw = gh * gw // 4
        lo, hi = context_window_range(tw, 0.25, 0.5, 32, 48)
        d = int(rng.integers(lo, hi + 1))
        items[i] = (d, tw)
        packer.add(PackItem(np.zeros((gh * gw, 3), np.uint8), gh, gw, rng.permutation(tw), lo, hi, d, key=i))
        if packer.ready():
            p = packer.pack()
            effs.append(packing_efficiency(p.token_ids, 128))
            for k, c in zip(p.keys, p.num_context):
                drawn.append(items[k][0] / items[k][1])
                used.append(c / items[k][1])
    dt = time.perf_counter() - t
    e = np.array(effs[2:])
    return {"images": n, "packs": len(e), "context": float(e[:, 0].mean()), "target": float(e[:, 1].mean()),
            "context_min": float(e[:, 0].min()), "target_min": float(e[:, 1].min()),
            "mean_context_fraction_drawn": float(np.mean(drawn)), "mean_context_fraction_packed": float(np.mean(used)),
            "packer_images_per_s": round(n / dt, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/out/data_pipeline.json")
    ap.add_argument("--workdir", default=None, help="where to build the shards (default: a temp dir)")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=320)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        demo, natural = work / "demo_shards", work / "natural_shards"
        if not (demo / "manifest.json").is_file():
            write_classification_demo(work / "demo_folder", seed=0, n_train=a.images, n_val=0)
            pack_imagefolder(work / "demo_folder" / "train", demo, "train", shard_bytes=4 << 20)
        if not (natural / "manifest.json").is_file():
            make_natural_shards(natural, a.images)
        result = {"host": platform.node(), "cpus": os.cpu_count(), "settings": {"max_side": 256, "context": 128, "target": 192, "rows_per_pack": 64, "batch_size": a.batch_size}}
        for name, path in (("demo", demo), ("natural_jpeg", natural)):
            result[name] = {
                "throughput": [throughput(path, int(w), a.epochs, a.batch_size) for w in a.workers.split(",")],
                "packing": packs_on_shards(path),
            }
            print(name, json.dumps(result[name]), flush=True)
        result["packing_imagenet_like_sizes"] = packs_imagenet_like()
        result["packing_imagenet_like_sizes_no_rebalance"] = packs_imagenet_like(rebalance=False)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["packing_imagenet_like_sizes"]))
    print(json.dumps(result["packing_imagenet_like_sizes_no_rebalance"]))


if __name__ == "__main__":
    main()
