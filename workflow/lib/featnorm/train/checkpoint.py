"""Resume checkpoints: atomic writes, the last K kept, newest-valid loading, config check.

A checkpoint is a plain dict saved with `torch.save` and loaded with `weights_only=True`,
so it holds only tensors and plain Python values (RNG states are stored as tensors or
lists of ints). Files are `ckpt-<step:09d>.pt` in one directory; each is written to a
temporary file, fsynced and renamed into place, so a kill at any moment leaves either the
old set or the new file complete. A newest file that is truncated or unreadable anyway
(e.g. a disk filled up) is skipped with a warning and the previous one is used.

Also here: `save_atomic` (used for the final `model.pt`) and the RNG-state helpers.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import torch

CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")


class ConfigMismatchError(RuntimeError):
    """A checkpoint directory holds checkpoints of a different run config."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checkpoint_paths(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(state: dict, directory: str | Path, step: int, keep: int) -> Path:
    """Write `state` as `ckpt-<step>.pt` atomically and delete all but the newest `keep`."""
    directory = Path(directory)
    path = directory / f"ckpt-{step:09d}.pt"
    save_atomic(state, path)
    for old in checkpoint_paths(directory)[keep:]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".ckpt-*.tmp-*"):  # left by a writer that was killed
        if stale.name.split("-")[-1] != str(os.getpid()):
            stale.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(directory: str | Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint in `directory` and its path, or None if there is none."""
    for path in checkpoint_paths(directory):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a featnorm checkpoint")
            return state, path
        except Exception as e:  # truncated / corrupt file: fall back to the previous one
            warnings.warn(f"skipping unreadable checkpoint {path} ({type(e).__name__}: {e}); trying an older one")
    return None


def check_config_hash(state: dict, expected: str, path: Path, force: bool) -> None:
    """Refuse to resume from a checkpoint written under another config, unless forced."""
    found = state.get("config_hash")
    if found == expected:
        return
    if force:
        warnings.warn(f"resuming from {path} written with config hash {found}, not {expected} (forced)")
        return
    raise ConfigMismatchError(
        f"checkpoint {path} was written with config hash {found}, but this run's config hashes to "
        f"{expected}; use another --checkpoint-dir, or pass --force-resume to resume anyway"
    )


# ----------------------------------------------------------------------------- RNG states


def rng_state(window_generator: torch.Generator | None = None) -> dict:
    """Every random state the training step touches, as tensors and plain Python values."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # one process per GPU: only this process's device (get_rng_state_all would open a
            # CUDA context on every visible GPU from every process)
            state["cuda_current"] = torch.cuda.get_rng_state()
        else:
            state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        st = np.random.get_state()
        state["numpy"] = {
            "key": torch.from_numpy(st[1].astype("int64")),
            "pos": int(st[2]),
            "has_gauss": int(st[3]),
            "cached_gaussian": float(st[4]),
        }
    except ImportError:
        pass
    if window_generator is not None:
        state["window_generator"] = window_generator.get_state()
    return state


def set_rng_state(state: dict, window_generator: torch.Generator | None = None) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    random.setstate(_plain_to_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_current" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_current"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state(
            ("MT19937", n["key"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
    if window_generator is not None and "window_generator" in state:
        window_generator.set_state(state["window_generator"])


def _python_state_to_plain(st: tuple) -> list:
    version, internal, gauss = st
    return [int(version), list(internal), gauss]


def _plain_to_python_state(st: list) -> tuple:
    version, internal, gauss = st
    return (int(version), tuple(int(x) for x in internal), gauss)
