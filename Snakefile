# CGDM benchmark and reproducibility suite.
#
#   snakemake --cores 8 results/rd_curves.pdf        # quick profile (default config), Kodak, CPU
#   snakemake --cores 8 ablations                    # ablation study (full vs no consistency / SFF / boundary)
#   snakemake --cores 8 dp_curve                     # distortion-perception sweep (guidance / bound) at one rate
#   snakemake --cores 8 paper_tables                 # every table of the study
#   snakemake --configfile config/paper.yaml --profile profiles/slurm   # paper profile on a cluster
#
# See README.md for every target, profile and config option.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    codec="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    rate="[0-9]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/studies.smk"


DEFAULT_PRODUCTS = [
    "results/rd_curves.pdf",
    "results/tables/rd_table.md",
    *expand("results/crops/{dataset}.png", dataset=DATASETS),
]


rule all:
    input:
        # under `snakemake --report`: what exists of these and of the optional products (common.smk)
        report_view(DEFAULT_PRODUCTS),
    params:
        not_built=not_built_yet(DEFAULT_PRODUCTS),
    default_target: True


rule ablations:
    input:
        "results/ablations.pdf",
        "results/tables/ablation_table.md",


# The fixed bitstreams of full CGDM and every ablation variant at dp_curve.rate, re-decoded at every
# dp_curve.points entry (guidance / bound), PSNR against SWD; the base codec as the reference point.
rule dp_curve:
    input:
        ["results/dp_curve.pdf", "results/dp_curve.png", "results/tables/dp_curve_table.md"] if ABLATIONS else [],


rule paper_tables:
    input:
        "results/tables/rd_table.md",
        "results/tables/bd_rate_table.md",
        "results/tables/runtime_table.md",
        "results/tables/ablation_table.md",
