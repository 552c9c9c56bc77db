# Data: raw data -> WebDataset shards + manifest.json, per dataset and split.
#
# datasets.<name>.source picks the way in:
#   demo        generated images (scripts/make_demo_data.py), packed like real data
#   hf-shards   the paper author's published shards: download, then verify + manifest
#   imagefolder / nyu-mat / shards   data you already have at datasets.<name>.path
# Every later stage reads only <results>/data/<dataset>/<split>/ (manifest.json = the folder).

DEMO_KIND = {"imagenet": "classification", "nyu": "depth"}
# Split names of the published shards (SPEC section 2); ours are train / val.
HF_SPLIT = {"imagenet": {"train": "train", "val": "validation"}, "nyu": {"train": "train", "val": "val"}}


def _source(dataset):
    return DATASETS[dataset]["source"]


rule demo_data:
    """Generated demo data: an image folder (classification) or an NYU-style .mat (depth)."""
    output:
        directory(f"{RESULTS}/raw/demo_{{dataset}}"),
    params:
        kind=lambda wc: DEMO_KIND[wc.dataset],
        sizes=lambda wc: " ".join(
            f"--{k} {DATASETS[wc.dataset][k]}" for k in ("train", "val") if k in DATASETS[wc.dataset]
        ),
        seed=lambda wc: DATASETS[wc.dataset].get("seed", 0),
        code=CODE["data"],
    log:
        log_of("demo_data", "dataset"),
    benchmark:
        bench_of("demo_data", "dataset")
    conda:
        ENV
    shell:
        "{STEP} --step demo_data --provenance {output}.provenance.json -- "
        "python scripts/make_demo_data.py --kind {params.kind} --out {output} "
        "--seed {params.seed} {params.sizes} > {log} 2>&1"


rule download:
    """The published shards of one split, resumed and verified (about 100 GB in all)."""
    output:
        f"{DOWNLOADS}/{{dataset}}/{{split}}/provenance.json",
    params:
        out=lambda wc: f"{DOWNLOADS}/{wc.dataset}/{wc.split}",
        split=lambda wc: HF_SPLIT[wc.dataset][wc.split],
        code=CODE["data"],
    resources:
        downloads=1,
    retries: 2
    log:
        log_of("download", "dataset", "split"),
    benchmark:
        bench_of("download", "dataset", "split")
    conda:
        ENV
    shell:
        "{STEP} --step download --provenance {output} -- "
        "python scripts/download.py --dataset {wildcards.dataset} --split {params.split} "
        "--out {params.out} > {log} 2>&1"


def _pack_source(wc):
    source = _source(wc.dataset)
    if source == "demo":
        return "imagefolder" if wc.dataset == "imagenet" else "nyu-mat"
    if source in ("hf-shards", "shards"):
        return "webdataset"
    return source  # imagefolder, nyu-mat


def _demo_input(dataset, split):
    raw = f"{RESULTS}/raw/demo_{dataset}"
    return f"{raw}/{split}" if dataset == "imagenet" else f"{raw}/nyu_depth_v2_labeled.mat"


def _pack_input_path(wc):
    """What pack_shards.py reads (a path; may lie inside a declared folder)."""
    source, ds = _source(wc.dataset), DATASETS[wc.dataset]
    if source == "demo":
        return _demo_input(wc.dataset, wc.split)
    if source == "hf-shards":
        return f"{DOWNLOADS}/{wc.dataset}/{wc.split}"
    if source == "nyu-mat":
        return ds["path"]
    return f"{ds['path'].rstrip('/')}/{wc.split}"  # imagefolder, shards


def _pack_inputs(wc):
    """The declared inputs: the step that makes the raw data, or the user's own path."""
    source = _source(wc.dataset)
    if source == "demo":
        return [f"{RESULTS}/raw/demo_{wc.dataset}"]
    if source == "hf-shards":
        return [f"{DOWNLOADS}/{wc.dataset}/{wc.split}/provenance.json"]
    return [_pack_input_path(wc)]


rule pack_shards:
    """Shards + manifest.json of one split (published shards: verified, not re-encoded)."""
    input:
        _pack_inputs,
    output:
        f"{DATA}/{{dataset}}/{{split}}/manifest.json",
    params:
        source=_pack_source,
        input=_pack_input_path,
        out=lambda wc: shard_dir(wc.dataset, wc.split),
        code=CODE["data"],
    log:
        log_of("pack_shards", "dataset", "split"),
    benchmark:
        bench_of("pack_shards", "dataset", "split")
    conda:
        ENV
    shell:
        "{STEP} --step pack_shards --provenance {params.out}/provenance.json -- "
        "python scripts/pack_shards.py --source {params.source} --input {params.input:q} "
        "--split {wildcards.split} --out {params.out} > {log} 2>&1"
