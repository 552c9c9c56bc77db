"""Command-line options shared by the figure and table scripts (`scripts/fig_*.py`,
`scripts/table_summary.py`), so every script spells them the same way, and the steps every
per-image figure script takes before its own (`image_figure_parser`, `image_figure_inputs`)."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch

from featnorm.evaluation.checkpoint_loading import CheckpointError
from featnorm.plotting.image_sources import SourceImage, load_images
from featnorm.plotting.model_io import resolve_device
from featnorm.plotting.run_groups import RunGroup, group_runs, parse_reference
from featnorm.plotting.predicted_tokens import FORWARD_MODES
from featnorm.plotting.run_results import FigureInputError, RunResults, load_runs

# errors that are the user's input, not bugs: scripts report them in one line
USER_ERRORS = (FigureInputError, CheckpointError)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                   help="run directories (results/runs/<run>), in the order to show them")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="display names of the runs (default: the directory names)")


def add_group_options(p: argparse.ArgumentParser) -> None:
    """`--groups`, `--baselines`, `--reference` (see featnorm.plotting.run_groups)."""
    p.add_argument("--groups", nargs="+", metavar="GROUP",
                   help="the group of each run, in --runs order: the runs of a group are seeds of one experiment "
                        "and are shown as mean and spread (default: every run alone)")
    p.add_argument("--baselines", nargs="+", default=[], metavar="GROUP",
                   help="groups that are random-init baselines")
    p.add_argument("--reference", nargs="+", default=[], metavar="GROUP=BASELINE",
                   help="the baseline a group's gain over random init is measured against (default: the first of --baselines)")


def groups_from_args(runs: list[RunResults], args: argparse.Namespace) -> list[RunGroup]:
    return group_runs(runs, args.groups, args.baselines, parse_reference(args.reference))


def add_figure_outputs(p: argparse.ArgumentParser, extra: str | None = None) -> None:
    more = f", PREFIX.{extra}" if extra else ""
    beside = f" (default: beside the PNG/PDF, suffix .{extra})" if extra else ""
    p.add_argument("--out", metavar="PREFIX", help=f"write PREFIX.png, PREFIX.pdf{more}")
    p.add_argument("--png", metavar="PATH", help="PNG path (overrides --out for the PNG)")
    p.add_argument("--pdf", metavar="PATH", help="PDF path (overrides --out for the PDF)")
    if extra:
        p.add_argument(f"--{extra}", metavar="PATH", help=f"{extra.upper()} path (overrides --out for it){beside}")


def output_path(args: argparse.Namespace, ext: str, beside_figure: bool = False) -> Path | None:
    """The path for one output format: its own flag, else `--out` + suffix, else (with
    `beside_figure`, for a figure's data file) the PNG's or PDF's path with that suffix."""
    explicit = getattr(args, ext, None)
    if explicit:
        return Path(explicit)
    if args.out:
        return Path(f"{args.out}.{ext}")
    if beside_figure:
        fig = args.png or args.pdf
        return Path(fig).with_suffix(f".{ext}") if fig else None
    return None


def figure_paths(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    paths = [q for q in (output_path(args, "png"), output_path(args, "pdf")) if q is not None]
    if not paths:
        p.error("give --out PREFIX or --png/--pdf paths")
    return paths


def add_image_options(p: argparse.ArgumentParser, num_images: int = 4,
                      what: str = "images to show, one figure row each") -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", metavar="DIR", help="validation shards (WebDataset .tar files, with manifest.json)")
    src.add_argument("--image-dir", metavar="DIR", help="a folder of your own images (searched recursively)")
    p.add_argument("--num-images", type=int, default=num_images, help=f"{what} (default {num_images})")
    p.add_argument("--skip-images", type=int, default=0, help="skip this many images of the source first (default 0)")
    p.add_argument("--image-size", type=int, default=256,
                   help="centre crop resized to this square side in pixels (default 256: a 16 x 16 grid of 16 px patches)")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")


def add_mask_options(p: argparse.ArgumentParser, masks: int = 8000) -> None:
    p.add_argument("--masks", type=int, default=masks, help=f"random context/target masks per image (default {masks})")
    p.add_argument("--batch-size", type=int, default=256, help="masks per forward pass (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks; every run sees the same masks (default 0)")
    p.add_argument("--forward", choices=FORWARD_MODES, default="training",
                   help="training (default, as the reference): each mask's row repeated batch_repeat times, every "
                        "copy predicting a random target_capacity of its target windows; predict-all: every "
                        "target token predicted from every context token")


def require_models(p: argparse.ArgumentParser, runs: list[RunResults]) -> None:
    missing = [str(r.model_path) for r in runs if not r.has_model]
    if missing:
        p.error(f"this figure needs each run's model.pt; missing: {', '.join(missing)}")


def fail(p: argparse.ArgumentParser, error: Exception) -> None:
    """Exit with one line naming the script and the problem (exit status 1)."""
    raise SystemExit(f"{p.prog}: error: {error}")


@contextlib.contextmanager
def user_errors_reported(p: argparse.ArgumentParser) -> Iterator[None]:
    """Inside, an error in the user's input ends the script with one line (`fail`), not a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        fail(p, e)


def print_written(paths: list[Path | None]) -> None:
    print("wrote", ", ".join(str(q) for q in paths if q is not None))


def figure_parser(description: str) -> argparse.ArgumentParser:
    """A figure or table script's parser, its module docstring (with the example) as the help."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def image_figure_parser(
    description: str,
    masks: bool | int = False,
    own_options: Callable[[argparse.ArgumentParser], None] | None = None,
    extra_output: str | None = None,
) -> argparse.ArgumentParser:
    """The parser of a per-image figure script (loss maps, PCA, token energy, ...), options in
    this order: runs, image source, masks (with `masks`; an int sets the default of --masks),
    the script's `own_options`, device, outputs (PNG, PDF and `extra_output`, e.g. "csv")."""
    p = figure_parser(description)
    add_run_options(p)
    add_image_options(p)
    if masks is True:
        add_mask_options(p)
    elif masks:
        add_mask_options(p, int(masks))
    if own_options is not None:
        own_options(p)
    add_device_option(p)
    add_figure_outputs(p, extra=extra_output)
    return p


@dataclass
class ImageFigureInputs:
    paths: list[Path]  # the PNG and/or PDF to write
    runs: list[RunResults]  # each with its model.pt
    images: list[SourceImage]
    device: torch.device


def image_figure_inputs(p: argparse.ArgumentParser, args: argparse.Namespace) -> ImageFigureInputs:
    """What every per-image figure needs, checked in the order a user would fix it: output
    paths, the runs and their model.pt files, the images."""
    paths = figure_paths(p, args)
    runs = load_runs(args.runs, args.names)
    require_models(p, runs)
    images = load_images(args.shards, args.image_dir, args.num_images, args.image_size, args.skip_images)
    return ImageFigureInputs(paths, runs, images, resolve_device(args.device))


def write_csv_output(args: argparse.Namespace, table: pd.DataFrame) -> Path | None:
    """Write a figure's numbers to `--csv` (else `--out`.csv, else beside the figure); the path."""
    csv = output_path(args, "csv", beside_figure=True)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    return csv
