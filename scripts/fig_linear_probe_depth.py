#!/usr/bin/env python
"""Linear-probe accuracy against encoder depth (0 = patch embedding, d = block d), one line per
run, the best depth starred, from each run's eval/linear_probe.json. Writes PREFIX.png, PREFIX.pdf.

  python scripts/fig_linear_probe_depth.py --runs results/runs/* --out results/paper/figures/linear_probe_depth
"""

from __future__ import annotations

from featnorm.plotting.linear_probe_depth import make_linear_probe_depth
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


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    add_run_options(p)
    add_group_options(p)
    p.add_argument("--metric", choices=("top1", "top5"), default="top1", help="accuracy to plot (default top1)")
    add_figure_outputs(p)
    args = p.parse_args(argv)
    with user_errors_reported(p):
        paths = figure_paths(p, args)
        runs = load_runs(args.runs, args.names)
        make_linear_probe_depth(runs, paths, args.metric, groups_from_args(runs, args))
        print_written(paths)


if __name__ == "__main__":
    main()
