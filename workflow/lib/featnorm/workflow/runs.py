"""Resolve the workflow's runs: RunConfig defaults + config `defaults` + each run's overrides,
one copy per seed, and the random-init baselines.

A workflow config (`config/config.yaml`) has

    seeds: [0, 1, 2]           optional: the seeds of every run that names none itself
    defaults:   RunConfig overrides applied to every run
    runs:
      <name>:
        enabled: true          # optional, default true; false keeps the run in the file, unbuilt
        description: "..."     # optional, for people and the summary table
        seeds: [0, 1]          # optional: one copy per seed (wins over the top-level `seeds`)
        seed / model / data / train: overrides of RunConfig (featnorm/config.py)
      <baseline name>:
        baseline: random-init  # the untrained model of ...
        like: <name>           # ... this run's config (same construction and seed as its step 0)
        seeds: [...]           # optional; default: the seeds of `like`

A run given seeds by a `seeds:` list (its own or the top-level one) becomes one run per seed,
named `<name>-s<seed>`, each with RunConfig.seed = that seed and its own result directory and
checkpoints; otherwise the run keeps its name (and `seed` from its overrides or `defaults`).
The copies of one entry form a *group* (the entry's name): tables and figures aggregate over
it (mean, std, n).

Every run, enabled or not, is validated by `featnorm.config.run_config_from_dict` when the
workflow is parsed, so a misspelt key stops the workflow before any job with a message that
names the config file, the run and the key.
"""

from __future__ import annotations

from typing import Any, Mapping

from featnorm.config import ConfigError, config_hash, deep_merge, run_config_from_dict, to_dict

RUN_META_KEYS = ("enabled", "description", "seeds", "baseline", "like")
BASELINE_KINDS = ("random-init",)


def split_run_entry(entry: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """(meta, overrides) of one `runs:` entry: meta holds `enabled`, `description` and, when
    given, `seeds`, `baseline`, `like`."""
    entry = dict(entry or {})
    meta = {k: entry.pop(k) for k in RUN_META_KEYS if k in entry}
    meta.setdefault("enabled", True)
    meta.setdefault("description", "")
    return meta, entry


def seeded_name(group: str, seed: int) -> str:
    """The run name of one seed's copy: `tanh` + 1 -> `tanh-s1`."""
    return f"{group}-s{seed}"


def resolve_run(
    name: str,
    defaults: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None,
    forced: Mapping[str, Any] | None = None,
) -> dict:
    """The resolved, validated run config as a plain dict.

    `forced` holds values the workflow sets itself (the run name, the training shards) and
    that win over both `defaults` and `overrides`.
    """
    merged = deep_merge(dict(defaults or {}), dict(overrides or {}))
    if "name" in merged:
        raise ConfigError("`name` is set by the workflow from the run's key; remove it")
    merged = deep_merge(merged, {"name": name, **dict(forced or {})})
    return to_dict(run_config_from_dict(merged))


def _seed_list(name: str, seeds: Any, source: str, where: str) -> list[int]:
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds)):
        raise ConfigError(f"{source}: {where} = {seeds!r}: give a non-empty list of seeds >= 0, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{source}: {where} = {seeds!r} repeats a seed; each copy of run {name} needs its own")
    return list(seeds)


def resolve_runs(
    config: Mapping[str, Any],
    source: str,
    train_shards: str,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(resolved configs, meta) for every run copy of `config`, keyed by run name.

    `source` names the config file(s) in error messages; `train_shards` is the folder of the
    training shards the workflow builds, written into every run's `data.train_shards`.
    meta of a run: `enabled`, `description`, `group` (the entry's name), `seed` (int),
    `baseline` (None or "random-init") and `like` (the group a baseline copies, else None).
    """
    defaults = config.get("defaults") or {}
    try:
        run_config_from_dict(deep_merge(defaults, {}))
    except ConfigError as e:
        raise ConfigError(f"{source}: defaults: {e}") from None
    top_seeds = None
    if config.get("seeds") is not None:
        top_seeds = _seed_list("(every run)", config["seeds"], source, "seeds")
    entries = {name: split_run_entry(entry) for name, entry in (config.get("runs") or {}).items()}

    def seeds_of(name: str) -> list[int] | None:
        """The seed list of an entry (None: a single run that keeps its name)."""
        meta, overrides = entries[name]
        if "seeds" in meta:
            if "seed" in overrides:
                raise ConfigError(f"{source}: runs.{name} sets both `seed` and `seeds`; keep one")
            return _seed_list(name, meta["seeds"], source, f"runs.{name}.seeds")
        if meta.get("baseline"):
            return seeds_of(meta["like"])
        return None if "seed" in overrides else top_seeds

    resolved: dict[str, dict] = {}
    metas: dict[str, dict] = {}
    for name, (meta, overrides) in entries.items():
        where = f"{source}: runs.{name}"
        if "data" in overrides and "train_shards" in (overrides.get("data") or {}):
            raise ConfigError(
                f"{where}.data.train_shards is set by the workflow from `datasets.imagenet`; remove it"
            )
        kind, like = meta.get("baseline"), meta.get("like")
        if kind is not None or like is not None:
            if kind not in BASELINE_KINDS:
                raise ConfigError(f"{where}.baseline = {kind!r}: a baseline run needs `baseline: random-init`")
            if like not in entries or entries[like][0].get("baseline"):
                trained = [n for n, (m, _) in entries.items() if not m.get("baseline")]
                raise ConfigError(f"{where}.like = {like!r} names no trained run; choose one of {trained}")
            if overrides:
                raise ConfigError(f"{where}: a baseline takes the config of its `like` run; remove "
                                  f"{sorted(overrides)} (or add another run and point `like` at it)")
            overrides = entries[like][1]
        seeds = seeds_of(name)
        copies = [(name, None)] if seeds is None else [(seeded_name(name, s), s) for s in seeds]
        for run, seed in copies:
            if run in resolved or (run != name and run in entries):
                raise ConfigError(f"{where}: the run name {run} is used twice; rename one of the runs")
            forced = {"data": {"train_shards": train_shards}}
            if seed is not None:
                forced["seed"] = seed
            try:
                resolved[run] = resolve_run(run, defaults, overrides, forced=forced)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            metas[run] = {
                "enabled": meta["enabled"], "description": meta["description"], "group": name,
                "seed": resolved[run]["seed"], "baseline": kind, "like": like,
            }
    return resolved, metas


def reference_baselines(metas: Mapping[str, Mapping[str, Any]], runs: list[str]) -> dict[str, str]:
    """group -> the baseline group its gains are measured against, for the trained groups among
    `runs`: the baseline whose `like` is the group, else the first baseline (config order).
    Empty when `runs` holds no baseline."""
    groups = list(dict.fromkeys(metas[r]["group"] for r in runs))
    baselines = [g for g in groups if any(metas[r]["baseline"] for r in runs if metas[r]["group"] == g)]
    if not baselines:
        return {}
    like = {metas[r]["like"]: metas[r]["group"] for r in reversed(runs) if metas[r]["baseline"]}
    return {g: like.get(g, baselines[0]) for g in groups if g not in baselines}


def run_hash(resolved: Mapping[str, Any]) -> str:
    """`featnorm.config.config_hash` of a resolved run dict (keys the resume folder)."""
    return config_hash(run_config_from_dict(dict(resolved)))
