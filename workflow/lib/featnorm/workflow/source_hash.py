"""A hash of source files, used in rule params so that code changes rerun the jobs they affect.

Snakemake reruns a job when its params change (`--rerun-triggers params`, on by default).
Each stage lists the package modules and scripts its results depend on; editing a plotting
module therefore reruns the figures but never the 100-GPU-hour pretraining.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable


def iter_sources(root: Path, include: Iterable[str]) -> list[Path]:
    """The `.py` files under `root` named by `include` (files or folders, relative to root), sorted."""
    root = Path(root)
    files: set[Path] = set()
    for item in include:
        path = root / item
        if path.is_dir():
            files.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files.add(path)
        elif path.with_suffix(".py").is_file():
            files.add(path.with_suffix(".py"))
        # A module that does not exist yet hashes as absent: creating it changes the hash.
    return sorted(files)


def source_hash(root: str | Path, include: Iterable[str]) -> str:
    """A short sha256 over the relative paths and contents of the `.py` files of `include`."""
    root = Path(root)
    h = hashlib.sha256()
    for path in iter_sources(root, include):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
