"""Runs grouped by experiment: the seed copies of one `runs:` entry (`tanh-s0`, `tanh-s1` ->
group `tanh`), which groups are random-init baselines, and which baseline each trained group's
"gain over random init" is measured against. Tables and figures aggregate over a group's runs
(mean, sample std, n); the workflow passes the grouping (`--groups`, `--baselines`,
`--reference`, see featnorm.workflow.runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from featnorm.plotting.run_results import FigureInputError, RunResults


@dataclass
class RunGroup:
    name: str
    runs: list[RunResults] = field(default_factory=list)  # one per seed, in the order given
    baseline: bool = False  # a random-init baseline (untrained)
    reference: str | None = None  # the baseline group this group's gains are measured against

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]


def parse_reference(items: Iterable[str] | None) -> dict[str, str]:
    """["tanh=random", ...] -> {"tanh": "random"}."""
    out = {}
    for item in items or []:
        group, sep, baseline = item.partition("=")
        if not sep or not group or not baseline:
            raise FigureInputError(f"--reference {item!r}: write GROUP=BASELINE, e.g. tanh=random")
        out[group] = baseline
    return out


def group_runs(
    runs: list[RunResults],
    groups: list[str] | None = None,
    baselines: Iterable[str] = (),
    reference: dict[str, str] | None = None,
) -> list[RunGroup]:
    """Groups in order of first appearance. `groups[i]` names run i's group (default: every run
    its own group); `baselines` are baseline groups; `reference` maps groups to baselines (default:
    every non-baseline group against the first baseline, if any)."""
    if groups is None:
        groups = [r.name for r in runs]
    if len(groups) != len(runs):
        raise FigureInputError(f"--groups gives {len(groups)} groups for {len(runs)} runs; give one per run")
    found: dict[str, RunGroup] = {}
    for r, g in zip(runs, groups):
        found.setdefault(g, RunGroup(g)).runs.append(r)
    baselines = list(baselines)
    for b in baselines:
        if b not in found:
            raise FigureInputError(f"--baselines names {b!r}, which is not a group of the runs ({', '.join(found)})")
        found[b].baseline = True
    reference = dict(reference or {})
    for g, b in reference.items():
        if g not in found or b not in baselines:
            raise FigureInputError(f"--reference {g}={b}: {g!r} must be a group of the runs and {b!r} one of "
                                   f"--baselines ({', '.join(baselines) or 'none given'})")
    for g in found.values():
        if not g.baseline:
            g.reference = reference.get(g.name, baselines[0] if baselines else None)
    return list(found.values())


def finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation (ddof 1; None below 2 values), count) of the finite values."""
    v = finite(values)
    n = len(v)
    if n == 0:
        return None, None, 0
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n >= 2 else None
    return mean, std, n
