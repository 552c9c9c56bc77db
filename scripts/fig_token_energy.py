#!/usr/bin/env python
"""Token energy maps: the L2 norm of each patch's teacher output feature (after the output
norm), one row per image, one column per run (one colour scale per run). Writes PREFIX.png,
PREFIX.pdf and PREFIX.csv (per run and image: mean, std, coefficient of variation, max/min).

  python scripts/fig_token_energy.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/token_energy
"""

from __future__ import annotations

from featnorm.plotting.script_options import (
    image_figure_inputs,
    image_figure_parser,
    print_written,
    user_errors_reported,
    write_csv_output,
)
from featnorm.plotting.token_energy import energy_for_runs, energy_table, make_token_energy_figure


def main(argv: list[str] | None = None) -> None:
    p = image_figure_parser(__doc__, extra_output="csv")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        fig = image_figure_inputs(p, args)
        energy = energy_for_runs(fig.runs, fig.images, fig.device)
        make_token_energy_figure(fig.images, energy, fig.paths)
        print_written([*fig.paths, write_csv_output(args, energy_table(fig.images, energy))])


if __name__ == "__main__":
    main()
