#!/usr/bin/env python
"""PCA feature maps: the first three principal components of each image's teacher patch
features at --depth (default -4: the 4th block from the end) as RGB; one row per image, the
image then one column per run. --style hsv draws them as the reference's visualize-embeddings
does (features blurred, whitened PCA, read as hue / saturation / value, upsampled bilinearly).
Writes PREFIX.png and PREFIX.pdf.

  python scripts/fig_pca_features.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --image-dir my_photos --out results/paper/figures/pca_features
"""

from __future__ import annotations

import argparse

from featnorm.plotting.pca_features import STYLES, make_pca_figure, pca_for_runs
from featnorm.plotting.script_options import (
    image_figure_inputs,
    image_figure_parser,
    print_written,
    user_errors_reported,
)


def add_depth_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=int, default=-4,
                   help="encoder depth of the features: 0 = patch embedding, d = output of block d, "
                        "negative counts from the end (default -4: the 4th block from the end)")
    p.add_argument("--style", choices=STYLES, default="rgb",
                   help="rgb: the components as R, G, B (default); hsv: the reference's visualize-embeddings")


def main(argv: list[str] | None = None) -> None:
    p = image_figure_parser(__doc__, own_options=add_depth_option)
    args = p.parse_args(argv)
    with user_errors_reported(p):
        fig = image_figure_inputs(p, args)
        rgb, label = pca_for_runs(fig.runs, fig.images, args.depth, fig.device, args.style)
        make_pca_figure(fig.images, rgb, fig.paths, label, args.style)
        print_written(fig.paths)


if __name__ == "__main__":
    main()
