# Evaluation of every enabled run (SPEC section 4): features of every depth, the linear
# probe, the k-NN probe, the NYU depth probe, LiDAR / RankMe; the k-NN probe of training
# snapshots (train.snapshot_steps).
#
# Feature caches (features/<run>/<split>/) resume after an interruption. Their
# provenance.json, written when extraction finishes, is the declared output; a cache that
# is complete, or older than the model, is stale when the job runs again and is removed first.


# Shared by extract_features and extract_snapshot_features. A stale cache (complete: the job
# reruns because something changed; or older than the model, also the per-rank parts of an
# interrupted multi-GPU extraction) is removed before extracting.
EXTRACT_SHELL = (
    "if [ -f {params.out}/manifest.json ] && {{ grep -q '\"complete\": true' {params.out}/manifest.json "
    "|| [ {params.model} -nt {params.out}/manifest.json ]; }}; then rm -rf {params.out}; fi; "
    "if [ -d {params.out}/.parts ] && [ -n \"$(find {params.out}/.parts -name manifest.json ! -newer {params.model})\" ]; "
    "then rm -rf {params.out}/.parts; fi; "
    "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step extract_features "
    "--provenance {output} -- "
    "{params.launch} scripts/extract_features.py --model {params.model} --shards {params.shards} "
    "--out {params.out} --image-size {params.image_size} --mode {params.mode} --pool {params.pool} "
    "--threads {threads} --no-progress >> {log} 2>&1"
)


rule extract_features:
    """Mean-pooled teacher features of every depth, float16 shards (resumable)."""
    input:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
        shards=lambda wc: manifest("imagenet", wc.split),
    output:
        f"{FEATURES}/{{run}}/{{split}}/provenance.json",
    params:
        model=lambda wc, input: input.model,
        image_size=IMAGE_SIZE,
        shards=lambda wc: shard_dir("imagenet", wc.split),
        out=lambda wc: f"{FEATURES}/{wc.run}/{wc.split}",
        # the reference's defaults: every depth, registers pooled with the patches
        mode=EVAL.get("extraction_mode", "all-depths"),
        pool=EVAL.get("pool", "all-tokens"),
        code=CODE["evaluate"],
        launch=lambda wc, resources: python_launcher(int(resources.gpu)),
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(EVAL.get("gpus", 1)),  # > 1: torchrun, image shards split among the processes
    log:
        log_of("extract_features", "run", "split"),
    benchmark:
        bench_of("extract_features", "run", "split")
    conda:
        ENV
    shell:
        EXTRACT_SHELL


rule linear_probe:
    """One linear classifier per depth on the cached features; top-1 per depth."""
    input:
        train=f"{FEATURES}/{{run}}/train/provenance.json",
        val=f"{FEATURES}/{{run}}/val/provenance.json",
    output:
        f"{RUNS_DIR}/{{run}}/eval/linear_probe.json",
    params:
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/linear_probe.json",
        train=lambda wc: f"{FEATURES}/{wc.run}/train",
        val=lambda wc: f"{FEATURES}/{wc.run}/val",
        epochs=EVAL.get("linear_probe", {}).get("epochs", 50),
        batch_size=EVAL.get("linear_probe", {}).get("batch_size", 2048),
        lr=EVAL.get("linear_probe", {}).get("lr", 1e-3),
        # default: raw features, as the reference
        standardize=(
            "--standardize"
            if EVAL.get("linear_probe", {}).get("standardize", False)
            else "--no-standardize"
        ),
        code=CODE["evaluate"],
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(1),
    log:
        log_of("linear_probe", "run"),
    benchmark:
        bench_of("linear_probe", "run")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step linear_probe "
        "--provenance {params.provenance} -- "
        "python scripts/linear_probe.py --train-features {params.train} --val-features {params.val} "
        "--out {output} --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr} "
        "{params.standardize} --threads {threads} --no-progress > {log} 2>&1"


KNN = EVAL.get("knn", {})
# --k/--temperature/--depths of knn_probe.py
KNN_OPTIONS = " ".join(
    [f"--k {KNN.get('k', 20)}", f"--temperature {KNN.get('temperature', 0.07)}"]
    + ([f"--depths {' '.join(str(d) for d in KNN['depths'])}"] if KNN.get("depths") else [])
)
KNN_SHELL = (
    "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step knn_probe "
    "--provenance {params.provenance} -- "
    "python scripts/knn_probe.py --train-features {params.train} --val-features {params.val} "
    "--out {output} {params.options} --threads {threads} --no-progress > {log} 2>&1"
)


rule knn_probe:
    """Weighted k-NN (cosine, k = 20, votes exp(sim / 0.07), as DINO) per depth on the cached features."""
    input:
        train=f"{FEATURES}/{{run}}/train/provenance.json",
        val=f"{FEATURES}/{{run}}/val/provenance.json",
    output:
        f"{RUNS_DIR}/{{run}}/eval/knn_probe.json",
    params:
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/knn_probe.json",
        train=lambda wc, input: os.path.dirname(input.train),
        val=lambda wc, input: os.path.dirname(input.val),
        options=KNN_OPTIONS,
        code=CODE["evaluate"],
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(1),
    log:
        log_of("knn_probe", "run"),
    benchmark:
        bench_of("knn_probe", "run")
    conda:
        ENV
    shell:
        KNN_SHELL


