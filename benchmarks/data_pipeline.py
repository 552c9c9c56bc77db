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
These runs use the paper's settings (max side 256, 128 + 192 tokens, 64 rows per pack) with
the default packing (first fit); each set also gets that packing's fill (real tokens / slots).

Then the packing-mode table (benchmarks/packing_modes.py): first fit, best fit and best fit
with `data.packing_rebalance`, at the paper's and the demo's settings, on ImageNet-like
image sizes (sizes only) and on the demo shards: segment fill, images per row, context
fraction as drawn and as packed.

    python benchmarks/data_pipeline.py [--out benchmarks/out/data_pipeline.json] [--workers 0,1,2]
        [--sets demo,natural,imagenet] [--decoders pil,torchvision] [--images 2000]
        [--packing-images 30000] [--packing-only | --no-packing-stats]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))  # featnorm without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # packing_modes.py, also when not run as a script

from featnorm.data.demo_classification import write_classification_demo  # noqa: E402
from featnorm.data.imagefolder import pack_imagefolder  # noqa: E402
from featnorm.data.packing import packing_efficiency  # noqa: E402
from featnorm.data.shards import ShardWriter, iter_samples, resolve_shards  # noqa: E402
from featnorm.data.train_pipeline import PipelineSpec, TrainLoader, image_bytes, make_item, num_images  # noqa: E402
from packing_modes import PAPER, demo_spec, imagenet_like_size, packing_table, packs_on_shards  # noqa: E402


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
    h, w = imagenet_like_size(rng)
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


SET_KEYS = {"demo": "demo", "natural": "natural_jpeg", "imagenet": "imagenet"}  # shard set -> its key in the JSON


def build_shards(work: Path, sets: set[str], images: int) -> dict[str, Path]:
    """The shard sets named in `sets` under `work` (kept if already there)."""
    paths = {name: work / f"{name}_shards" for name in SET_KEYS}
    if "demo" in sets and not (paths["demo"] / "manifest.json").is_file():
        write_classification_demo(work / "demo_folder", seed=0, n_train=images, n_val=0)
        pack_imagefolder(work / "demo_folder" / "train", paths["demo"], "train", shard_bytes=4 << 20)
    if "natural" in sets and not (paths["natural"] / "manifest.json").is_file():
        make_natural_shards(paths["natural"], images)
    if "imagenet" in sets and not (paths["imagenet"] / "manifest.json").is_file():
        make_imagenet_shards(paths["imagenet"], images)
    return paths


def loader_runs(path: Path, decoders: list[str], workers: list[int], epochs: int, batch_size: int, packing: bool) -> dict:
    """Per-worker rate and end-to-end throughput per decoder, the training process's share,
    and (`packing`) the default packing's fill on these shards."""
    r = {}
    for dec in decoders:
        spec = dataclasses.replace(PAPER, decode=dec)
        r[dec] = {"per_worker": worker_rate(path, spec, epochs),
                  "throughput": [throughput(path, w, epochs, batch_size, spec) for w in workers]}
    r["training_process"] = [assembly_rate(path, PAPER, px, batch_size) for px in ("float", "uint8")]
    if packing:
        r["packing"] = packs_on_shards(path, PAPER)
    return r


def sizing(result: dict, sets: list[str], decoders: list[str], target: float) -> dict:
    """What a GPU node needs: workers at each decoder's per-worker rate, and headroom in the
    training process (uint8 batches on CUDA); from the ImageNet-sized set when measured."""
    ref = "imagenet" if "imagenet" in sets else sets[0]
    rr = result[SET_KEYS[ref]]
    per_worker = {dec: rr[dec]["per_worker"]["images_per_cpu_s"] for dec in decoders}
    assembly = {x["pixels"]: x["images_per_cpu_s"] for x in rr["training_process"]}
    return {
        "on": ref, "target_images_per_s": target, "per_worker_images_per_cpu_s": per_worker,
        "best_decoder": max(per_worker, key=per_worker.get),
        "workers_needed": {dec: int(np.ceil(target / v)) for dec, v in per_worker.items() if v > 0},
        "training_process_images_per_cpu_s": assembly,
        "training_process_load_at_target": {px: round(target / v, 3) for px, v in assembly.items() if v > 0},
    }


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
    ap.add_argument("--packing-images", type=int, default=30000,
                    help="ImageNet-like sizes packed per mode and setting in the packing-mode table")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--packing-only", action="store_true", help="only the packing-mode table (no loader runs)")
    only.add_argument("--no-packing-stats", action="store_true",
                      help="skip the packing statistics (the per-set fill and the packing-mode table)")
    a = ap.parse_args(argv)
    sets = [] if a.packing_only else [x for x in a.sets.split(",") if x]
    decoders = [x for x in a.decoders.split(",") if x]
    workers = [int(w) for w in a.workers.split(",") if w != ""]
    if unknown := [x for x in sets if x not in SET_KEYS] + [x for x in decoders if x not in ("pil", "torchvision")]:
        ap.error(f"unknown set or decoder {unknown}: --sets takes {','.join(SET_KEYS)}, --decoders pil,torchvision")
    if not a.packing_only and not (sets and decoders):
        ap.error("--sets and --decoders need at least one entry each (or --packing-only)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir or tmp)
        t0 = time.perf_counter()
        paths = build_shards(work, set(sets) | (set() if a.no_packing_stats else {"demo"}), a.images)
        result = {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                  "load_average_1min": os.getloadavg()[0], "shard_build_seconds": round(time.perf_counter() - t0, 1),
                  "settings": {"paper": dataclasses.asdict(PAPER), "batch_size": a.batch_size, "images": a.images}}
        for name in sets:
            r = loader_runs(paths[name], decoders, workers, a.epochs, a.batch_size, not a.no_packing_stats)
            result[SET_KEYS[name]] = r
            print(name, json.dumps(r), flush=True)
        if sets:
            result["sizing"] = sizing(result, sets, decoders, a.target)
            print("sizing", json.dumps(result["sizing"]), flush=True)
        if not a.no_packing_stats:
            result["settings"]["demo"] = dataclasses.asdict(demo_spec())
            result["packing"] = packing_table(paths["demo"], a.packing_images)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
