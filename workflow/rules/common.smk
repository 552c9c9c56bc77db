# Shared by every stage: config validation, run resolution, paths, code hashes, the shell
# prefix. Nothing here runs a job.

import json
import os
import re
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
from featnorm.workflow.runs import reference_baselines, resolve_runs, run_hash  # noqa: E402
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
# Evaluation crops: 256 x 256 in the paper (a 16 x 16 patch grid).
IMAGE_SIZE = EVAL.get("image_size", 256)


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

# Run names here are per seed (`tanh-s0`, ... when a run has `seeds`; see featnorm.workflow.runs).
ENABLED_RUNS = [name for name in RUNS if RUN_META[name]["enabled"]]
if not ENABLED_RUNS:
    raise WorkflowError(f"{CONFIG_SOURCE}: every run has `enabled: false`; enable at least one")
RUN_HASH = {name: run_hash(RUNS[name]) for name in ENABLED_RUNS}
# Random-init baselines get their model.pt from init_model (no pretraining), the rest from pretrain.
BASELINE_RUNS = [r for r in ENABLED_RUNS if RUN_META[r]["baseline"]]
TRAINED_RUNS = [r for r in ENABLED_RUNS if not RUN_META[r]["baseline"]]
# enabled group (a `runs:` entry) -> its run copies, one per seed
GROUPS = {}
for _run in ENABLED_RUNS:
    GROUPS.setdefault(RUN_META[_run]["group"], []).append(_run)
# trained group -> the baseline group its "gain over random init" is measured against
REFERENCE = reference_baselines(RUN_META, ENABLED_RUNS)
# train.snapshot_steps of each trained run: each snapshot gets the k-NN probe (learning curve)
SNAPSHOTS = {r: list(RUNS[r]["train"].get("snapshot_steps") or []) for r in TRAINED_RUNS}

# figures.compare names runs (or groups: their first seed's copy)
COMPARE = []
for _name in FIGS.get("compare") or list(GROUPS)[:2]:
    if _name in ENABLED_RUNS or _name in GROUPS:
        COMPARE.append(_name if _name in ENABLED_RUNS else GROUPS[_name][0])
        continue
    _why = "disabled" if _name in RUNS or _name in {m["group"] for m in RUN_META.values()} else "not in `runs`"
    raise WorkflowError(
        f"{CONFIG_SOURCE}: figures.compare names run `{_name}`, which is {_why}; "
        f"enabled runs: {', '.join(GROUPS)}"
    )


