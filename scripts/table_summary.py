#!/usr/bin/env python
"""Summary table: one row per run (or per --groups group of seed copies: mean ± std, n) with the
settings that differ between the rows (from the resolved configs), linear-probe top-1 at the
best depth (and which) and at the last depth, k-NN top-1 (best, last depth), depth-probe RMSE,
the gain over the random-init baseline (--baselines, --reference), LiDAR, RankMe, images seen,
training hours and parameter counts. Missing results are blank cells. Writes PREFIX.csv,
PREFIX.md and PREFIX.tex (or --csv/--md/--tex).

  python scripts/table_summary.py --runs results/runs/* --out results/paper/tables/summary
  python scripts/table_summary.py --runs results/demo/runs/{tanh,random}-s{0,1} \\
      --groups tanh tanh random random --baselines random --out summary
"""

from __future__ import annotations

from pathlib import Path

from featnorm.plotting.run_results import load_runs
from featnorm.plotting.script_options import (
    add_group_options,
    add_run_options,
    figure_parser,
    groups_from_args,
    print_written,
    user_errors_reported,
)
from featnorm.plotting.summary_table import make_summary_table


def main(argv: list[str] | None = None) -> None:
    p = figure_parser(__doc__)
    add_run_options(p)
    add_group_options(p)
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.csv, PREFIX.md and PREFIX.tex")
    for ext in ("csv", "md", "tex"):
        p.add_argument(f"--{ext}", metavar="PATH", help=f"{ext} path (overrides --out for it)")
    p.add_argument("--no-params", action="store_true", help="do not read model.pt files (no parameter counts)")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        paths = {ext: getattr(args, ext) or (f"{args.out}.{ext}" if args.out else None) for ext in ("csv", "md", "tex")}
        if not any(paths.values()):
            p.error("give --out PREFIX or --csv/--md/--tex paths")
        runs = load_runs(args.runs, args.names)
        make_summary_table(runs, paths["csv"], paths["md"], paths["tex"], with_params=not args.no_params,
                           groups=groups_from_args(runs, args))
        print_written([Path(v) for v in paths.values() if v])


if __name__ == "__main__":
    main()
