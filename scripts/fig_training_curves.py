#!/usr/bin/env python
"""Training curves: loss, LiDAR and RankMe against images seen, one line per run, from each
run's train_log.jsonl. Writes PREFIX.png and PREFIX.pdf.

  python scripts/fig_training_curves.py --runs results/runs/* --out results/paper/figures/training_curves
"""

from __future__ import annotations

from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    add_figure_outputs,
    add_group_options,
    add_run_options,
    figure_parser,
    figure_paths,
    groups_from_args,
    print_written,
    user_errors_reported,
)
from featnorm.plotting.training_curves import make_training_curves


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    add_run_options(p)
    add_group_options(p)
    p.add_argument("--points", type=int, default=1000,
                   help="the loss is averaged into at most this many bins of images seen (default 1000)")
    p.add_argument("--linear-loss", action="store_true", help="linear instead of logarithmic loss axis")
    add_figure_outputs(p)
    args = p.parse_args(argv)
    with user_errors_reported(p):
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        make_training_curves(runs, paths, args.points, log_loss=not args.linear_loss,
                             groups=groups_from_args(runs, args))
        print_written(paths)


if __name__ == "__main__":
    main()
