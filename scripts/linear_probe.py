#!/usr/bin/env python
"""Linear probes on cached features: one classifier per encoder depth, trained together.

    linear_probe.py --train-features DIR --val-features DIR --out JSON

DIRs are feature caches written by extract_features.py. The reference's defaults: raw
features, AdamW lr 1e-3 (constant), batch 2048, 50 epochs, the final epoch's accuracy. The
JSON holds top-1 / top-5 (percent) per depth on the validation features, the best and the
last depth, and the training loss per epoch. --standardize standardises each depth and
channel with the training set's mean and std first (not what the paper did).
"""

from __future__ import annotations

import argparse
import sys


from featnorm.evaluation.features import FeatureCacheError, feature_depth_indices, load_features
from featnorm.evaluation.linear_probe import train_linear_probes
from featnorm.evaluation.script_options import add_runtime_options, apply_runtime_options, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-features", required=True, help="feature cache of the training split")
    p.add_argument("--val-features", required=True, help="feature cache of the validation split")
    p.add_argument("--out", required=True, help="output JSON (e.g. results/runs/RUN/eval/linear_probe.json)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (torch's default)")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=False,
                   help="standardise each depth and channel with the training set's mean and std "
                        "(default: raw features, as the reference)")
    p.add_argument("--num-classes", type=int, default=None, help="default: largest label + 1")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = apply_runtime_options(args)
    try:
        tx, ty = load_features(args.train_features)
        vx, vy = load_features(args.val_features)
        depths = feature_depth_indices(args.train_features)
        if feature_depth_indices(args.val_features) != depths:
            raise ValueError(f"{args.train_features} and {args.val_features} hold features of different depths "
                             f"({depths} vs {feature_depth_indices(args.val_features)}); extract both the same way")
        result = train_linear_probes(
            tx, ty, vx, vy, num_classes=args.num_classes, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, standardize=args.standardize, depth_indices=depths,
            device=device, seed=args.seed, progress=not args.no_progress,
        )
    except (FeatureCacheError, ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result["train_features"] = str(args.train_features)
    result["val_features"] = str(args.val_features)
    write_json(args.out, result)
    print(f"linear probe: best top-1 {result['best_top1']:.2f}% at depth {result['best_depth']}, "
          f"last depth {result['last_top1']:.2f}%; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
