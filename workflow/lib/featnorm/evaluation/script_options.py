"""What the evaluation scripts share: runtime options (device, threads, progress bar) and
writing their JSON result atomically."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """`--device`, `--threads`, `--no-progress`."""
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def apply_runtime_options(args: argparse.Namespace) -> str:
    """Set torch's thread count from `--threads`; return the device to use."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def write_json(path: str | Path, result: dict) -> None:
    """Write `result` to `path` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
