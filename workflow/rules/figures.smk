# The paper's figures and tables, one rule and one script each, under <results>/paper/.
# Every figure is PNG + PDF; the summary table is CSV + Markdown + LaTeX. Each is a target of
# its own, e.g. `snakemake results/paper/figures/loss_maps.png` or `snakemake fig_loss_maps`.

# The loss figures' forward: "training" (the reference: batch repeat, 25 % capacities) or
# "predict-all" (every target token predicted from every context token).
LOSS_FORWARD = FIGS.get("forward", "training")

rule fig_loss_maps:
    """Per-token loss averaged over many random masks, per image, for the compared runs."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("loss_maps"),
        npz=f"{FIGURES_DIR}/loss_maps.npz",
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        num_images=NUM_IMAGES,
        provenance=f"{PAPER}/provenance/loss_maps.json",
        runs=runs_args(COMPARE),
        masks=FIGS.get("loss_maps", {}).get("masks", 8000),
        forward=LOSS_FORWARD,
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_loss_maps"),
    benchmark:
        bench_of("fig_loss_maps")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_loss_maps "
        "--provenance {params.provenance} -- "
        "python scripts/fig_loss_maps.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --masks {params.masks} --forward {params.forward} "
        "--png {output.png} --pdf {output.pdf} --npz {output.npz} > {log} 2>&1"


rule fig_pca_features:
    """First three principal components of the patch features as RGB, per run."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("pca_features"),
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        num_images=NUM_IMAGES,
        provenance=f"{PAPER}/provenance/pca_features.json",
        runs=runs_args(COMPARE),
        depth=FIGS.get("pca_features", {}).get("depth", -4),
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_pca_features"),
    benchmark:
        bench_of("fig_pca_features")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_pca_features "
        "--provenance {params.provenance} -- "
        "python scripts/fig_pca_features.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --depth {params.depth} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule fig_token_loss_distribution:
    """Distribution of per-token losses of the compared runs, with tail statistics."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("token_loss_distribution"),
        stats=f"{FIGURES_DIR}/token_loss_distribution.csv",
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        provenance=f"{PAPER}/provenance/token_loss_distribution.json",
        runs=runs_args(COMPARE),
        num_images=FIGS.get("token_loss_distribution", {}).get("images", 256),
        masks=FIGS.get("token_loss_distribution", {}).get("masks", 16),
        forward=LOSS_FORWARD,
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_token_loss_distribution"),
    benchmark:
        bench_of("fig_token_loss_distribution")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_token_loss_distribution "
        "--provenance {params.provenance} -- "
        "python scripts/fig_token_loss_distribution.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --masks {params.masks} --forward {params.forward} "
        "--png {output.png} --pdf {output.pdf} --csv {output.stats} > {log} 2>&1"


rule fig_token_energy:
    """L2 norm of each patch's teacher output feature, per run (the energy hierarchy)."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("token_energy"),
        stats=f"{FIGURES_DIR}/token_energy.csv",
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        num_images=NUM_IMAGES,
        provenance=f"{PAPER}/provenance/token_energy.json",
        runs=runs_args(COMPARE),
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_token_energy"),
    benchmark:
        bench_of("fig_token_energy")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_token_energy "
        "--provenance {params.provenance} -- "
        "python scripts/fig_token_energy.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --png {output.png} --pdf {output.pdf} --csv {output.stats} > {log} 2>&1"


rule fig_training_curves:
    """Loss, LiDAR and RankMe against images seen, one line per trained run (seeds share a colour)."""
    input:
        models=[model(r) for r in TRAINED_RUNS],
    output:
        **figure("training_curves"),
    params:
        provenance=f"{PAPER}/provenance/training_curves.json",
        runs=experiment_args(TRAINED_RUNS),
        code=CODE["figures"],
    log:
        log_of("fig_training_curves"),
    benchmark:
        bench_of("fig_training_curves")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step fig_training_curves --provenance {params.provenance} -- "
        "python scripts/fig_training_curves.py {params.runs} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule fig_linear_probe_depth:
    """Linear-probe top-1 against encoder depth, one line per run (seeds: mean and ± std band)."""
    input:
        probes=[f"{RUNS_DIR}/{r}/eval/linear_probe.json" for r in ENABLED_RUNS],
    output:
        **figure("linear_probe_depth"),
    params:
        provenance=f"{PAPER}/provenance/linear_probe_depth.json",
        runs=experiment_args(ENABLED_RUNS),
        code=CODE["figures"],
    log:
        log_of("fig_linear_probe_depth"),
    benchmark:
        bench_of("fig_linear_probe_depth")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step fig_linear_probe_depth --provenance {params.provenance} -- "
        "python scripts/fig_linear_probe_depth.py {params.runs} "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule table_summary:
    """One row per run (seeds: mean ± std, n): differing settings, linear and k-NN top-1, depth
    RMSE, gain over random init, LiDAR, RankMe, cost."""
    input:
        models=[model(r) for r in ENABLED_RUNS],
        evals=[
            f"{RUNS_DIR}/{r}/eval/{f}"
            for r in ENABLED_RUNS
            for f in ("linear_probe.json", "knn_probe.json", "depth_probe.json", "lidar.json")
        ],
    output:
        csv=report(f"{TABLES_DIR}/summary.csv", category="Tables", caption="../report/summary.rst"),
        md=f"{TABLES_DIR}/summary.md",
        tex=f"{TABLES_DIR}/summary.tex",
    params:
        provenance=f"{PAPER}/provenance/summary.json",
        runs=experiment_args(ENABLED_RUNS),
        code=CODE["figures"],
    log:
        log_of("table_summary"),
    benchmark:
        bench_of("table_summary")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step table_summary --provenance {params.provenance} -- "
        "python scripts/table_summary.py {params.runs} "
        "--csv {output.csv} --md {output.md} --tex {output.tex} > {log} 2>&1"


