#!/usr/bin/env python
"""Per-sample losses (the reference's plot-sample-losses): for each image, the mean over
--masks random masks (x the batch repeat's copies, in the default training forward) of the
mean token loss of its predictor row, and of the row's token-loss variance; per run, the
density histogram and the cumulative distribution of both over the images. Writes
PREFIX.png, PREFIX.pdf and PREFIX.csv (one row per run and image).

  python scripts/fig_sample_losses.py --runs results/runs/tanh results/runs/ln \\
      --shards results/data/imagenet/val --num-images 20 --out results/paper/figures/sample_losses
"""

from __future__ import annotations

from featnorm.plotting.loss_maps import loss_maps_for_runs
from featnorm.plotting.sample_losses import make_sample_loss_figure, sample_stats_table
from featnorm.plotting.script_options import (
    image_figure_inputs,
    image_figure_parser,
    print_written,
    user_errors_reported,
    write_csv_output,
)


def main(argv: list[str] | None = None) -> None:
    p = image_figure_parser(__doc__, masks=1000, extra_output="csv")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        fig = image_figure_inputs(p, args)
        results = loss_maps_for_runs(fig.runs, fig.images, args.masks, args.batch_size, args.seed, fig.device,
                                     forward=args.forward)
        table = sample_stats_table(results, fig.images)
        make_sample_loss_figure(table, fig.paths, args.masks, args.forward)
        print_written([*fig.paths, write_csv_output(args, table)])


if __name__ == "__main__":
    main()
