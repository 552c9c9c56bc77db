#!/usr/bin/env python
"""Pretrain one I-JEPA encoder (SPEC section 3) and write DIR/model.pt.

    pretrain.py --config RUN.yaml --out results/runs/RUN [--checkpoint-dir DIR] [--force-resume]

Writes DIR/config.yaml (the resolved config) at the start, DIR/train_log.jsonl while
training and DIR/model.pt (teacher, student, predictor weights + config) at the end.
Resume checkpoints go to --checkpoint-dir (default: DIR/../../checkpoints/<name>-<confighash>);
starting again with the same directory resumes from its newest readable checkpoint.
SIGTERM / SIGINT checkpoint and exit 0; a NaN or infinite loss exits 1 naming the step.

Several GPUs (or CPU processes, gloo): launch with torchrun, e.g.

    torchrun --standalone --nproc-per-node 8 scripts/pretrain.py --config RUN.yaml --out DIR

train.batch_size is the global batch (each process takes batch_size / N rows); rank 0
writes every file. Resuming on the same N continues exactly; on another N the run goes on
at the start of the next epoch (see featnorm.train.trainer).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime).
# Measured on the 2-core test machine (benchmarks/train_step.py, comparison config): when the
# cores are oversubscribed, spinning threads make steps 4-7x slower (demo run: 2 min 45 s
# instead of 25 s); on a quiet machine PASSIVE costs ~35% (200 vs 315 images/s). We take the
# bounded loss; on GPU runs it does not matter. Export OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "lib"))

from featnorm.config import ConfigError, config_hash, load_run_config  # noqa: E402
from featnorm.train.checkpoint import ConfigMismatchError  # noqa: E402
from featnorm.train.trainer import NonFiniteLossError, Trainer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run YAML (defaults + overrides, see featnorm.config)")
    p.add_argument("--out", required=True, help="run output directory (model.pt, config.yaml, train_log.jsonl)")
    p.add_argument("--checkpoint-dir", default=None, help="resume checkpoints (default: OUT/../../checkpoints/<name>-<confighash>)")
    p.add_argument("--force-resume", action="store_true", help="resume even from checkpoints of another config")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def model_complete(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # absent, truncated or not a checkpoint: train (again)
        return False
    return isinstance(ckpt, dict) and {"config", "teacher", "student", "predictor", "step"} <= set(ckpt)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_run_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from featnorm.train import distributed

    dist_info, device = distributed.init_from_env(args.device)
    try:
        return _train(args, cfg, dist_info, device)
    finally:
        distributed.shutdown()


def _train(args, cfg, dist_info, device) -> int:
    say = (lambda msg: print(msg, file=sys.stderr)) if dist_info.is_main else (lambda msg: None)
    out = Path(args.out)
    if model_complete(out / "model.pt"):
        if dist_info.is_main:
            print(f"{out / 'model.pt'} already exists and is complete; nothing to do (delete it to train again)")
        return 0
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else out.parent.parent / "checkpoints" / f"{cfg.name}-{config_hash(cfg)}"
    if args.threads:
        torch.set_num_threads(args.threads)

    from featnorm.train.data_source import build_train_data

    try:
        data = build_train_data(cfg, ckpt_dir, dist_info.rank, dist_info.world_size, device=device)
        trainer = Trainer(cfg, data, out, ckpt_dir, force_resume=args.force_resume, device=device,
                          progress=False if args.no_progress else None, dist=dist_info)
    except (ConfigMismatchError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)  # every rank meets the same error: all exit
        return 2
    if dist_info.enabled:
        say(f"{dist_info.world_size} processes, {cfg.train.batch_size // dist_info.world_size} rows each "
            f"(global batch {cfg.train.batch_size}), device {trainer.device}")
    if trainer.resumed_from is not None:
        say(f"resuming from {trainer.resumed_from} (step {trainer.step}, {trainer.images_seen} images seen)")
    try:
        result = trainer.run()
    except NonFiniteLossError as e:
        say(f"error: {e}")
        return 1
    if result.stopped_by != "done":
        say(f"stopped by {result.stopped_by} after step {result.step}; checkpoint in {ckpt_dir}, run again to resume")
        return 0
    say(f"done: {result.step} steps, {result.images_seen} images; wrote {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
