"""Command-line options shared by the figure and table scripts (`scripts/fig_*.py`,
`scripts/table_summary.py`), so every script spells them the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from featnorm.evaluation.checkpoint_loading import CheckpointError
from featnorm.plotting.run_results import FigureInputError, RunResults

# errors that are the user's input, not bugs: scripts report them in one line
USER_ERRORS = (FigureInputError, CheckpointError)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                   help="run directories (results/runs/<run>), in the order to show them")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="display names of the runs (default: the directory names)")


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


def add_image_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", metavar="DIR", help="validation shards (WebDataset .tar files, with manifest.json)")
    src.add_argument("--image-dir", metavar="DIR", help="a folder of your own images (searched recursively)")
    p.add_argument("--num-images", type=int, default=4, help="images to show, one figure row each (default 4)")
    p.add_argument("--skip-images", type=int, default=0, help="skip this many images of the source first (default 0)")
    p.add_argument("--image-size", type=int, default=256,
                   help="centre crop resized to this square side in pixels (default 256: a 16 x 16 grid of 16 px patches)")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1, ...")


def add_mask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", type=int, default=8000, help="random context/target masks per image (default 8000, as the paper)")
    p.add_argument("--batch-size", type=int, default=256, help="masks per forward pass (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks; every run sees the same masks (default 0)")


def require_models(p: argparse.ArgumentParser, runs: list[RunResults]) -> None:
    missing = [str(r.model_path) for r in runs if not r.has_model]
    if missing:
        p.error(f"this figure needs each run's model.pt; missing: {', '.join(missing)}")


def fail(p: argparse.ArgumentParser, error: Exception) -> None:
    """Exit with one line naming the script and the problem (exit status 1)."""
    raise SystemExit(f"{p.prog}: error: {error}")
