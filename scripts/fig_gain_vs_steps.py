#!/usr/bin/env python
"""Gain over random init against training steps: k-NN top-1 (best depth) of each trained run's
snapshots (train.snapshot_steps) and final model minus its baseline's mean, seeds as mean and
± 1 std band. Writes PREFIX.png, PREFIX.pdf and PREFIX.csv (the plotted curves).

  python scripts/fig_gain_vs_steps.py --runs results/demo/runs/{tanh,random}-s{0,1} \\
      --groups tanh tanh random random --baselines random --out results/demo/paper/figures/gain_vs_steps
"""

from __future__ import annotations

from featnorm.plotting.gain_vs_steps import make_gain_vs_steps
from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    add_figure_outputs,
    add_group_options,
    add_run_options,
    figure_parser,
    figure_paths,
    groups_from_args,
    output_path,
    print_written,
    user_errors_reported,
)


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    add_run_options(p)
    add_group_options(p)
    add_figure_outputs(p, extra="csv")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        paths = figure_paths(p, args)
        csv = output_path(args, "csv", beside_figure=True)
        runs = load_runs(args.runs, args.names)
        groups = groups_from_args(runs, args)
        if not any(g.baseline for g in groups):
            p.error("give --baselines: the gain is measured against a random-init baseline group")
        make_gain_vs_steps(groups, paths, csv)
        print_written(paths + [csv])


if __name__ == "__main__":
    main()
