"""What produced a result: package versions, the git commit, the command, the machine.

`scripts/run_step.py` writes one such JSON file per finished workflow step next to its
results, so every result folder records the code and environment that made it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(repo: str | Path) -> dict[str, Any]:
    """Commit, branch and whether tracked files differ from the commit (None outside git)."""
    repo = Path(repo)
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit,
        "branch": _git(repo, "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def package_versions() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[name] = dist.version
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def collect(repo: str | Path, **extra: Any) -> dict[str, Any]:
    """A provenance record; `extra` (command, devices, timings, ...) is added as given."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(repo),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "environment": {
            k: os.environ[k]
            for k in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "CONDA_PREFIX", "VIRTUAL_ENV")
            if k in os.environ
        },
        **extra,
        "packages": package_versions(),
    }


def write(path: str | Path, record: dict[str, Any]) -> None:
    """Write `record` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
