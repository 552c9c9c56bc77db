#!/usr/bin/env python
"""The dataset-averaged loss map (the reference's plot-mean-loss): every predicted token's loss
over --num-images images (centre-cropped to --image-size, so all share one patch grid) x
--masks random masks each, averaged per grid position; by default with the training forward
(batch repeat 4, 25 % capacities), as the reference. One row per run: the mean-loss heatmap
and the per-channel loss image (each position's per-channel losses laid out as a small RGB
patch). Writes PREFIX.png, PREFIX.pdf and PREFIX.npz (`<run>/mean`, `<run>/count`,
`<run>/channel_mean`, `<run>/channel_image`). Images are read as a stream (thousands are fine).

  python scripts/fig_mean_loss.py --runs results/runs/tanh results/runs/ln \\
      --shards results/data/imagenet/train --num-images 16000 --out results/paper/figures/mean_loss
"""

from __future__ import annotations

from featnorm.plotting.image_sources import iter_images
from featnorm.plotting.mean_loss import make_mean_loss_figure, mean_loss_for_runs, save_mean_loss
from featnorm.plotting.model_io import resolve_device
from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    add_device_option,
    add_figure_outputs,
    add_image_options,
    add_mask_options,
    add_run_options,
    figure_parser,
    figure_paths,
    output_path,
    print_written,
    require_models,
    user_errors_reported,
)


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    add_run_options(p)
    # the reference: 50 batches of 320 rows (~one image each at 256 px)
    add_image_options(p, num_images=16000, what="images averaged over")
    add_mask_options(p, masks=1)
    add_device_option(p)
    add_figure_outputs(p, extra="npz")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        require_models(p, runs)

        def images():
            return iter_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)

        results = mean_loss_for_runs(runs, images, args.masks, args.batch_size, args.seed, resolve_device(args.device),
                                     args.forward, progress=not args.no_progress)
        make_mean_loss_figure(results, paths, args.forward)
        npz = output_path(args, "npz", beside_figure=True)
        if npz is not None:
            save_mean_loss(npz, results)
        print_written([*paths, npz])


if __name__ == "__main__":
    main()
