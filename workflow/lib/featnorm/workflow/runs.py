"""Resolve the workflow's runs: RunConfig defaults + config `defaults` + each run's overrides.

A workflow config (`config/config.yaml`) has

    defaults:   RunConfig overrides applied to every run
    runs:
      <name>:
        enabled: true          # optional, default true; false keeps the run in the file, unbuilt
        description: "..."     # optional, for people and the summary table
        seed / model / data / train: overrides of RunConfig (featnorm/config.py)

Every run, enabled or not, is validated by `featnorm.config.run_config_from_dict` when the
workflow is parsed, so a misspelt key stops the workflow before any job with a message that
names the config file, the run and the key.
"""

from __future__ import annotations

from typing import Any, Mapping

from featnorm.config import ConfigError, config_hash, deep_merge, run_config_from_dict, to_dict

RUN_META_KEYS = ("enabled", "description")


def split_run_entry(entry: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """(meta, overrides) of one `runs:` entry: meta holds `enabled` and `description`."""
    entry = dict(entry or {})
    meta = {k: entry.pop(k) for k in RUN_META_KEYS if k in entry}
    meta.setdefault("enabled", True)
    meta.setdefault("description", "")
    return meta, entry


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


def resolve_runs(
    config: Mapping[str, Any],
    source: str,
    train_shards: str,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(resolved configs, meta) for every run of `config`, keyed by run name.

    `source` names the config file(s) in error messages; `train_shards` is the folder of the
    training shards the workflow builds, written into every run's `data.train_shards`.
    """
    defaults = config.get("defaults") or {}
    try:
        run_config_from_dict(deep_merge(defaults, {}))
    except ConfigError as e:
        raise ConfigError(f"{source}: defaults: {e}") from None
    resolved: dict[str, dict] = {}
    metas: dict[str, dict] = {}
    for name, entry in (config.get("runs") or {}).items():
        meta, overrides = split_run_entry(entry)
        if "data" in overrides and "train_shards" in (overrides.get("data") or {}):
            raise ConfigError(
                f"{source}: runs.{name}.data.train_shards is set by the workflow from "
                "`datasets.imagenet`; remove it"
            )
        try:
            resolved[name] = resolve_run(
                name, defaults, overrides, forced={"data": {"train_shards": train_shards}}
            )
        except ConfigError as e:
            raise ConfigError(f"{source}: runs.{name}: {e}") from None
        metas[name] = meta
    return resolved, metas


def run_hash(resolved: Mapping[str, Any]) -> str:
    """`featnorm.config.config_hash` of a resolved run dict (keys the resume folder)."""
    return config_hash(run_config_from_dict(dict(resolved)))