# Learning curve (train.snapshot_steps): every model snapshot gets features and the k-NN probe,
# nothing else. Snapshots are written by the pretrain job, so its model.pt stands for them.


rule extract_snapshot_features:
    """Features of every depth of a training snapshot (runs/<run>/snapshots/step-<N>.pt)."""
    input:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
        shards=lambda wc: manifest("imagenet", wc.split),
    output:
        f"{FEATURES}/{{run}}/snapshots/step-{{step}}/{{split}}/provenance.json",
    wildcard_constraints:
        run=_one_of(TRAINED_RUNS),
    params:
        model=lambda wc: f"{RUNS_DIR}/{wc.run}/snapshots/step-{wc.step}.pt",
        image_size=IMAGE_SIZE,
        shards=lambda wc: shard_dir("imagenet", wc.split),
        out=lambda wc: f"{FEATURES}/{wc.run}/snapshots/step-{wc.step}/{wc.split}",
        mode=EVAL.get("extraction_mode", "all-depths"),
        pool=EVAL.get("pool", "all-tokens"),
        code=CODE["evaluate"],
        launch=lambda wc, resources: python_launcher(int(resources.gpu)),
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(EVAL.get("gpus", 1)),
    log:
        log_of("extract_snapshot_features", "run", "step", "split"),
    benchmark:
        bench_of("extract_snapshot_features", "run", "step", "split")
    conda:
        ENV
    shell:
        EXTRACT_SHELL


rule knn_snapshot:
    """The k-NN probe of a training snapshot: one point of the gain-vs-steps curve."""
    input:
        train=f"{FEATURES}/{{run}}/snapshots/step-{{step}}/train/provenance.json",
        val=f"{FEATURES}/{{run}}/snapshots/step-{{step}}/val/provenance.json",
    output:
        f"{RUNS_DIR}/{{run}}/eval/snapshots/knn_probe-step-{{step}}.json",
    wildcard_constraints:
        run=_one_of(TRAINED_RUNS),
    params:
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/knn_probe-step-{wc.step}.json",
        train=lambda wc, input: os.path.dirname(input.train),
        val=lambda wc, input: os.path.dirname(input.val),
        options=KNN_OPTIONS,
        code=CODE["evaluate"],
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(1),
    log:
        log_of("knn_snapshot", "run", "step"),
    benchmark:
        bench_of("knn_snapshot", "run", "step")
    conda:
        ENV
    shell:
        KNN_SHELL


rule depth_probe:
    """NYU-Depth-v2 probe on the 4th block from the end: RMSE (m), strips of predictions."""
    input:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
        train=manifest("nyu", "train"),
        val=manifest("nyu", "val"),
    output:
        json=f"{RUNS_DIR}/{{run}}/eval/depth_probe.json",
        strips=report(
            f"{RUNS_DIR}/{{run}}/eval/depth_strips.png",
            category="Depth probe",
            subcategory="{run}",
            caption="../report/depth_strips.rst",
        ),
    params:
        image_size=IMAGE_SIZE,
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/depth_probe.json",
        train=lambda wc, input: os.path.dirname(input.train),
        val=lambda wc, input: os.path.dirname(input.val),
        epochs=EVAL.get("depth_probe", {}).get("epochs", 10),
        lr=EVAL.get("depth_probe", {}).get("lr", 5e-4),
        batch_size=EVAL.get("depth_probe", {}).get("batch_size", 320),
        # default: the reference's loss (only the ground truth normalised) and bilinear GT resize
        options=(
            ("--normalize-prediction " if EVAL.get("depth_probe", {}).get("normalize_prediction") else "")
            + f"--depth-resize {EVAL.get('depth_probe', {}).get('depth_resize', 'bilinear')} "
            + f"--feature-depth {EVAL.get('depth_probe', {}).get('feature_depth', -4)}"
        ),
        code=CODE["evaluate"],
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(1),
    log:
        log_of("depth_probe", "run"),
    benchmark:
        bench_of("depth_probe", "run")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step depth_probe "
        "--provenance {params.provenance} -- "
        "python scripts/depth_probe.py --model {input.model} --train-shards {params.train} "
        "--val-shards {params.val} --out {output.json} --strips {output.strips} "
        "--epochs {params.epochs} --lr {params.lr} --batch-size {params.batch_size} {params.options} "
        "--image-size {params.image_size} --threads {threads} --no-progress > {log} 2>&1"


rule lidar:
    """LiDAR and RankMe of the teacher on a fixed, seeded subset of training images."""
    input:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
        shards=manifest("imagenet", "train"),
    output:
        f"{RUNS_DIR}/{{run}}/eval/lidar.json",
    params:
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/lidar.json",
        shards=lambda wc, input: os.path.dirname(input.shards),
        images=EVAL.get("lidar", {}).get("images", 1000),
        augmentations=EVAL.get("lidar", {}).get("augmentations", 50),
        code=CODE["evaluate"],
    threads: THREADS["evaluation"]
    resources:
        gpu=job_gpus(1),
    log:
        log_of("lidar", "run"),
    benchmark:
        bench_of("lidar", "run")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step lidar "
        "--provenance {params.provenance} -- "
        "python scripts/lidar.py --model {input.model} --shards {params.shards} --out {output} "
        "--num-images {params.images} --num-augmentations {params.augmentations} "
        "--threads {threads} --no-progress > {log} 2>&1"
