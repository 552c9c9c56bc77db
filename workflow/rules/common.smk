# Shared by every stage: config validation, run resolution, paths, code hashes, the shell
# prefix. Nothing here runs a job.

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("8.0")

REPO = Path(workflow.basedir)
# The package is pip-installed (editable) by the README's setup; the path makes a bare
# checkout work too, for the workflow itself and for the scripts it calls.
sys.path.insert(0, str(REPO / "workflow" / "lib"))

from featnorm.config import ConfigError  # noqa: E402
from featnorm.workflow.runs import resolve_runs, run_hash  # noqa: E402
from featnorm.workflow.source_hash import source_hash  # noqa: E402

CONFIG_SOURCE = ", ".join(
    str(f) for f in (workflow.overwrite_configfiles or workflow.configfiles or ["config"])
)


# ----------------------------------------------------------------------------- validation


def _schema_error(error):
    """One sentence from a jsonschema ValidationError: the key path and what is wrong."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{CONFIG_SOURCE}: config key `{where}`: {error.message} (see config/schema.yaml)"


try:
    validate(config, "../../config/schema.yaml")
except WorkflowError as e:
    # snakemake wraps jsonschema's ValidationError (which knows the key path) in a long message
    cause = e.__cause__ or e.__context__
    if not hasattr(cause, "absolute_path"):
        raise
    raise WorkflowError(_schema_error(cause)) from None

RESULTS = config["results"].rstrip("/")
DOWNLOADS = (config.get("downloads") or f"{RESULTS}/downloads").rstrip("/")
DATA = f"{RESULTS}/data"
RUNS_DIR = f"{RESULTS}/runs"
FEATURES = f"{RESULTS}/features"
CHECKPOINTS = f"{RESULTS}/checkpoints"
PAPER = f"{RESULTS}/paper"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
DATASETS = config["datasets"]
EVAL = config.get("evaluation", {})
FIGS = config.get("figures", {})
SPLITS = ["train", "val"]


def manifest(dataset, split):
    """The manifest of a dataset split's shards: the file that stands for the whole folder."""
    return f"{DATA}/{dataset}/{split}/manifest.json"


def shard_dir(dataset, split):
    return f"{DATA}/{dataset}/{split}"


# ----------------------------------------------------------------------------- runs

try:
    RUNS, RUN_META = resolve_runs(
        config, CONFIG_SOURCE, train_shards=shard_dir("imagenet", "train")
    )
except ConfigError as e:
    raise WorkflowError(str(e)) from None

ENABLED_RUNS = [name for name in RUNS if RUN_META[name]["enabled"]]
if not ENABLED_RUNS:
    raise WorkflowError(f"{CONFIG_SOURCE}: every run has `enabled: false`; enable at least one")
RUN_HASH = {name: run_hash(RUNS[name]) for name in ENABLED_RUNS}

COMPARE = FIGS.get("compare") or ENABLED_RUNS[:2]
for _name in COMPARE:
    if _name not in ENABLED_RUNS:
        raise WorkflowError(
            f"{CONFIG_SOURCE}: figures.compare names run `{_name}`, which is "
            + ("disabled" if _name in RUNS else "not in `runs`")
            + f"; enabled runs: {', '.join(ENABLED_RUNS)}"
        )


wildcard_constraints:
    run="|".join(ENABLED_RUNS),
    split="train|val",
    dataset="imagenet|nyu",


def run_dir(run):
    return f"{RUNS_DIR}/{run}"


def model(run):
    return f"{RUNS_DIR}/{run}/model.pt"


# ----------------------------------------------------------------------------- code hashes
# Each stage's params carry a hash of the code its results depend on: editing that code
# reruns the stage (Snakemake's `params` rerun trigger) and everything after it, and
# editing plotting code never reruns training.

_PKG = "workflow/lib/featnorm"
_PKG_PARTS = sorted(p.name for p in (REPO / _PKG).iterdir() if p.name != "__pycache__")


def _package_without(*excluded):
    return [f"{_PKG}/{p}" for p in _PKG_PARTS if p not in excluded]


CODE = {
    "data": source_hash(
        REPO,
        [f"{_PKG}/data", f"{_PKG}/tokens.py", f"{_PKG}/batch.py", f"{_PKG}/config.py"]
        + ["scripts/make_demo_data.py", "scripts/download.py", "scripts/pack_shards.py"],
    ),
    "train": source_hash(
        REPO, _package_without("evaluation", "plotting", "workflow") + ["scripts/pretrain.py"]
    ),
    "evaluate": source_hash(
        REPO,
        _package_without("train", "plotting", "workflow")
        + [f"scripts/{s}.py" for s in ("extract_features", "linear_probe", "depth_probe", "lidar")],
    ),
    "figures": source_hash(
        REPO,
        _package_without("train", "workflow")
        + [str(p.relative_to(REPO)) for p in sorted((REPO / "scripts").glob("fig_*.py"))]
        + ["scripts/table_summary.py"],
    ),
}


# ----------------------------------------------------------------------------- shell

# Scripts run with the Python that runs Snakemake (the project's venv), unless a conda
# environment is deployed per rule (--sdm conda), whose own `python` must win.
_USE_CONDA = "conda" in {str(m).lower() for m in workflow.deployment_settings.deployment_method}
_PATH_PREFIX = "" if _USE_CONDA else f'export PATH={shlex.quote(os.path.dirname(sys.executable))}:"$PATH"; '
shell.prefix(
    "set -euo pipefail; "
    + _PATH_PREFIX
    # (shell.prefix is formatted like a shell command: braces doubled)
    + f'export PYTHONPATH={shlex.quote(str(REPO / "workflow" / "lib"))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; '
)

# `python scripts/run_step.py ... --` in front of every script: GPU lock, threads, provenance.
STEP = "python scripts/run_step.py"
ENV = "../../envs/featnorm.yaml"


def log_of(rule_name, *wildcards):
    """logs/<rule>/<wildcards>.log and benchmarks/<rule>/<wildcards>.tsv under the results."""
    stem = "/".join(["{" + w + "}" for w in wildcards]) or "all"
    return f"{LOGS}/{rule_name}/{stem}.log"


def bench_of(rule_name, *wildcards):
    stem = "/".join(["{" + w + "}" for w in wildcards]) or "all"
    return f"{BENCHMARKS}/{rule_name}/{stem}.tsv"
