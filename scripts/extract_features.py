#!/usr/bin/env python
"""Mean-pooled features of every encoder depth for a split, cached as float16 shards.

    extract_features.py --model model.pt --shards DIR --out DIR

The teacher encoder of model.pt (eval mode) encodes 256 x 256 centre crops, one image per
row; the features of the embedding output and of every block, averaged over the image's
patch tokens, are written as one feature shard per image shard (see
featnorm.evaluation.features). Interrupted runs resume at the first incomplete image shard.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from featnorm.config import config_hash
from featnorm.data.shards import ShardError, resolve_shards
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_checkpoint_dict, load_encoder
from featnorm.evaluation.eval_data import shard_batches, shard_counts
from featnorm.evaluation.features import FeatureCacheError, extract_features


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by pretrain.py")
    p.add_argument("--shards", required=True, help="split directory with manifest.json (or a brace pattern of .tar shards)")
    p.add_argument("--out", required=True, help="feature directory (e.g. results/features/RUN/val)")
    p.add_argument("--weights", choices=["teacher", "student"], default="teacher", help="which encoder of model.pt (default: the EMA teacher)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=256, help="side of the centre crop after resizing")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers decoding images")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images of the split (demo/tests)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        encoder, cfg = load_encoder(args.model, args.weights, device)
        ckpt = load_checkpoint_dict(args.model)
        shards = resolve_shards(args.shards)
        counts = shard_counts(shards)
        names = [p.name for p in shards]
        if len(set(names)) != len(names):
            raise ValueError(f"{args.shards}: shard file names repeat; feature shards are keyed by them")
        source = {
            "model": str(Path(args.model).resolve()), "weights": args.weights, "config_hash": config_hash(cfg),
            "step": int(ckpt.get("step", -1)), "images_seen": int(ckpt.get("images_seen", -1)),
            "shards": str(args.shards), "image_size": args.image_size, "max_images": args.max_images,
        }
        del ckpt
        total = None if any(c is None for c in counts) else sum(counts)
        if total is not None and args.max_images is not None:
            total = min(total, args.max_images)

        def make_batches(done: set[str]):
            return shard_batches(shards, counts, done, batch_size=args.batch_size, image_size=args.image_size,
                                 patch_size=cfg.model.patch_size, num_registers=cfg.model.encoder.num_registers,
                                 num_workers=args.num_workers, max_images=args.max_images)

        manifest = extract_features(encoder, make_batches, names, args.out, source=source, total=total,
                                    device=device, progress=not args.no_progress)
    except (CheckpointError, ShardError, FeatureCacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"features of {manifest['count']} images x {manifest['num_depths']} depths x {manifest['dim']} "
          f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
