#!/usr/bin/env python
"""Loss maps (the paper's main figure): per-token loss averaged over --masks random
context/target masks per image; one row per image: the image, then per run the image times
its normalized loss map and the loss heatmap (one colour scale per run, in its colorbar).
--forward training (default, as the reference) averages the training forward's predictions
(batch repeat 4, 25 % of the targets per copy); --forward predict-all predicts every target.

Writes PREFIX.png, PREFIX.pdf and PREFIX.npz (the maps: `<run>/mean`, `<run>/count`).

  python scripts/fig_loss_maps.py --runs results/runs/ijepa-tanh results/runs/ijepa-ln \\
      --shards results/data/imagenet/validation --out results/paper/figures/loss_maps
"""

from __future__ import annotations

from featnorm.plotting.loss_maps import loss_maps_for_runs, make_loss_map_figure, maps_and_counts, save_maps
from featnorm.plotting.script_options import (
    image_figure_inputs,
    image_figure_parser,
    output_path,
    print_written,
    user_errors_reported,
)


def main(argv: list[str] | None = None) -> None:
    p = image_figure_parser(__doc__, masks=True, extra_output="npz")
    args = p.parse_args(argv)
    with user_errors_reported(p):
        fig = image_figure_inputs(p, args)
        maps, counts = maps_and_counts(loss_maps_for_runs(fig.runs, fig.images, args.masks, args.batch_size, args.seed,
                                                          fig.device, forward=args.forward))
        make_loss_map_figure(fig.images, maps, fig.paths, args.masks, forward=args.forward)
        npz = output_path(args, "npz", beside_figure=True)
        if npz is not None:
            save_maps(npz, fig.images, maps, counts)
        print_written([*fig.paths, npz])


if __name__ == "__main__":
    main()
