#!/usr/bin/env python
"""Weighted k-NN probe on cached features, per encoder depth (DINO's eval_knn).

    knn_probe.py --train-features DIR --val-features DIR --out JSON [--k 20] [--temperature 0.07]

DIRs are feature caches written by extract_features.py. Each validation feature's k nearest
training features (cosine similarity) vote with weight exp(similarity / T); the JSON holds
top-1 / top-5 (percent) per depth, the best and the deepest evaluated depth, and the step of
the model the features came from (`model_step`, from the cache's manifest).
"""

from __future__ import annotations

import argparse
import sys

from featnorm.evaluation.features import FeatureCacheError, load_features, read_manifest
from featnorm.evaluation.knn_probe import DEFAULT_K, DEFAULT_TEMPERATURE, knn_probe
from featnorm.evaluation.script_options import add_runtime_options, apply_runtime_options, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-features", required=True, help="feature cache of the training split")
    p.add_argument("--val-features", required=True, help="feature cache of the validation split")
    p.add_argument("--out", required=True, help="output JSON (e.g. results/runs/RUN/eval/knn_probe.json)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"neighbours per query (default {DEFAULT_K})")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help=f"vote weight exp(similarity / T) (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--depths", type=int, nargs="+", default=None,
                   help="depths to evaluate (0 = patch embedding, -1 = last block; default: all)")
    p.add_argument("--num-classes", type=int, default=None, help="default: largest label + 1")
    p.add_argument("--query-chunk", type=int, default=1024, help="validation features per similarity block")
    p.add_argument("--train-chunk", type=int, default=65536, help="training features per similarity block")
    add_runtime_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = apply_runtime_options(args)
    try:
        tx, ty = load_features(args.train_features)
        vx, vy = load_features(args.val_features)
        result = knn_probe(tx, ty, vx, vy, k=args.k, temperature=args.temperature, depths=args.depths,
                           num_classes=args.num_classes, device=device, query_chunk=args.query_chunk,
                           train_chunk=args.train_chunk)
        source = (read_manifest(args.train_features) or {}).get("source", {})
    except (FeatureCacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["model_step"] = source.get("step")
    result["images_seen"] = source.get("images_seen")
    result["train_features"] = str(args.train_features)
    result["val_features"] = str(args.val_features)
    write_json(args.out, result)
    print(f"k-NN probe (k={args.k}): best top-1 {result['best_top1']:.2f}% at depth {result['best_depth']}, "
          f"last depth {result['last_top1']:.2f}%; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
