#!/usr/bin/env python
"""Benchmark the training data pipeline; writes JSON.

Throughput of TrainLoader (decode, random resize, patchify, window split, pack, batches)
end to end with 0, 1, 2, ... DataLoader workers, on (a) the demo classification shards,
(b) shards of natural-looking JPEGs (1/f-noise colour images, quality 90, sides 64-320) and
(c) ImageNet-sized ones (the author's shards: short side 256, ImageNet's aspect ratios),
for each JPEG decoder (`data.decode`: pil, torchvision). And the two costs that size a
GPU node's loading (issue 13):
  * per worker: images per CPU-second of a worker's job (read, decode, resize, patchify,
    split, pack; measured in one process, so the figure does not depend on other load);
    the workers a target rate needs = target / that rate;
  * in the training process: images per CPU-second of assembling batches from the workers'
    packs, float32 pixels (the CPU path) or uint8 (the CUDA path: pinned, scaled on the GPU).
Also packing efficiency (real tokens / slots) of the context and target segments at the
paper's settings (max side 256, 128 + 192 tokens, 64 rows per pack), on those shards and on
ImageNet-like image sizes (sizes only), the latter also with `data.packing_rebalance: false`.

    python benchmarks/data_pipeline.py [--out benchmarks/out/data_pipeline.json] [--workers 0,1,2]
        [--sets demo,natural,imagenet] [--decoders pil,torchvision] [--images 2000]
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.data.demo_classification import write_classification_demo  # noqa: E402
from featnorm.data.imagefolder import pack_imagefolder  # noqa: E402
from featnorm.data.packing import PackItem, Packer, packing_efficiency  # noqa: E402
from featnorm.data.resize import random_resize_shape  # noqa: E402
from featnorm.data.shards import ShardWriter  # noqa: E402
from featnorm.data.shards import resolve_shards  # noqa: E402
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader, image_bytes, make_item, num_images  # noqa: E402
from featnorm.data.windows import context_window_range  # noqa: E402

PAPER = PipelineSpec.defaults()  # max side 256, 128 + 192 tokens, 64 rows per pack


def natural_jpeg(rng: np.random.Generator) -> bytes:
    side = rng.uniform(64, 320)
    a = np.exp(rng.uniform(np.log(0.5), np.log(2)))
    h, w = int(np.clip(side * np.sqrt(a), 64, 320)), int(np.clip(side / np.sqrt(a), 64, 320))
    buf = io.BytesIO()
    Image.fromarray(natural_image(rng, h, w)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_natural_shards(out: Path, n: int, seed: int = 0) -> None:
    with ShardWriter(out, "train", shard_bytes=4 << 20) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "jpg": natural_jpeg(np.random.default_rng([seed, i])), "cls": "0"})


IMAGENET_ASPECTS = (4 / 3, 4 / 3, 4 / 3, 1.0, 3 / 4, 1.5, 1.25)  # width / height, ImageNet-like mix


def natural_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """`(h, w, 3)` uint8 1/f-noise colour image (natural-looking spectrum)."""
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None]
    amp = 1.0 / np.maximum(np.sqrt(fy**2 + fx**2), 1.0 / max(h, w))
    mix = rng.normal(size=(3, 3)) * 0.4 + np.eye(3)
    base = [np.fft.irfft2(amp * np.exp(2j * np.pi * rng.random((h, w // 2 + 1))), s=(h, w)) for _ in range(3)]
    chans = []
    for c in range(3):
        x = sum(mix[c, k] * base[k] for k in range(3))
        x = (x - x.mean()) / (x.std() + 1e-8)
        chans.append(x * rng.uniform(30, 60) + rng.uniform(60, 190))
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def imagenet_jpeg(rng: np.random.Generator) -> bytes:
    """A JPEG the size of the author's ImageNet shards: short side 256, ImageNet-like aspect, quality 90."""
    a = float(rng.choice(IMAGENET_ASPECTS))
    h, w = (256, int(256 * a)) if a >= 1 else (int(256 / a), 256)
    buf = io.BytesIO()
    Image.fromarray(natural_image(rng, h, w)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_imagenet_shards(out: Path, n: int, unique: int = 200, seed: int = 0) -> None:
    """`n` samples cycling through `unique` generated JPEGs (decoding cost is per image, not per content)."""
    jpegs = [imagenet_jpeg(np.random.default_rng([seed, i])) for i in range(min(unique, n))]
    with ShardWriter(out, "train", shard_bytes=8 << 20) as w:
        for i in range(n):
            w.write({"__key__": f"{i:06d}", "jpg": jpegs[i % len(jpegs)], "cls": "0"})


def worker_rate(shards: Path, spec: PipelineSpec, epochs: int) -> dict:
    """Images per CPU-second of a DataLoader worker's job, run in this process."""
    torch.set_num_threads(1)
    loader = TrainLoader(shards, spec, batch_size=64, seed=0, num_workers=0)
    # warm-up: the decoder's first call pays its imports (torchvision.io: about a second)
    from featnorm.data.shards import iter_samples

    first = next(iter_samples(resolve_shards(shards)[0]))
    make_item(image_bytes(first), "warmup", np.random.default_rng(0), spec)
    n = 0
    c = time.process_time()
    t = time.perf_counter()
    for e in range(epochs):
        for d in loader.packs(e):
            n += int(d["num_images"])
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    return {"images": n, "cpu_s": round(cpu, 2), "images_per_cpu_s": round(n / cpu, 1), "images_per_wall_s": round(n / wall, 1)}


def assembly_rate(shards: Path, spec: PipelineSpec, pixels: str, batch_size: int, repeats: int = 3) -> dict:
    """Images per CPU-second of the training process's share: batches from ready packs."""
    torch.set_num_threads(1)
    packs = list(TrainLoader(shards, spec, batch_size=batch_size, seed=0).packs(0))
    loader = TrainLoader(shards, spec, batch_size=batch_size, seed=0, pixels=pixels)
    loader.packs = lambda epoch: iter(packs)
    n = 0
    c = time.process_time()
    for _ in range(repeats):
        for b in loader.epoch_batches(0):
            n += num_images(b)
    cpu = time.process_time() - c
    return {"pixels": pixels, "images": n, "cpu_s": round(cpu, 3), "images_per_cpu_s": round(n / max(cpu, 1e-9), 1)}


def throughput(shards: Path, workers: int, epochs: int, batch_size: int, spec: PipelineSpec = PAPER) -> dict:
    torch.set_num_threads(1)
    loader = TrainLoader(shards, spec, batch_size=batch_size, seed=0, num_workers=workers)
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/out/data_pipeline.json")
    ap.add_argument("--workdir", default=None, help="where to build the shards (default: a temp dir)")
    ap.add_argument("--images", type=int, default=2000, help="images per shard set")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader workers of the end-to-end runs")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=320)
    ap.add_argument("--sets", default="demo,natural,imagenet", help="shard sets: demo, natural, imagenet")
    ap.add_argument("--decoders", default="pil,torchvision", help="data.decode values to measure")
    ap.add_argument("--target", type=float, default=5400.0, help="images/s the loading must sustain (issue 13)")
    ap.add_argument("--no-packing-stats", action="store_true", help="skip the packing-efficiency statistics")
    a = ap.parse_args(argv)
    sets = [x for x in a.sets.split(",") if x]
    decoders = [x for x in a.decoders.split(",") if x]
    workers = [int(w) for w in a.workers.split(",") if w != ""]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        paths = {"demo": work / "demo_shards", "natural": work / "natural_shards", "imagenet": work / "imagenet_shards"}
        t0 = time.perf_counter()
        if "demo" in sets and not (paths["demo"] / "manifest.json").is_file():
            write_classification_demo(work / "demo_folder", seed=0, n_train=a.images, n_val=0)
            pack_imagefolder(work / "demo_folder" / "train", paths["demo"], "train", shard_bytes=4 << 20)
        if "natural" in sets and not (paths["natural"] / "manifest.json").is_file():
            make_natural_shards(paths["natural"], a.images)
        if "imagenet" in sets and not (paths["imagenet"] / "manifest.json").is_file():
            make_imagenet_shards(paths["imagenet"], a.images)
        result = {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                  "load_average_1min": os.getloadavg()[0], "shard_build_seconds": round(time.perf_counter() - t0, 1),
                  "settings": {"max_side": PAPER.max_side, "context": PAPER.max_context_tokens, "target": PAPER.max_target_tokens,
                               "rows_per_pack": PAPER.rows_per_pack, "batch_size": a.batch_size, "images": a.images}}
        for name in sets:
            path = paths[name]
            r = {}
            for dec in decoders:
                spec = dataclasses.replace(PAPER, decode=dec)
                r[dec] = {
                    "per_worker": worker_rate(path, spec, a.epochs),
                    "throughput": [throughput(path, w, a.epochs, a.batch_size, spec) for w in workers],
                }
            r["training_process"] = [assembly_rate(path, PAPER, px, a.batch_size) for px in ("float", "uint8")]
            if not a.no_packing_stats:
                r["packing"] = packs_on_shards(path)
            result[{"natural": "natural_jpeg"}.get(name, name)] = r
            print(name, json.dumps(r), flush=True)
        # What a GPU node needs: workers at the best decoder's per-worker rate, and headroom in the
        # training process (uint8 batches on CUDA).
        ref = "imagenet" if "imagenet" in sets else sets[0]
        rr = result[{"natural": "natural_jpeg"}.get(ref, ref)]
        per_worker = {dec: rr[dec]["per_worker"]["images_per_cpu_s"] for dec in decoders}
        best = max(per_worker, key=per_worker.get)
        assembly = {x["pixels"]: x["images_per_cpu_s"] for x in rr["training_process"]}
        result["sizing"] = {
            "on": ref, "target_images_per_s": a.target, "per_worker_images_per_cpu_s": per_worker, "best_decoder": best,
            "workers_needed": {dec: int(np.ceil(a.target / v)) for dec, v in per_worker.items() if v > 0},
            "training_process_images_per_cpu_s": assembly,
            "training_process_load_at_target": {px: round(a.target / v, 3) for px, v in assembly.items() if v > 0},
        }
        print("sizing", json.dumps(result["sizing"]), flush=True)
        if not a.no_packing_stats:
            result["packing_imagenet_like_sizes"] = packs_imagenet_like()
            result["packing_imagenet_like_sizes_no_rebalance"] = packs_imagenet_like(rebalance=False)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    if not a.no_packing_stats:
        print(json.dumps(result["packing_imagenet_like_sizes"]))
        print(json.dumps(result["packing_imagenet_like_sizes_no_rebalance"]))


if __name__ == "__main__":
    main()
