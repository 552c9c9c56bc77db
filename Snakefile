# I-JEPA feature normalization: from the data to the paper's figures and tables.
#
#   snakemake --cores 2 --configfile config/demo.yaml     the CPU demo (minutes)
#   snakemake --cores 16 --resources gpu=1                the paper (config/config.yaml)
#   snakemake results/paper/figures/loss_maps.png         one figure (and what it needs)
#
# Stages, one file each: workflow/rules/{data,pretrain,evaluate,figures}.smk; shared helpers,
# config validation and run resolution in workflow/rules/common.smk.

# The paper config is the default; `--configfile X` replaces it (not merged into it), so the
# demo never inherits the paper's runs.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


report: "workflow/report/workflow.rst"


rule all:
    """Every table and figure of the paper, and every run's evaluation."""
    input:
        ALL_TARGETS,
    default_target: True
