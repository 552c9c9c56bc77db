#!/usr/bin/env python
"""Distribution of per-token losses per run (density on a log axis and the tail on log-log
axes), from every real target token under --masks random masks of each image (the same masks
as the loss maps for the same --seed). Tail statistics (99th percentile, p99/median, excess
kurtosis) are in the legend and in PREFIX.csv (one row per run).

  python scripts/fig_token_loss_distribution.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/token_loss_distribution
"""

from __future__ import annotations

import argparse

from featnorm.plotting.image_sources import load_images
from featnorm.plotting.loss_maps import loss_maps_for_runs
from featnorm.plotting.model_io import resolve_device
from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    USER_ERRORS,
    add_device_option,
    add_figure_outputs,
    add_image_options,
    add_mask_options,
    add_run_options,
    fail,
    figure_paths,
    output_path,
    require_models,
)
from featnorm.plotting.token_loss_distribution import make_token_loss_figure, stats_table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    add_image_options(p)
    add_mask_options(p)
    add_device_option(p)
    add_figure_outputs(p, extra="csv")
    args = p.parse_args(argv)
    try:
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        require_models(p, runs)
        images = load_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)
        _, _, losses = loss_maps_for_runs(runs, images, args.masks, args.batch_size, args.seed,
                                          resolve_device(args.device), keep_token_losses=True)
        make_token_loss_figure(losses, paths, args.masks, len(images))
        written = list(paths)
        csv = output_path(args, "csv", beside_figure=True)
        if csv is not None:
            csv.parent.mkdir(parents=True, exist_ok=True)
            stats_table(losses).to_csv(csv, index=False)
            written.append(csv)
        print("wrote", ", ".join(map(str, written)))
    except USER_ERRORS as e:
        fail(p, e)


if __name__ == "__main__":
    main()
