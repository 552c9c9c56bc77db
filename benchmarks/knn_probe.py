#!/usr/bin/env python
"""Benchmark the k-NN probe (featnorm.evaluation.knn_probe); writes JSON.

Random float16 features (what the feature cache holds), 1000 classes, k = 20, all depths:
the demo's size (2,000 train / 500 val, 5 depths x 96), a mid size, and on a GPU an
ImageNet-sized problem (1,281,167 train / 50,000 val, one depth x 384; the probe's cost is
per depth, so 13 depths take 13 times as long). Also the seconds per 10^12 similarity
multiply-adds, to extrapolate: ImageNet is 1.28M x 50k x 384 = 2.5e13 per depth.

    python benchmarks/knn_probe.py [--device cpu|cuda] [--threads N] [--out benchmarks/out/knn_probe.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.evaluation.knn_probe import knn_probe  # noqa: E402

CPU_CASES = [  # (name, train, val, depths, dim)
    ("demo", 2000, 500, 5, 96),
    ("mid", 50_000, 5_000, 1, 384),
]
GPU_CASES = CPU_CASES + [("imagenet_one_depth", 1_281_167, 50_000, 1, 384)]


def time_case(train: int, val: int, depths: int, dim: int, device: str, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    tx = torch.randn(train, depths, dim, generator=g).half()
    vx = torch.randn(val, depths, dim, generator=g).half()
    ty = torch.randint(0, 1000, (train,), generator=g)
    vy = torch.randint(0, 1000, (val,), generator=g)
    knn_probe(tx[:2000], ty[:2000], vx[:100], vy[:100], device=device, num_classes=1000)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        knn_probe(tx, ty, vx, vy, device=device, num_classes=1000)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    best = min(times)
    macs = train * val * dim * depths
    return {"train": train, "val": val, "depths": depths, "dim": dim, "seconds": best, "all_seconds": times,
            "seconds_per_1e12_macs": best / (macs / 1e12)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "knn_probe.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = GPU_CASES if args.device.startswith("cuda") else CPU_CASES
    results = {}
    for name, train, val, depths, dim in cases:
        results[name] = time_case(train, val, depths, dim, args.device, args.repeats if train < 10**6 else 1)
        print(name, json.dumps(results[name]), flush=True)
    out = {
        "benchmark": "knn_probe", "device": args.device, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.platform(), "processor": platform.processor(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "k": 20, "classes": 1000, "cases": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