def _one_of(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    run=_one_of(ENABLED_RUNS),
    step=r"\d+",
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


_DATA = [f"{_PKG}/data", f"{_PKG}/tokens.py", f"{_PKG}/batch.py", f"{_PKG}/config.py"]
CODE = {
    "demo_data": source_hash(REPO, _DATA + ["scripts/make_demo_data.py"]),
    "download": source_hash(REPO, _DATA + ["scripts/download.py"]),
    "pack_shards": source_hash(REPO, _DATA + ["scripts/pack_shards.py"]),
    "train": source_hash(
        REPO, _package_without("evaluation", "plotting", "workflow") + ["scripts/pretrain.py"]
    ),
    # the random-init baseline: the model's construction, not the training loop
    "init_model": source_hash(
        REPO,
        _package_without("evaluation", "plotting", "workflow", "train")
        + [f"{_PKG}/train/checkpoint.py", "scripts/init_model.py"],
    ),
    "evaluate": source_hash(
        REPO,
        _package_without("train", "plotting", "workflow")
        + [
            f"scripts/{s}.py"
            for s in ("extract_features", "linear_probe", "depth_probe", "lidar", "knn_probe")
        ],
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
    stem = os.path.join(*[f"{{{w}}}" for w in wildcards]) if wildcards else "all"
    return f"{LOGS}/{rule_name}/{stem}.log"


def bench_of(rule_name, *wildcards):
    stem = os.path.join(*[f"{{{w}}}" for w in wildcards]) if wildcards else "all"
    return f"{BENCHMARKS}/{rule_name}/{stem}.tsv"


# ----------------------------------------------------------------------------- data (data.smk)
# datasets.<name>.source: demo | hf-shards | imagefolder | nyu-mat | shards

KEYS = {"imagenet": "cls,jpg", "nyu": "depth.npy,jpg"}
# Split names of the published shards (SPEC section 2); ours are train / val.
HF_SPLIT = {"imagenet": {"train": "train", "val": "validation"}, "nyu": {"train": "train", "val": "val"}}


def _source(dataset):
    return DATASETS[dataset]["source"]


def _demo_sizes(dataset):
    return " ".join(f"--{k} {DATASETS[dataset][k]}" for k in ("train", "val") if k in DATASETS[dataset])


def _pack_source(wc):
    source = _source(wc.dataset)
    if source == "demo":
        return "imagefolder" if wc.dataset == "imagenet" else "nyu-mat"
    if source in ("hf-shards", "shards"):
        return "webdataset"
    return source  # imagefolder, nyu-mat


def _demo_raw(dataset):
    return f"{RESULTS}/raw/demo_imagenet" if dataset == "imagenet" else f"{RESULTS}/raw/demo_nyu.mat"


def _pack_input_path(wc):
    """What pack_shards.py reads (a path; may lie inside a declared folder)."""
    source, ds = _source(wc.dataset), DATASETS[wc.dataset]
    if source == "demo":
        return f"{_demo_raw(wc.dataset)}/{wc.split}" if wc.dataset == "imagenet" else _demo_raw("nyu")
    if source == "hf-shards":
        return f"{DOWNLOADS}/{wc.dataset}/{HF_SPLIT[wc.dataset][wc.split]}"
    if source == "nyu-mat":
        return ds["path"]
    return f"{ds['path'].rstrip('/')}/{wc.split}"  # imagefolder, shards


def _pack_options(wc):
    """Source-specific options of pack_shards.py."""
    source = _pack_source(wc)
    if source == "webdataset":
        return f"--keys {KEYS[wc.dataset]}"
    options = []
    if DATASETS[wc.dataset].get("shard_bytes"):
        options.append(f"--shard-bytes {DATASETS[wc.dataset]['shard_bytes']}")
    if source == "nyu-mat" and DATASETS[wc.dataset].get("split_file"):
        options.append(f"--split-file {shlex.quote(DATASETS[wc.dataset]['split_file'])}")
    if source == "imagefolder" and wc.split != "train":
        # the class index of every split comes from the training split's folders
        options.append(f"--classes {shard_dir(wc.dataset, 'train')}/classes.json")
    return " ".join(options)


def _pack_inputs(wc):
    """The declared inputs: the step that makes the raw data, or the user's own path."""
    source = _source(wc.dataset)
    if source == "demo":
        inputs = [_demo_raw(wc.dataset)]
        if wc.dataset == "imagenet" and wc.split != "train":
            inputs.append(manifest(wc.dataset, "train"))
        return inputs
    if source == "hf-shards":
        return [f"{DOWNLOADS}/{wc.dataset}/provenance-{wc.split}.json"]
    inputs = [_pack_input_path(wc)]
    if source == "imagefolder" and wc.split != "train":
        inputs.append(manifest(wc.dataset, "train"))
    return inputs


# ----------------------------------------------------------------------------- figures (figures.smk)

FIGURES_DIR = f"{PAPER}/figures"
TABLES_DIR = f"{PAPER}/tables"
NUM_IMAGES = FIGS.get("images", 8)
# Images of the per-image figures: validation shards, or a folder of your own images.
if FIGS.get("image_dir"):
    IMAGE_SOURCE = f"--image-dir {shlex.quote(FIGS['image_dir'])}"
    IMAGE_INPUT = [FIGS["image_dir"]]
else:
    IMAGE_SOURCE = f"--shards {shard_dir('imagenet', 'val')}"
    IMAGE_INPUT = [manifest("imagenet", "val")]
# CPU threads per job of each kind (config `threads`): the defaults suit a GPU node; the CPU
# demo sets 1 so that Snakemake runs two small jobs at once on two cores.
THREADS = {"pretrain": 8, "evaluation": 4, "figures": 4, **config.get("threads", {})}
DEVICE_RULE_THREADS = THREADS["figures"]
# Config `gpu_jobs`: "exclusive" (default) gives every model job its GPU slot(s) of
# `--resources gpu=N` and its own device(s); "shared" takes no slot, so as many jobs run at
# once as --cores allows, on the CPU or together on the visible GPU (the CPU configs: with
# slots, the profile's gpu=1 would run their one-thread jobs one at a time on two cores).
GPU_JOBS = config.get("gpu_jobs", "exclusive")


def job_gpus(n):
    """The `gpu` resource of a job that would use n GPUs: n, or 0 with `gpu_jobs: shared`."""
    if GPU_JOBS != "shared":
        return n
    if n > 1:
        raise WorkflowError(
            f"{CONFIG_SOURCE}: gpu_jobs: shared runs jobs without devices of their own, so a job cannot "
            f"use {n} GPUs (train.gpus / evaluation.gpus); set gpu_jobs: exclusive or gpus: 1"
        )
    return 0


def figure(name):
    """{png, pdf} of one figure; the PNG goes into the report."""
    return {
        "png": report(
            f"{FIGURES_DIR}/{name}.png", category="Figures", caption=f"../report/{name}.rst"
        ),
        "pdf": f"{FIGURES_DIR}/{name}.pdf",
    }


def runs_args(runs):
    """--runs DIR... --names NAME... for a figure script."""
    dirs = " ".join(run_dir(r) for r in runs)
    return f"--runs {dirs} --names {' '.join(runs)}"


def experiment_args(runs):
    """runs_args + --groups (each run's group: its seeds are aggregated), --baselines (the
    random-init groups) and --reference GROUP=BASELINE (what each group's gain is measured against)."""
    groups = [RUN_META[r]["group"] for r in runs]
    args = f"{runs_args(runs)} --groups {' '.join(groups)}"
    baselines = sorted({RUN_META[r]["group"] for r in runs if RUN_META[r]["baseline"]}, key=groups.index)
    if baselines:
        args += f" --baselines {' '.join(baselines)}"
    reference = [f"{g}={b}" for g, b in REFERENCE.items() if g in groups and b in baselines]
    if reference:
        args += f" --reference {' '.join(reference)}"
    return args


def snapshot_knn(run, step):
    """The k-NN result of a training snapshot of a run."""
    return f"{RUNS_DIR}/{run}/eval/snapshots/knn_probe-step-{step}.json"


FIGURE_NAMES = [
    "loss_maps",
    "pca_features",
    "token_loss_distribution",
    "token_energy",
    "training_curves",
    "linear_probe_depth",
    # the reference's other pictures (make-viz, plot-mean-loss, plot-sample-losses, visualize-embeddings)
    "mask_picture",
    "mean_loss",
    "sample_losses",
    "pca_features_hsv",
]
# the learning curve of the gain over random init needs a baseline and a trained run
if BASELINE_RUNS and TRAINED_RUNS:
    FIGURE_NAMES.append("gain_vs_steps")
if not TRAINED_RUNS:  # only baselines: no training log to plot
    FIGURE_NAMES.remove("training_curves")
TABLE_FILES = [f"{TABLES_DIR}/summary.{ext}" for ext in ("csv", "md", "tex")]
FIGURE_FILES = [f"{FIGURES_DIR}/{n}.{ext}" for n in FIGURE_NAMES for ext in ("png", "pdf")]
EVAL_FILES = [
    f"{RUNS_DIR}/{run}/eval/{f}"
    for run in ENABLED_RUNS
    for f in ("linear_probe.json", "knn_probe.json", "depth_probe.json", "depth_strips.png", "lidar.json")
]
ALL_TARGETS = FIGURE_FILES + TABLE_FILES + EVAL_FILES


def run_gpus(run):
    """GPUs of a run (`train.gpus`, default 1): > 1 launches torchrun with that many processes."""
    return int((RUNS[run].get("train") or {}).get("gpus", 1))


def python_launcher(gpus):
    """`python`, or torchrun with one process per GPU the job was granted (Snakemake lowers a
    job's `gpu` to the `--resources gpu=` limit; the global batch stays the same)."""
    if gpus <= 1:
        return "python"
    # --standalone: a single-node rendezvous on a free port
    return f"python -m torch.distributed.run --standalone --nproc-per-node {gpus}"


for _run in ENABLED_RUNS:  # a multi-GPU run with gpu_jobs: shared stops here, before any job
    job_gpus(run_gpus(_run))
