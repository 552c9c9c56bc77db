#!/usr/bin/env python
"""sdpa vs FlexAttention (`model.attention_backend`) on the same packed batches; writes JSON.

For each model (benchmarks/train_step.py's configs) it builds the IJEPA model once per
backend from the same seed and times, on the same packed batches, the encoder forward on
full rows (the teacher's work) and the predictor forward on its sampled rows, without
gradients (the CPU has no FlexAttention backward, so a CPU comparison is forward only;
`benchmarks/train_step.py --device cuda --backends sdpa flex` compares whole training
steps on a GPU). It also records how far the two backends' outputs are apart (float32).

    python benchmarks/attention_backends.py [--out benchmarks/out/attention_backends.json] [--models paper_vits]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import MODELS, make_items, packed_batches  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, list[float], torch.Tensor]:
    """(median seconds, all seconds, last output) of `repeats` calls after one untimed call.
    On the CPU the seconds are the process's CPU time (with one thread, the work itself,
    whatever else the machine runs); on CUDA, wall time after a synchronisation."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = clock()
        out = fn()
        _sync(device)
        times.append(clock() - t)
    return sorted(times)[len(times) // 2], times, out


def compare(name: str, rows: int | None, repeats: int, device: torch.device) -> dict:
    from featnorm.config import run_config_from_dict
    from featnorm.ijepa import IJEPA

    spec = dict(MODELS[name])
    train = {**spec["train"], "steps": 1, "lidar_every": 0, **({"batch_size": rows} if rows else {})}
    cfg = run_config_from_dict({**spec, "train": train})
    items = make_items(cfg, 2 * cfg.train.batch_size * 12 + 64, seed=0)
    batch = packed_batches(cfg, items)[0].to(device)
    models = {}
    for backend in ("sdpa", "flex"):
        cfg.model.attention_backend = backend
        torch.manual_seed(0)
        models[backend] = IJEPA(cfg.model).to(device).eval()
    # the predictor's input: the sampled rows of one training forward (ids only; features random)
    gen = torch.Generator(device=device).manual_seed(1)
    sdpa = models["sdpa"]
    out = {"model": name, "rows": cfg.train.batch_size, "tokens_per_row": batch.token_ids.shape[1],
           "real_tokens": int((batch.token_ids[..., 0] >= 0).sum())}
    with torch.no_grad():
        enc = {b: (lambda m=m: m.teacher(batch.pixels, batch.token_ids)) for b, m in models.items()}
        ctx = sdpa.student(batch.context_pixels, batch.context_ids)
        from featnorm.ijepa.window_sampling import gather_windows, padding_windows, sample_windows, windows_per_copy

        o, ws = cfg.model.objective, cfg.model.window_size
        cp, tp = padding_windows(batch.context_ids, ws), padding_windows(batch.target_ids, ws)
        cw = sample_windows(cp, o.batch_repeat, windows_per_copy(cp.shape[1], o.context_capacity), True, gen)
        tw = sample_windows(tp, o.batch_repeat, windows_per_copy(tp.shape[1], o.target_capacity), True, gen)
        p_ctx, p_ids = gather_windows(ctx, cw, ws), gather_windows(batch.context_ids, cw, ws)
        p_tgt = gather_windows(batch.target_ids, tw, ws)
        pred = {b: (lambda m=m: m.predictor(p_ctx, p_ids, p_tgt)) for b, m in models.items()}
        for part, fns in (("encoder_full_rows", enc), ("predictor", pred)):
            res = {b: timed(fn, device, repeats) for b, fn in fns.items()}
            real = (batch.token_ids[..., 0] >= 0) if part.startswith("encoder") else (p_tgt[..., 0] >= 0)
            diff = (res["flex"][2] - res["sdpa"][2]).abs()[real]
            out[part] = {
                "sdpa_seconds_median": res["sdpa"][0], "flex_seconds_median": res["flex"][0],
                "sdpa_seconds": res["sdpa"][1], "flex_seconds": res["flex"][1],
                "flex_over_sdpa_time": res["flex"][0] / res["sdpa"][0],
                "max_abs_difference_real_tokens": float(diff.max()),
                "output_abs_max": float(res["sdpa"][2].abs().max()),
            }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/out/attention_backends.json")
    p.add_argument("--models", nargs="*", default=["comparison", "paper_vits"], choices=list(MODELS))
    p.add_argument("--rows", type=int, default=None, help="packed rows (default: each model's own)")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per backend and part")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time measures the work itself)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    results = []
    for name in a.models:
        r = compare(name, a.rows, a.repeats, device)
        for part in ("encoder_full_rows", "predictor"):
            x = r[part]
            print(f"{name:10s} {part:17s} sdpa {x['sdpa_seconds_median'] * 1e3:8.1f} ms  flex {x['flex_seconds_median'] * 1e3:8.1f} ms"
                  f"  (flex/sdpa {x['flex_over_sdpa_time']:.2f}); max |diff| {x['max_abs_difference_real_tokens']:.2e}", file=sys.stderr)
        results.append(r)
    out = {"device": a.device, "cpu": platform.processor() or platform.machine(), "threads": a.threads,
           "clock": "process CPU time" if device.type == "cpu" else "wall time, synchronised",
           "torch": torch.__version__, "load_average_1min": os.getloadavg()[0], "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
