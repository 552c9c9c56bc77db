"""Helpers the Snakemake workflow imports (the `Snakefile` and `workflow/rules/*.smk`).

- `runs`: resolve each run's config (RunConfig defaults + config `defaults` + run overrides),
  one copy per seed (`<run>-s<seed>`), random-init baselines (`like` another run), validated by
  `featnorm.config` at parse time; which baseline each run's gain is measured against.
- `source_hash`: a hash of package sources, put into rule params so code changes rerun jobs.
- `provenance`: package versions, git commit and command of a finished step.
- `gpu`: a lock-file allocator that gives each concurrent GPU job its own devices.

Nothing here imports torch: the workflow parses in well under a second.
"""
