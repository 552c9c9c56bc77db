#!/usr/bin/env python
"""LiDAR and RankMe of a checkpoint's encoder on a fixed, seeded subset of images.

    lidar.py --model model.pt --shards DIR --out JSON

SPEC section 3/4: N images (default 1,000) x Q views (default 50); a view is a random resize
+ random context mask of the image (the training pipeline's steps 2-4) and its embedding the
encoder's output features averaged over the view's context patches. LiDAR (Thilak et al.)
treats each image as a class of Q views; RankMe is the smooth rank of all N x Q embeddings.
The subset and the views depend only on --seed, so runs and checkpoints compare on the
same set.
"""

from __future__ import annotations

import argparse
import sys


from featnorm.data.shards import ShardError, resolve_shards
from featnorm.data.train_pipeline import PipelineSpec
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_encoder
from featnorm.evaluation.lidar import lidar_and_rankme, pick_images, view_batches, view_embeddings
from featnorm.evaluation.script_options import add_runtime_options, apply_runtime_options, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by pretrain.py")
    p.add_argument("--shards", required=True, help="split directory with manifest.json (or a brace pattern)")
    p.add_argument("--out", required=True, help="output JSON (e.g. results/runs/RUN/eval/lidar.json)")
    p.add_argument("--weights", choices=["teacher", "student"], default="teacher",
                   help="which encoder of model.pt (the trainer's LiDAR curve uses the student)")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--num-augmentations", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="fixes the image subset and the views")
    p.add_argument("--batch-size", type=int, default=256, help="views encoded per batch")
    add_runtime_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = apply_runtime_options(args)
    try:
        if args.num_images < 2 or args.num_augmentations < 2:
            raise ValueError("LiDAR needs --num-images and --num-augmentations of at least 2")
        encoder, cfg = load_encoder(args.model, args.weights, device)
        spec = PipelineSpec.from_config(cfg)
        images = pick_images(resolve_shards(args.shards), args.num_images, args.seed, spec.min_side)
        views = view_batches(images, spec, args.num_augmentations, args.seed, args.batch_size)
        emb = view_embeddings(encoder, views, args.num_images, args.num_augmentations, device, not args.no_progress)
        result = lidar_and_rankme(emb)
    except (CheckpointError, ShardError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update({
        "num_images": args.num_images, "num_augmentations": args.num_augmentations, "seed": args.seed,
        "weights": args.weights, "model": str(args.model), "shards": str(args.shards),
        "embedding": "encoder output (after its output norm), mean over each view's context patches",
    })
    write_json(args.out, result)
    print(f"LiDAR {result['lidar']:.3f}, RankMe {result['rankme']:.3f}; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
