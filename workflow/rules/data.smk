# Data: raw data -> WebDataset shards + manifest.json, per dataset and split.
#
# datasets.<name>.source picks the way in:
#   demo        generated images (scripts/make_demo_data.py), packed like real data
#   hf-shards   the paper author's published shards: download, then verify + manifest
#   imagefolder / nyu-mat / shards   data you already have at datasets.<name>.path
# Every later stage reads only <results>/data/<dataset>/<split>/ (manifest.json = the folder).

KEYS = {"imagenet": "cls,jpg", "nyu": "depth.npy,jpg"}
# Split names of the published shards (SPEC section 2); ours are train / val.
HF_SPLIT = {"imagenet": {"train": "train", "val": "validation"}, "nyu": {"train": "train", "val": "val"}}


def _source(dataset):
    return DATASETS[dataset]["source"]


def _demo_sizes(dataset):
    return " ".join(f"--{k} {DATASETS[dataset][k]}" for k in ("train", "val") if k in DATASETS[dataset])


rule demo_images:
    """Generated classification images in the image-folder layout (train/, val/)."""
    output:
        directory(f"{RESULTS}/raw/demo_imagenet"),
    params:
        sizes=lambda wc: _demo_sizes("imagenet"),
        seed=DATASETS["imagenet"].get("seed", 0),
        code=CODE["data"],
    log:
        log_of("demo_images"),
    benchmark:
        bench_of("demo_images")
    conda:
        ENV
    shell:
        "{STEP} --step demo_images --provenance {output}.provenance.json -- "
        "python scripts/make_demo_data.py --kind classification --out {output} "
        "--seed {params.seed} {params.sizes} > {log} 2>&1"


rule demo_depth:
    """Generated indoor-like scenes with exact depth, as an NYU-style labeled .mat."""
    output:
        f"{RESULTS}/raw/demo_nyu.mat",
    params:
        sizes=lambda wc: _demo_sizes("nyu"),
        seed=DATASETS["nyu"].get("seed", 0),
        code=CODE["data"],
    log:
        log_of("demo_depth"),
    benchmark:
        bench_of("demo_depth")
    conda:
        ENV
    shell:
        "{STEP} --step demo_depth --provenance {output}.provenance.json -- "
        "python scripts/make_demo_data.py --kind depth --out {output} "
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


def _demo_raw(dataset):
    return f"{RESULTS}/raw/demo_imagenet" if dataset == "imagenet" else f"{RESULTS}/raw/demo_nyu.mat"


def _pack_input_path(wc):
    """What pack_shards.py reads (a path; may lie inside a declared folder)."""
    source, ds = _source(wc.dataset), DATASETS[wc.dataset]
    if source == "demo":
        return f"{_demo_raw(wc.dataset)}/{wc.split}" if wc.dataset == "imagenet" else _demo_raw("nyu")
    if source == "hf-shards":
        return f"{DOWNLOADS}/{wc.dataset}/{wc.split}"
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
        options.append("--split-file " + shlex.quote(DATASETS[wc.dataset]["split_file"]))
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
        return [f"{DOWNLOADS}/{wc.dataset}/{wc.split}/provenance.json"]
    inputs = [_pack_input_path(wc)]
    if source == "imagefolder" and wc.split != "train":
        inputs.append(manifest(wc.dataset, "train"))
    return inputs


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
        options=_pack_options,
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
        "--split {wildcards.split} --out {params.out} {params.options} > {log} 2>&1"