rule fig_gain_vs_steps:
    """k-NN top-1 and its gain over random init against training steps (snapshots of
    train.snapshot_steps and the final model), seeds as mean and ± std band."""
    input:
        knn=[f"{RUNS_DIR}/{r}/eval/knn_probe.json" for r in ENABLED_RUNS],
        snapshots=[snapshot_knn(r, s) for r in TRAINED_RUNS for s in SNAPSHOTS[r]],
    output:
        **figure("gain_vs_steps"),
        csv=f"{FIGURES_DIR}/gain_vs_steps.csv",
    params:
        provenance=f"{PAPER}/provenance/gain_vs_steps.json",
        runs=experiment_args(ENABLED_RUNS),
        code=CODE["figures"],
    log:
        log_of("fig_gain_vs_steps"),
    benchmark:
        bench_of("fig_gain_vs_steps")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step fig_gain_vs_steps --provenance {params.provenance} -- "
        "python scripts/fig_gain_vs_steps.py {params.runs} "
        "--png {output.png} --pdf {output.pdf} --csv {output.csv} > {log} 2>&1"


rule fig_sample_losses:
    """Per-sample mean and variance of the token losses, histograms per run (plot-sample-losses)."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("sample_losses"),
        stats=f"{FIGURES_DIR}/sample_losses.csv",
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        provenance=f"{PAPER}/provenance/sample_losses.json",
        runs=runs_args(COMPARE),
        num_images=FIGS.get("sample_losses", {}).get("images", 20),
        masks=FIGS.get("sample_losses", {}).get("masks", 1000),
        forward=LOSS_FORWARD,
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_sample_losses"),
    benchmark:
        bench_of("fig_sample_losses")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_sample_losses "
        "--provenance {params.provenance} -- "
        "python scripts/fig_sample_losses.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --masks {params.masks} --forward {params.forward} "
        "--png {output.png} --pdf {output.pdf} --csv {output.stats} > {log} 2>&1"


rule fig_mean_loss:
    """Loss per position averaged over many training images, and the per-channel loss image
    (plot-mean-loss)."""
    input:
        models=[model(r) for r in COMPARE],
        shards=manifest("imagenet", "train"),
    output:
        **figure("mean_loss"),
        npz=f"{FIGURES_DIR}/mean_loss.npz",
    params:
        image_size=IMAGE_SIZE,
        shards=lambda wc, input: os.path.dirname(input.shards),
        provenance=f"{PAPER}/provenance/mean_loss.json",
        runs=runs_args(COMPARE),
        num_images=FIGS.get("mean_loss", {}).get("images", 16000),
        masks=FIGS.get("mean_loss", {}).get("masks", 1),
        forward=LOSS_FORWARD,
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_mean_loss"),
    benchmark:
        bench_of("fig_mean_loss")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_mean_loss "
        "--provenance {params.provenance} -- "
        "python scripts/fig_mean_loss.py {params.runs} --shards {params.shards} --image-size {params.image_size} "
        "--num-images {params.num_images} --masks {params.masks} --forward {params.forward} --no-progress "
        "--png {output.png} --pdf {output.pdf} --npz {output.npz} > {log} 2>&1"


rule fig_mask_picture:
    """The first packed training rows of the first compared run, context patches X-marked (make-viz)."""
    input:
        config=f"{RUNS_DIR}/{COMPARE[0]}/config.yaml",
        shards=manifest("imagenet", "train"),
    output:
        **figure("mask_picture"),
    params:
        shards=lambda wc, input: os.path.dirname(input.shards),
        provenance=f"{PAPER}/provenance/mask_picture.json",
        name=COMPARE[0],
        rows=FIGS.get("mask_picture", {}).get("rows", 4),
        code=CODE["figures"],
    log:
        log_of("fig_mask_picture"),
    benchmark:
        bench_of("fig_mask_picture")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step fig_mask_picture --provenance {params.provenance} -- "
        "python scripts/fig_mask_picture.py --config {input.config} --shards {params.shards} --name {params.name} "
        "--rows {params.rows} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule fig_pca_features_hsv:
    """The PCA features coloured as the reference's visualize-embeddings (blur, whitened PCA, HSV)."""
    input:
        models=[model(r) for r in COMPARE],
        images=IMAGE_INPUT,
    output:
        **figure("pca_features_hsv"),
    params:
        image_size=IMAGE_SIZE,
        source=IMAGE_SOURCE,
        num_images=NUM_IMAGES,
        provenance=f"{PAPER}/provenance/pca_features_hsv.json",
        runs=runs_args(COMPARE),
        depth=FIGS.get("pca_features", {}).get("depth", -4),
        code=CODE["figures"],
    threads: DEVICE_RULE_THREADS
    resources:
        gpu=job_gpus(1),
    log:
        log_of("fig_pca_features_hsv"),
    benchmark:
        bench_of("fig_pca_features_hsv")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step fig_pca_features_hsv "
        "--provenance {params.provenance} -- "
        "python scripts/fig_pca_features.py {params.runs} {params.source} --image-size {params.image_size} "
        "--num-images {params.num_images} --depth {params.depth} --style hsv "
        "--png {output.png} --pdf {output.pdf} > {log} 2>&1"
