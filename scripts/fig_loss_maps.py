#!/usr/bin/env python
"""Loss maps (the paper's main figure): per-token loss averaged over --masks random
context/target masks per image; one row per image: the image, then per run the image times
its normalized loss map and the loss heatmap (one colour scale per run, in its colorbar).

Writes PREFIX.png, PREFIX.pdf and PREFIX.npz (the maps: `<run>/mean`, `<run>/count`).

  python scripts/fig_loss_maps.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/loss_maps
"""

from __future__ import annotations

import argparse

from featnorm.plotting.image_sources import load_images
from featnorm.plotting.loss_maps import loss_maps_for_runs, make_loss_map_figure, save_maps
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    add_image_options(p)
    add_mask_options(p)
    add_device_option(p)
    add_figure_outputs(p, extra="npz")
    args = p.parse_args(argv)
    try:
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        require_models(p, runs)
        images = load_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)
        maps, counts, _ = loss_maps_for_runs(runs, images, args.masks, args.batch_size, args.seed, resolve_device(args.device))
        make_loss_map_figure(images, maps, paths, args.masks)
        npz = output_path(args, "npz", beside_figure=True)
        if npz is not None:
            save_maps(npz, images, maps, counts)
        print("wrote", ", ".join(str(q) for q in paths + ([npz] if npz else [])))
    except USER_ERRORS as e:
        fail(p, e)


if __name__ == "__main__":
    main()
