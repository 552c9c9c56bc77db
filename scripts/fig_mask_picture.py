#!/usr/bin/env python
"""The mask picture (the reference's make-viz): the first --rows packed training rows of a run,
as its training would draw them (its data config, seed and shards), each image redrawn from
its patches with the context patches crossed by an X and the target patches plain, under a
strip of the row's token slots (context segment | target segment, coloured by image).
Writes PREFIX.png and PREFIX.pdf. Needs only the run's config.yaml and the training shards.

  python scripts/fig_mask_picture.py --config results/runs/tanh/config.yaml \\
      --shards results/data/imagenet/train --out results/paper/figures/mask_picture
"""

from __future__ import annotations

from pathlib import Path

from featnorm.config import load_run_config
from featnorm.data.shards import ShardError
from featnorm.plotting.mask_picture import first_training_rows, make_mask_picture, sample_pictures
from featnorm.plotting.run_results import FigureInputError
from featnorm.plotting.script_options import (
    add_figure_outputs,
    fail,
    figure_parser,
    figure_paths,
    print_written,
)


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    p.add_argument("--config", required=True, metavar="YAML", help="the run's resolved config (runs/<run>/config.yaml)")
    p.add_argument("--shards", metavar="DIR", help="training shards (default: the config's data.train_shards)")
    p.add_argument("--rows", type=int, default=4, help="packed rows to draw (default 4)")
    p.add_argument("--name", help="run name in the title (default: the config's folder name)")
    add_figure_outputs(p)
    args = p.parse_args(argv)
    paths = figure_paths(p, args)
    if args.rows < 1:
        p.error("--rows must be at least 1")
    try:
        cfg = load_run_config(args.config)
        batch = first_training_rows(cfg, args.rows, args.shards)
    except (OSError, ValueError, ShardError, FigureInputError) as e:
        fail(p, e)
    make_mask_picture(batch, sample_pictures(batch, cfg.model.patch_size), paths,
                      args.name or Path(args.config).resolve().parent.name)
    print_written(paths)


if __name__ == "__main__":
    main()
