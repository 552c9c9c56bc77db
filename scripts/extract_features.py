#!/usr/bin/env python
"""Mean-pooled features of every encoder depth for a split, cached as float16 shards.

    extract_features.py --model model.pt --shards DIR --out DIR

The teacher encoder of model.pt (eval mode) encodes 256 x 256 centre crops, one image per
row; the features of the embedding output and of every block (before the output norm),
averaged over the image's tokens (patches and registers, as the reference), are written as one
feature shard per image shard (see featnorm.evaluation.features). --mode last-layer keeps only
the last block's output (the reference's `validation_extraction_mode: lastlayer`); --pool
patches leaves register tokens out of the mean. Interrupted runs resume at the first
incomplete image shard.

Several GPUs: `torchrun --standalone --nproc-per-node N scripts/extract_features.py ...`;
the image shards are split among the ranks (each writes its own part, resumable with the
same N; with another N the parts are extracted afresh), then rank 0 merges them into the
same directory one process writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from featnorm.config import config_hash
from featnorm.data.shards import ShardError, resolve_shards
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_checkpoint_dict, load_encoder
from featnorm.evaluation.eval_data import shard_batches, shard_counts
from featnorm.evaluation.eval_data import image_quota
from featnorm.evaluation.features import (
    EXTRACTION_MODES,
    FeatureCacheError,
    extract_features,
    merge_feature_parts,
    part_dir,
    read_manifest,
)
from featnorm.evaluation.script_options import add_runtime_options, apply_runtime_options


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
    p.add_argument("--mode", choices=EXTRACTION_MODES, default="all-depths",
                   help="all-depths: the embedding output and every block's output (one probe each); last-layer: "
                        "the last block's output only (the reference's 'lastlayer'); both before the output norm")
    p.add_argument("--pool", choices=["all-tokens", "patches"], default="all-tokens",
                   help="tokens averaged per image: all-tokens (patches and registers, the reference) or patches only")
    add_runtime_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = apply_runtime_options(args)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:  # under torchrun: one process per GPU
        import torch.distributed as dist

        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        try:
            return _extract(args, device, rank, world)
        finally:
            dist.destroy_process_group()
    return _extract(args, device, 0, 1)


def _extract(args, device: str, rank: int, world: int) -> int:
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
            "mode": args.mode, "pool": args.pool,
        }
        del ckpt
        total = None if any(c is None for c in counts) else sum(counts)
        if total is not None and args.max_images is not None:
            total = min(total, args.max_images)

        def make_batches(done: set[str]):
            return shard_batches(shards, counts, done, batch_size=args.batch_size, image_size=args.image_size,
                                 patch_size=cfg.model.patch_size, num_registers=cfg.model.encoder.num_registers,
                                 num_workers=args.num_workers, max_images=args.max_images)

        if world == 1:
            manifest = extract_features(encoder, make_batches, names, args.out, source=source, total=total,
                                        device=device, progress=not args.no_progress, mode=args.mode,
                                        pool_registers=args.pool == "all-tokens")
        else:
            manifest = _extract_share(args, encoder, cfg, shards, counts, names, source, device, rank, world)
    except (CheckpointError, ShardError, FeatureCacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    print(f"features of {manifest['count']} images x {manifest['num_depths']} depths x {manifest['dim']} "
          f"written to {args.out}", file=sys.stderr)
    return 0


def _extract_share(args, encoder, cfg, shards, counts, names, source, device, rank, world) -> dict:
    """This rank's image shards (r, r + N, ...) into its part directory; rank 0 merges."""
    import torch.distributed as dist

    final = read_manifest(args.out)
    if final is not None and (final.get("source") != source or final.get("source_shards") != names):
        raise FeatureCacheError(f"{args.out}: holds features of {final.get('source')}, not of {source}; "
                                "delete the directory or choose another --out")
    if final is not None and final["complete"]:
        return final  # every rank reads the same finished manifest
    quota = image_quota(counts, args.max_images)
    mine = list(range(rank, len(shards), world))

    def make_batches(done: set[str]):
        for i in mine:  # per shard, with the one-process run's quota of that shard
            yield from shard_batches([shards[i]], [counts[i]], done, batch_size=args.batch_size, image_size=args.image_size,
                                     patch_size=cfg.model.patch_size, num_registers=cfg.model.encoder.num_registers,
                                     num_workers=args.num_workers, max_images=quota[i])

    part = part_dir(args.out, rank, world)
    extract_features(encoder, make_batches, [names[i] for i in mine], part, source=source, device=device,
                     progress=not args.no_progress and rank == 0, mode=args.mode,
                     pool_registers=args.pool == "all-tokens")
    dist.barrier()
    if rank == 0:
        merge_feature_parts(args.out, [part_dir(args.out, r, world) for r in range(world)], names, source)
    dist.barrier()
    return read_manifest(args.out)


if __name__ == "__main__":
    sys.exit(main())
