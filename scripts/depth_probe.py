#!/usr/bin/env python
"""NYU-Depth-v2 depth probe on the frozen teacher encoder of a checkpoint.

    depth_probe.py --model model.pt --train-shards DIR --val-shards DIR --out JSON --strips PNG

As the reference's validate-monocular-depth: features of the 4th block from the end on the
16 x 16 patch grid of 256 x 256 centre crops; a conv head trained with smooth-L1 between its
raw output and the per-image normalised ground truth (median, mean absolute deviation)
+ 0.2 x 4-scale gradient matching (AdamW lr 5e-4, betas 0.9/0.95, batch 320, 10 epochs).
The JSON holds RMSE (metres, after mapping the raw prediction back with the ground truth's
median and scale), AbsRel and delta < 1.25, averaged over validation images; the PNG shows
image | true depth | predicted depth for the first validation images.
--normalize-prediction normalises the prediction too (MiDaS's invariant loss; forgives the
head's scale and shift, so the RMSE is lower and not comparable with the paper's).
"""

from __future__ import annotations

import argparse
import sys


from featnorm.data.shards import ShardError, resolve_shards
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_encoder
from featnorm.evaluation.depth_probe import save_depth_strips, train_depth_probe
from featnorm.evaluation.eval_data import depth_batches, shard_counts
from featnorm.evaluation.script_options import add_runtime_options, apply_runtime_options, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by pretrain.py")
    p.add_argument("--train-shards", required=True, help="NYU train split directory (jpg + depth.npy shards)")
    p.add_argument("--val-shards", required=True, help="NYU validation split directory")
    p.add_argument("--out", required=True, help="output JSON (e.g. results/runs/RUN/eval/depth_probe.json)")
    p.add_argument("--strips", required=True, help="output PNG of image | true depth | predicted depth rows")
    p.add_argument("--weights", choices=["teacher", "student"], default="teacher")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=320, help="images per step (the reference: its training batch, 320)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95), metavar=("B1", "B2"), help="AdamW betas")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (torch's default)")
    p.add_argument("--normalize-prediction", action="store_true",
                   help="normalise the prediction per image too (MiDaS); default: only the ground truth (the reference)")
    p.add_argument("--depth-resize", choices=["bilinear", "nearest"], default="bilinear",
                   help="how the cropped ground truth is resized to the image size: bilinear with antialiasing "
                        "(the reference: torchvision Resize) or nearest (invents no depths across object edges)")
    p.add_argument("--grad-weight", type=float, default=0.2, help="weight of the gradient-matching loss")
    p.add_argument("--feature-depth", type=int, default=-4,
                   help="index into the encoder's depths: 0 = embedding, d = block d; negative from the end "
                        "(-1 = last block; -4 = the 4th block from the end, the reference's, or the first block "
                        "of a shallower encoder)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--max-train-images", type=int, default=None, help="only the first N training images (demo/tests)")
    p.add_argument("--max-val-images", type=int, default=None, help="only the first N validation images")
    p.add_argument("--num-strips", type=int, default=4, help="validation images drawn in the PNG")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = apply_runtime_options(args)
    try:
        encoder, cfg = load_encoder(args.model, args.weights, device)
        train, val = resolve_shards(args.train_shards), resolve_shards(args.val_shards)
        train_counts, val_counts = shard_counts(train), shard_counts(val)
        enc_cfg = cfg.model.encoder
        common = dict(batch_size=args.batch_size, image_size=args.image_size, patch_size=cfg.model.patch_size,
                      num_registers=enc_cfg.num_registers, num_workers=args.num_workers,
                      depth_resize=args.depth_resize)
        result, strips = train_depth_probe(
            encoder,
            lambda epoch: depth_batches(train, train_counts, max_images=args.max_train_images,
                                        seed=args.seed * 1000 + epoch, **common),
            lambda: depth_batches(val, val_counts, max_images=args.max_val_images, **common),
            encoder_depth=enc_cfg.depth, dim=enc_cfg.dim, epochs=args.epochs, lr=args.lr, betas=tuple(args.betas),
            weight_decay=args.weight_decay, grad_weight=args.grad_weight, normalize_prediction=args.normalize_prediction,
            feature_depth=args.feature_depth,
            device=device, seed=args.seed, num_strip_images=args.num_strips, progress=not args.no_progress,
        )
        save_depth_strips(strips, args.strips, cfg.model.patch_size)
    except (CheckpointError, ShardError, ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result.update({"model": str(args.model), "weights": args.weights, "batch_size": args.batch_size,
                   "image_size": args.image_size, "depth_resize": args.depth_resize, "train_shards": str(args.train_shards),
                   "val_shards": str(args.val_shards), "strips": str(args.strips)})
    write_json(args.out, result)
    print(f"depth probe: RMSE {result['rmse']:.4f} m, AbsRel {result['absrel']:.4f}, "
          f"delta<1.25 {result['delta1']:.4f}; wrote {args.out} and {args.strips}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
