# Pretraining: one I-JEPA encoder per enabled run.
#
# runs/<run>/config.yaml is written by its own rule whose params are the resolved config:
# changing one run's settings reruns that run's chain (and the figures and tables), nothing
# else. Resume checkpoints live in checkpoints/<run>-<confighash>-code<codehash>/, outside
# the declared outputs, so a killed or pre-empted job resumes on the next `snakemake` call,
# while a changed config or changed training code starts fresh.


rule run_config:
    """The resolved run config: RunConfig defaults + config `defaults` + the run's overrides."""
    output:
        f"{RUNS_DIR}/{{run}}/config.yaml",
    params:
        config=lambda wc: shlex.quote(json.dumps(RUNS[wc.run], sort_keys=True)),
    log:
        log_of("run_config", "run"),
    benchmark:
        bench_of("run_config", "run")
    conda:
        ENV
    shell:
        "python scripts/write_run_config.py --json {params.config} --out {output} > {log} 2>&1"


rule pretrain:
    """I-JEPA pretraining (SPEC section 3); writes model.pt and train_log.jsonl next to it.
    With `train.gpus: N` > 1 the job asks for N GPUs and runs N torchrun processes (DDP);
    train.batch_size stays the global batch."""
    input:
        config=f"{RUNS_DIR}/{{run}}/config.yaml",
        shards=manifest("imagenet", "train"),
    output:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
    wildcard_constraints:
        run=_one_of(TRAINED_RUNS),
    params:
        out=lambda wc: run_dir(wc.run),
        # keyed by the config hash and the training code's hash: a changed config or changed
        # code starts fresh (the trainer would otherwise "resume" its finished run)
        checkpoints=lambda wc: f"{CHECKPOINTS}/{wc.run}-{RUN_HASH[wc.run]}-code{CODE['train'][:8]}",
        code=CODE["train"],
        launch=lambda wc, resources: python_launcher(int(resources.gpu)),
        # CPU threads per process
        threads=lambda wc, threads, resources: max(1, threads // max(1, int(resources.gpu))),
    threads: THREADS["pretrain"]
    resources:
        gpu=lambda wc: job_gpus(run_gpus(wc.run)),
    log:
        log_of("pretrain", "run"),
    benchmark:
        bench_of("pretrain", "run")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --gpus {resources.gpu} --threads {threads} --step pretrain "
        "--provenance {params.out}/provenance/pretrain.json --require {output.model} -- "
        "{params.launch} scripts/pretrain.py --config {input.config} --out {params.out} "
        "--checkpoint-dir {params.checkpoints} --threads {params.threads} --no-progress >> {log} 2>&1"


rule init_model:
    """A random-init baseline (`baseline: random-init`): the untrained model of its `like` run's
    config, built as the trainer builds step 0 (same seed); no data, no training."""
    input:
        config=f"{RUNS_DIR}/{{run}}/config.yaml",
    output:
        model=f"{RUNS_DIR}/{{run}}/model.pt",
    wildcard_constraints:
        run=_one_of(BASELINE_RUNS),
    params:
        provenance=lambda wc: f"{RUNS_DIR}/{wc.run}/provenance/init_model.json",
        code=CODE["init_model"],
    log:
        log_of("init_model", "run"),
    benchmark:
        bench_of("init_model", "run")
    conda:
        ENV
    shell:
        "python scripts/run_step.py --step init_model --provenance {params.provenance} -- "
        "python scripts/init_model.py --config {input.config} --out {output.model} > {log} 2>&1"
