# Data: raw data -> WebDataset shards + manifest.json, per dataset and split.
#
# datasets.<name>.source picks the way in:
#   demo        generated images (scripts/make_demo_data.py), packed like real data
#   hf-shards   the paper author's published shards: download, then verify + manifest
#   imagefolder / nyu-mat / shards   data you already have at datasets.<name>.path
# Every later stage reads only <results>/data/<dataset>/<split>/ (manifest.json = the folder).

rule demo_images:
    """Generated classification images in the image-folder layout (train/, val/)."""
    output:
        directory(f"{RESULTS}/raw/demo_imagenet"),
    params:
        sizes=lambda wc: _demo_sizes("imagenet"),
        seed=DATASETS["imagenet"].get("seed", 0),
        code=CODE["demo_data"],
    log:
        log_of("demo_images"),
    benchmark:
        bench_of("demo_images")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step demo_images --provenance {output}.provenance.json -- "
        "python scripts/make_demo_data.py --kind classification --out {output} "
        "--seed {params.seed} {params.sizes} > {log} 2>&1"


rule demo_depth:
    """Generated indoor-like scenes with exact depth, as an NYU-style labeled .mat."""
    output:
        f"{RESULTS}/raw/demo_nyu.mat",
    params:
        sizes=lambda wc: _demo_sizes("nyu"),
        seed=DATASETS["nyu"].get("seed", 0),
        code=CODE["demo_data"],
    log:
        log_of("demo_depth"),
    benchmark:
        bench_of("demo_depth")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step demo_depth --provenance {output}.provenance.json -- "
        "python scripts/make_demo_data.py --kind depth --out {output} "
        "--seed {params.seed} {params.sizes} > {log} 2>&1"


rule download:
    """The published shards of one split, resumed and size/sha256-verified (about 100 GB in all).

    Shards land in <downloads>/<dataset>/<published split name>/ (train, validation, val);
    pack_shards then checks keys and counts and writes the manifest, so no second pass here.
    """
    output:
        f"{DOWNLOADS}/{{dataset}}/provenance-{{split}}.json",
    params:
        out=lambda wc: f"{DOWNLOADS}/{wc.dataset}",
        split=lambda wc: HF_SPLIT[wc.dataset][wc.split],
        code=CODE["download"],
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
        "python scripts/run_step.py --step download --provenance {output} -- "
        "python scripts/download.py --dataset {wildcards.dataset} --split {params.split} "
        "--out {params.out} --no-index > {log} 2>&1"


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
        code=CODE["pack_shards"],
    log:
        log_of("pack_shards", "dataset", "split"),
    benchmark:
        bench_of("pack_shards", "dataset", "split")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step pack_shards --provenance {params.out}/provenance.json -- "
        "python scripts/pack_shards.py --source {params.source} --input {params.input:q} "
        "--split {wildcards.split} --out {params.out} {params.options} > {log} 2>&1"
