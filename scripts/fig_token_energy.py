#!/usr/bin/env python
"""Token energy maps: the L2 norm of each patch's teacher output feature (after the output
norm), one row per image, one column per run (one colour scale per run). Writes PREFIX.png,
PREFIX.pdf and PREFIX.csv (per run and image: mean, std, coefficient of variation, max/min).

  python scripts/fig_token_energy.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/token_energy
"""

from __future__ import annotations

import argparse

from featnorm.plotting.image_sources import load_images
from featnorm.plotting.model_io import resolve_device
from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    USER_ERRORS,
    add_device_option,
    add_figure_outputs,
    add_image_options,
    add_run_options,
    fail,
    figure_paths,
    output_path,
    require_models,
)
from featnorm.plotting.token_energy import energy_for_runs, energy_table, make_token_energy_figure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    add_image_options(p)
    add_device_option(p)
    add_figure_outputs(p, extra="csv")
    args = p.parse_args(argv)
    try:
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        require_models(p, runs)
        images = load_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)
        energy = energy_for_runs(runs, images, resolve_device(args.device))
        make_token_energy_figure(images, energy, paths)
        written = list(paths)
        csv = output_path(args, "csv", beside_figure=True)
        if csv is not None:
            csv.parent.mkdir(parents=True, exist_ok=True)
            energy_table(images, energy).to_csv(csv, index=False)
            written.append(csv)
        print("wrote", ", ".join(map(str, written)))
    except USER_ERRORS as e:
        fail(p, e)


if __name__ == "__main__":
    main()
