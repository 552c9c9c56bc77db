"""Shared by tests/test_workflow_*.py: run Snakemake in a subprocess, parse dry runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def snakemake_env() -> dict:
    """The test's Python first on PATH, so `python` in the rules is the project's venv."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def snakemake(*args: str, cwd: Path = REPO, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in `cwd`, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or snakemake_env(),
    )


def dry_run_jobs(output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a `snakemake -n` output lists."""
    jobs: list[tuple[str, dict]] = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        wc = {}
        w = re.search(r"^\s+wildcards: (.+)$", block, re.M)
        if w:
            for part in w.group(1).split(", "):
                k, _, v = part.partition("=")
                wc[k.strip()] = v.strip()
        jobs.append((m.group(1), wc))
    return jobs


def job_counts(jobs: list[tuple[str, dict]]) -> Counter:
    return Counter(rule for rule, _ in jobs)
