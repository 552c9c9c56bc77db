#!/usr/bin/env python
"""Throughput of full training steps: forward, backward, AdamW, EMA (issues 4 and 13).

For three models - (a) the comparison config of issue 4, (b) the demo model, (c) the paper's
ViT-S - and two batch layouts - packed rows (several images per row, the data pipeline's
packer) and one image per row padded to the batch's longest context and target - it
measures images/s and real tokens/s of `Trainer.train_step` on preloaded batches, the
model FLOPs of each step (featnorm.train.flops), the achieved TFLOP/s and MFU (against the
device's bf16 dense peak, featnorm.train.throughput), and the peak memory (resident memory
of the process on the CPU, allocated GPU memory on CUDA). Each measured configuration runs
in a fresh subprocess (its own peak memory; a crash or a `--timeout` is recorded, not fatal).

    python benchmarks/train_step.py [--out benchmarks/out/train_step.json] [--steps N]
    # the paper step on a GPU: bf16, 320 rows, eager vs compile, sdpa vs flex
    python benchmarks/train_step.py --device cuda --precision bf16 --models paper_vits --layouts packed \
        --rows 320 --backends sdpa flex --compile-modes eager compile --timeout 150

Defaults (CPU, float32, 2 threads, sdpa, eager) reproduce issue 4's CPU figures. Images
are synthetic (random pixels; speed does not depend on content) with sides drawn uniformly
in [min_side, 2 x max_side] and aspect 0.5-2, resized, split and packed by featnorm.data
exactly as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))  # featnorm without installing

MODELS = {
    # (a) issue 4's comparison config: the reference does ~200 images/s (6,800 real tokens/s) here.
    "comparison": {
        "model": {
            "patch_size": 16, "window_size": 2,
            "encoder": {"dim": 192, "depth": 4, "num_heads": 3, "qk_norm": "layernorm", "block_norm": "dyntanh",
                        "out_norm": "dyntanh", "out_norm_affine": False, "pos_embed": "rope"},
            "predictor": {"dim": 128, "depth": 2, "num_heads": 2, "out_norm": "layernorm"},
            "objective": {"batch_repeat": 4, "context_capacity": 0.25, "target_capacity": 0.25, "target_norm": "disabled"},
        },
        "data": {"min_side": 64, "max_side": 128, "max_context_tokens": 32, "max_target_tokens": 48},
        "train": {"batch_size": 16},
    },
    # (b) the demo model (config/demo.yaml's model when that file exists; see --demo-config).
    "demo": {  # a copy of config/demo.yaml's model, used when that file is absent
        "model": {
            "encoder": {"dim": 96, "depth": 4, "num_heads": 3},
            "predictor": {"dim": 64, "depth": 2, "num_heads": 2},
        },
        "data": {"min_side": 64, "max_side": 128, "max_context_tokens": 32, "max_target_tokens": 48, "rows_per_pack": 16},
        "train": {"batch_size": 8},
    },
    # (c) the paper's ViT-S (RunConfig defaults) at a small batch.
    "paper_vits": {
        "model": {},
        "data": {},
        "train": {"batch_size": 4},
    },
}


IMAGENET_ASPECTS = (4 / 3, 4 / 3, 4 / 3, 1.0, 3 / 4, 1.5, 1.25)  # width / height, as in data_pipeline.py


def make_items(cfg, n: int, seed: int, sizes: str = "mixed"):
    """`n` PackItems of random pixels. Source image sizes: `mixed` (mean side uniform in
    [min_side, 2 x max_side], aspect 0.5-2) or `imagenet` (the author's shards: short side 256,
    ImageNet-like aspect ratios); then the pipeline's random resize."""
    from featnorm.data.packing import PackItem
    from featnorm.data.resize import keep_image, random_resize_shape
    from featnorm.data.windows import context_window_range

    rng = np.random.default_rng(seed)
    m, d = cfg.model, cfg.data
    unit = m.patch_size * m.window_size
    w2 = m.window_size**2
    items = []
    pool = rng.integers(0, 256, ((d.max_side // m.patch_size) ** 2, m.patch_dim), dtype=np.uint8)
    while len(items) < n:
        if sizes == "imagenet":
            aspect = float(rng.choice(IMAGENET_ASPECTS))
            h0, w0 = (256, 256 * aspect) if aspect >= 1 else (256 / aspect, 256)
        else:
            mean = rng.uniform(d.min_side, 2 * d.max_side)
            aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            h0, w0 = mean * 2 / (1 + aspect), mean * 2 * aspect / (1 + aspect)
        if not keep_image(int(h0), int(w0), d.min_side):
            continue
        h, w = random_resize_shape(int(h0), int(w0), rng, d.min_side, d.max_side, unit)
        gh, gw = h // m.patch_size, w // m.patch_size
        nw = (gh // m.window_size) * (gw // m.window_size)
        try:
            lo, hi = context_window_range(nw, d.context_ratio_min, d.context_ratio_max,
                                          d.max_context_tokens // w2, d.max_target_tokens // w2)
        except ValueError:
            continue  # cannot fit the segments (as the pipeline would skip it)
        patches = pool[: gh * gw]  # one shared random buffer: content does not change speed, and 20k+ items fit
        items.append(PackItem(patches, gh, gw, rng.permutation(nw), lo, hi, int(rng.integers(lo, hi + 1)), key=len(items)))
    return items


def packed_batches(cfg, items):
    from featnorm.data.packing import packs_to_batch, segment_lengths
    from featnorm.data.packing_best_fit import BestFitPacker

    lc, lt = segment_lengths(cfg.data.max_context_tokens, cfg.data.max_target_tokens, cfg.model.window_size,
                             cfg.model.encoder.num_registers)
    # best fit (the packer the README's step figures were measured with; data.packing's default
    # first fit fills fewer slots, benchmarks/data_pipeline.py); the step cost per row is the same
    packer = BestFitPacker(cfg.train.batch_size, lc, lt, cfg.model.window_size, cfg.model.patch_dim, cfg.model.encoder.num_registers,
                           rebalance=cfg.data.packing_rebalance)
    out = []
    for it in items:
        packer.add(it)
        if packer.ready():
            out.append(packs_to_batch([packer.pack()]))
    return out


def padded_batches(cfg, items):
    """One image per row; each segment padded to the longest in the batch."""
    from featnorm.data.packing import packs_to_batch
    from featnorm.data.packing_best_fit import BestFitPacker

    w2 = cfg.model.window_size**2
    rows = cfg.train.batch_size
    out = []
    for start in range(0, len(items) - rows + 1, rows):
        chunk = items[start : start + rows]
        lc = max(it.drawn for it in chunk) * w2
        lt = max(it.num_windows - it.drawn for it in chunk) * w2
        packs = []
        for it in chunk:  # a one-row pack per image with the batch's segment lengths
            it = _fixed(it)
            p = BestFitPacker(1, lc, lt, cfg.model.window_size, cfg.model.patch_dim, lookahead=1)
            p.add(it)
            pack = p.pack()
            assert pack.num_images == 1
            packs.append(pack)
        out.append(packs_to_batch(packs))
    return out


def _fixed(item):
    from dataclasses import replace

    return replace(item, lo=item.drawn, hi=item.drawn, age=0)


def demo_spec(path: str) -> dict:
    """The demo model of a workflow config (config/demo.yaml: `defaults` + the `tanh` run)."""
    import yaml

    from featnorm.config import deep_merge

    wf = yaml.safe_load(Path(path).read_text())
    run = deep_merge(wf.get("defaults", {}), {k: v for k, v in wf.get("runs", {}).get("tanh", {}).items()
                                              if k in ("model", "data", "train")})
    return {"model": run.get("model", {}), "data": {k: v for k, v in run.get("data", {}).items() if k != "num_workers"},
            "train": {"batch_size": run.get("train", {}).get("batch_size", 8)}}


PAPER_IMAGES = 600 * 1_281_167  # the paper run: 600 epochs of ImageNet-1k's training set


def run_one(name: str, layout: str, steps: int, warmup: int, demo_config: str | None, compile: bool = False,
            device: str = "cpu", precision: str = "fp32", backend: str = "sdpa", rows: int | None = None,
            threads: int = 2, distinct: int = 4, sizes: str = "mixed") -> dict:
    from featnorm.config import run_config_from_dict
    from featnorm.train.flops import encoder_counts, predictor_counts, step_flops
    from featnorm.train.throughput import peak_tflops
    from featnorm.train.trainer import Trainer, TrainData
    from featnorm.tokens import is_padding

    torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    spec = dict(MODELS[name])
    if name == "demo" and demo_config and Path(demo_config).is_file():
        spec = demo_spec(demo_config)
    train = {**spec["train"], "steps": 1, "lidar_every": 0, "compile": compile, "precision": precision}
    if rows:
        train["batch_size"] = rows
    model = {**spec["model"], "attention_backend": backend}
    cfg = run_config_from_dict({**spec, "model": model, "train": train})
    # A pool of `distinct` batches (at most `steps`), run `warmup` times untimed (first calls on a
    # new shape pay one-off kernel set-up and compilation, which a long run amortises), then
    # cycled through `steps` timed steps.
    n_pool = max(1, min(distinct, steps))
    per_row = 12 if layout == "packed" else 1  # images a row can take (generous; the packer keeps the rest)
    items = make_items(cfg, (n_pool + 1) * cfg.train.batch_size * per_row + 64, seed=0, sizes=sizes)
    batches = (packed_batches if layout == "packed" else padded_batches)(cfg, items)
    if len(batches) < n_pool:
        raise RuntimeError(f"only {len(batches)} batches from {len(items)} images; raise the image count")
    pool = batches[:n_pool]
    if cuda:
        pool = [b.to(dev) for b in pool]
        torch.cuda.reset_peak_memory_stats(dev)
    data = TrainData(lambda e, s: iter(()), num_images=None)
    peak, peak_source = peak_tflops(dev)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, data, tmp, tmp, device=dev, progress=False)
        t0 = time.perf_counter()
        for b in pool * warmup:
            tr.train_step(b)
        if cuda:
            torch.cuda.synchronize(dev)
        warmup_s = time.perf_counter() - t0
        counts = []
        for b in pool:  # the batches' own counts, on the CPU (the trainer does the same, off the step)
            ids = b.token_ids.cpu()
            real = ~is_padding(ids)
            counts.append((int(torch.unique(ids[..., 0][real]).numel()), int(real.sum()), real.numel(),
                           encoder_counts(ids), encoder_counts(ids[:, : b.context_length])))
        per_step = []  # (seconds, images, real tokens, flops)
        slots = 0
        load_before = os.getloadavg()[0]
        for i in range(steps):
            b = pool[i % n_pool]
            n_img, n_tok, n_slots, teacher, student = counts[i % n_pool]
            t = time.perf_counter()
            row, _ = tr.train_step(b)  # its loss read syncs with the device; the rest of the step is queued
            if cuda:
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t
            flops = step_flops(cfg.model, teacher, student, predictor_counts(row))["total"]
            per_step.append((dt, n_img, n_tok, flops))
            slots += n_slots
    dt = sum(x[0] for x in per_step)
    imgs, toks, flops = (sum(x[k] for x in per_step) for k in (1, 2, 3))
    # The CPU machine is shared: besides the mean, the median and the best step rate (a step
    # that ran without contention approximates the machine's real speed).
    rates = sorted(x[1] / x[0] for x in per_step)
    tok_rates = sorted(x[2] / x[0] for x in per_step)
    out = {
        "model": name, "layout": layout, "image_sizes": sizes, "packing_rebalance": cfg.data.packing_rebalance,
        "device": _device_name(dev), "precision": precision, "compile": compile,
        "attention_backend": backend, "status": "ok", "steps": steps, "distinct_batches": n_pool, "warmup_passes": warmup,
        "warmup_seconds": round(warmup_s, 2), "rows_per_step": cfg.train.batch_size,
        "seq_len_mean": slots / steps / cfg.train.batch_size,
        "images_per_step": imgs / steps, "images_per_s": imgs / dt, "real_tokens_per_s": toks / dt,
        "images_per_s_median": rates[len(rates) // 2], "images_per_s_best": rates[-1],
        "real_tokens_per_s_median": tok_rates[len(tok_rates) // 2], "real_tokens_per_s_best": tok_rates[-1],
        "slot_efficiency": toks / slots, "seconds_per_step": dt / steps,
        "step_tflop": flops / steps / 1e12, "tflop_per_s": flops / dt / 1e12,
        "peak_tflops": peak, "peak_source": peak_source, "mfu": flops / dt / 1e12 / peak if peak else None,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "parameters": sum(p.numel() for p in tr.model.parameters()),
    }
    if cuda:
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        out["peak_gpu_reserved_gib"] = torch.cuda.max_memory_reserved(dev) / 2**30
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if name == "paper_vits":  # the whole paper run (600 epochs) at this step rate, loading not included
        out["paper_run_hours_at_this_rate"] = PAPER_IMAGES / out["images_per_s"] / 3600
    return out


def flop_count(name: str, rows: int | None, distinct: int, demo_config: str | None, seed: int = 0, sizes: str = "mixed") -> dict:
    """Model FLOPs of the model's steps on `distinct` packed batches of `rows` rows, without
    running the model: the predictor's counts depend only on the ids and the sampled windows,
    so the objective runs on a copy of the model shrunk to width 8 and depth 1 (same
    windows, registers and objective) to draw them."""
    from dataclasses import replace

    from featnorm.config import run_config_from_dict
    from featnorm.ijepa import IJEPA
    from featnorm.train.flops import encoder_counts, predictor_counts, step_flops

    spec = dict(MODELS[name])
    if name == "demo" and demo_config and Path(demo_config).is_file():
        spec = demo_spec(demo_config)
    train = {**spec["train"], "steps": 1, "lidar_every": 0, **({"batch_size": rows} if rows else {})}
    cfg = run_config_from_dict({**spec, "train": train})
    m = cfg.model
    shrunk = replace(m, encoder=replace(m.encoder, dim=8, depth=1, num_heads=1, mlp_ratio=1.0),
                     predictor=replace(m.predictor, dim=8, depth=1, num_heads=1, mlp_ratio=1.0))
    torch.manual_seed(seed)
    probe = IJEPA(shrunk)
    items = make_items(cfg, (distinct + 1) * cfg.train.batch_size * 12 + 64, seed=seed, sizes=sizes)
    batches = packed_batches(cfg, items)[:distinct]
    gen = torch.Generator().manual_seed(seed + 1)
    steps = []
    for b in batches:
        with torch.no_grad():
            stats = {k: float(v) for k, v in probe(b, generator=gen).stats.items()}
        f = step_flops(m, encoder_counts(b.token_ids), encoder_counts(b.context_ids), predictor_counts(stats))
        images = int(torch.unique(b.token_ids[..., 0][b.token_ids[..., 0] >= 0]).numel())
        steps.append({**{k: v / 1e12 for k, v in f.items()}, "images": images,
                      "real_tokens": int((b.token_ids[..., 0] >= 0).sum()), "predictor_tokens": stats["predictor_tokens"]})
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0]}
    return {"model": name, "image_sizes": sizes, "packing_rebalance": cfg.data.packing_rebalance,
            "rows_per_step": cfg.train.batch_size, "batches": len(steps),
            "step_tflop": mean["total"], "teacher_tflop": mean["teacher"], "student_tflop": mean["student"],
            "predictor_tflop": mean["predictor"], "attention_tflop": mean["attention"],
            "images_per_step": mean["images"], "real_tokens_per_step": mean["real_tokens"],
            "predictor_tokens_per_step": mean["predictor_tokens"],
            "tflop_per_image": mean["total"] / mean["images"], "per_batch": steps}


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine() or "cpu"


def _skip_reason(device: str, backend: str, compile: bool) -> str | None:
    """Configurations that cannot run, recorded as skipped instead of failing."""
    if backend == "flex" and not device.startswith("cuda"):
        return "flex cannot train on the CPU (torch has no FlexAttention backward there)"
    return None


def measure(args, name: str, layout: str, backend: str, compile: bool, steps: int) -> dict:
    """One configuration in a fresh subprocess, bounded by `args.timeout`; failures are recorded."""
    base = {"model": name, "layout": layout, "device": args.device, "precision": args.precision, "compile": compile,
            "attention_backend": backend, "rows_per_step": args.rows or MODELS[name]["train"]["batch_size"]}
    reason = _skip_reason(args.device, backend, compile)
    if reason:
        return {**base, "status": "skipped", "reason": reason}
    cmd = [sys.executable, __file__, "--one", name, layout, "--steps", str(steps), "--warmup", str(args.warmup),
           "--demo-config", args.demo_config, "--device", args.device, "--precision", args.precision,
           "--backends", backend, "--threads", str(args.threads), "--distinct", str(args.distinct), "--sizes", args.sizes,
           "--rebalance", args.rebalance]
    cmd += (["--compile"] if compile else []) + (["--rows", str(args.rows)] if args.rows else [])
    env = dict(os.environ)
    if args.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "seconds": round(time.perf_counter() - t0, 1),
                "reason": f"did not finish within --timeout {args.timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {**base, "status": "error", "seconds": round(time.perf_counter() - t0, 1), "error": "\n".join(tail)}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["seconds"] = round(time.perf_counter() - t0, 1)
    return r


def summary_line(r: dict) -> str:
    what = f"{r['model']:10s} {r['layout']:6s} {r['attention_backend']:4s} {'compile' if r['compile'] else 'eager':7s}"
    if r["status"] != "ok":
        return f"{what} {r['status']}: {r.get('reason') or r.get('error', '').splitlines()[-1:]}"
    mem = f"{r['peak_gpu_memory_gib']:.1f} GiB" if "peak_gpu_memory_gib" in r else f"{r['peak_rss_mib']:.0f} MiB RSS"
    mfu = f"MFU {r['mfu']:.3f}" if r.get("mfu") is not None else "MFU -"
    return (f"{what} img/s mean {r['images_per_s']:8.1f} median {r['images_per_s_median']:8.1f} best "
            f"{r['images_per_s_best']:8.1f}; {r['tflop_per_s']:7.2f} TFLOP/s {mfu}; {r['step_tflop']:.3f} TFLOP/step; {mem}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/out/train_step.json")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (a third for the ViT-S on the CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over the pool of batches first")
    p.add_argument("--distinct", type=int, default=4, help="distinct batches in the pool (timed steps cycle through them)")
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--layouts", nargs="*", default=["packed", "padded"], choices=["packed", "padded"])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"], help="train.precision")
    p.add_argument("--backends", nargs="*", default=["sdpa"], choices=["sdpa", "flex"], help="model.attention_backend values")
    p.add_argument("--compile-modes", nargs="*", default=["eager"], choices=["eager", "compile"],
                   help="eager and/or compile (train.compile: torch.compile of the whole model)")
    p.add_argument("--compile", action="store_true", help="same as --compile-modes compile")
    p.add_argument("--rows", type=int, default=None, help="packed rows per step (default: each model's own)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of the measured process")
    p.add_argument("--timeout", type=float, default=None, help="seconds per configuration (recorded as a timeout)")
    p.add_argument("--demo-config", default="config/demo.yaml", help="run YAML of the demo model, if present")
    p.add_argument("--omp-wait-policy", default="unset", choices=["unset", "PASSIVE", "ACTIVE"],
                   help="OMP_WAIT_POLICY of the measured processes (default: the runtime's own). "
                        "PASSIVE is ~35%% slower on a quiet machine but several times faster when "
                        "the cores are oversubscribed (scripts/pretrain.py uses PASSIVE)")
    p.add_argument("--sizes", default="mixed", choices=["mixed", "imagenet"],
                   help="source image sizes: mixed (issue 4's CPU figures) or imagenet (short side 256, the paper's data)")
    p.add_argument("--rebalance", default="config", choices=["config", "true", "false"],
                   help="data.packing_rebalance of the packed batches (default: the config's)")
    p.add_argument("--flops-only", action="store_true",
                   help="only count the model FLOPs of each model's packed steps (no timing; any machine)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "LAYOUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rebalance != "config":
        for spec in MODELS.values():
            # packing_rebalance is a best-fit option (the config rejects it with first fit), and
            # packed_batches packs with best fit anyway
            spec["data"] = {**spec["data"], "packing": "best-fit", "packing_rebalance": args.rebalance == "true"}
    modes = ["compile"] if args.compile else args.compile_modes
    if args.flops_only:
        counts = [flop_count(name, args.rows, args.distinct, args.demo_config, sizes=args.sizes) for name in args.models]
        for c in counts:
            print(f"{c['model']:10s} {c['rows_per_step']} rows: {c['step_tflop']:.3f} TFLOP/step (teacher {c['teacher_tflop']:.3f}, "
                  f"student {c['student_tflop']:.3f}, predictor {c['predictor_tflop']:.3f}; attention {c['attention_tflop']:.3f}), "
                  f"{c['images_per_step']:.0f} images, {c['tflop_per_image'] * 1e3:.3f} GFLOP/image", file=sys.stderr)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "flops": counts}, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
        return
    if args.one:
        r = run_one(args.one[0], args.one[1], args.steps, args.warmup, args.demo_config, "compile" in modes,
                    args.device, args.precision, args.backends[0], args.rows, args.threads, args.distinct, args.sizes)
        print(json.dumps(r))
        return
    results = []
    for name in args.models:
        for layout in args.layouts:
            for backend in args.backends:
                for mode in modes:
                    steps = max(2, args.steps // 3) if name == "paper_vits" and args.device == "cpu" else args.steps
                    r = measure(args, name, layout, backend, mode == "compile", steps)
                    print(summary_line(r), file=sys.stderr, flush=True)
                    results.append(r)
    speedup = {}
    for name in args.models:
        by = {r["layout"]: r for r in results if r["model"] == name and r["status"] == "ok"
              and r["attention_backend"] == args.backends[0] and r["compile"] == (modes[0] == "compile")}
        if {"packed", "padded"} <= set(by):
            speedup[name] = {k: by["packed"][k] / by["padded"][k] for k in ("images_per_s", "images_per_s_median", "images_per_s_best")}
    out = {
        "machine": {"device": _device_name(torch.device(args.device)) if args.device == "cpu" or torch.cuda.is_available() else args.device,
                    "cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__},
        "omp_wait_policy": args.omp_wait_policy, "precision": args.precision,
        "goal_comparison_images_per_s": 300, "reference_comparison_images_per_s": 200,
        "results": results, "packing_speedup_images_per_s": speedup,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
