#!/usr/bin/env python
"""PCA feature maps: the first three principal components of each image's teacher patch
features at --depth (default -4: the 4th block from the end) as RGB; one row per image, the
image then one column per run. Writes PREFIX.png and PREFIX.pdf.

  python scripts/fig_pca_features.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --image-dir my_photos --out results/paper/figures/pca_features
"""

from __future__ import annotations

import argparse

from featnorm.plotting.image_sources import load_images
from featnorm.plotting.model_io import resolve_device
from featnorm.plotting.pca_features import make_pca_figure, pca_for_runs
from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    USER_ERRORS,
    add_device_option,
    add_figure_outputs,
    add_image_options,
    add_run_options,
    fail,
    figure_paths,
    require_models,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    add_image_options(p)
    p.add_argument("--depth", type=int, default=-4,
                   help="encoder depth of the features: 0 = patch embedding, d = output of block d, "
                        "negative counts from the end (default -4: the 4th block from the end)")
    add_device_option(p)
    add_figure_outputs(p)
    args = p.parse_args(argv)
    try:
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        require_models(p, runs)
        images = load_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)
        rgb, label = pca_for_runs(runs, images, args.depth, resolve_device(args.device))
        make_pca_figure(images, rgb, paths, label)
        print("wrote", ", ".join(map(str, paths)))
    except USER_ERRORS as e:
        fail(p, e)


if __name__ == "__main__":
    main()
