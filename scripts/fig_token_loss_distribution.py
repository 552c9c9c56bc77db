#!/usr/bin/env python
"""Distribution of per-token losses per run (density on a log axis and the tail on log-log
axes), from every predicted real target token under --masks random masks of each image (the
same masks and forward as the loss maps for the same --seed and --forward; by default the
training forward, as the reference). Tail statistics (99th percentile, p99/median, excess
kurtosis) are in the legend and in PREFIX.csv (one row per run).

  python scripts/fig_token_loss_distribution.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/token_loss_distribution
"""

from __future__ import annotations

from featnorm.plotting.loss_maps import loss_maps_for_runs, pooled_token_losses
from featnorm.plotting.script_options import (
    image_figure_inputs,
    image_figure_parser,
    print_written,
    user_errors_reported,
    write_csv_output,
)
from featnorm.plotting.token_loss_distribution import make_token_loss_figure, stats_table


def main(argv: list[str] | None = None) -> None:
    p = image_figure_parser(__doc__, masks=True, extra_output="csv")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        fig = image_figure_inputs(p, args)
        losses = pooled_token_losses(loss_maps_for_runs(fig.runs, fig.images, args.masks, args.batch_size, args.seed,
                                                        fig.device, keep_token_losses=True, forward=args.forward))
        make_token_loss_figure(losses, fig.paths, args.masks, len(fig.images))
        print_written([*fig.paths, write_csv_output(args, stats_table(losses))])


if __name__ == "__main__":
    main()
