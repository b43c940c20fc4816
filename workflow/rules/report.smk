# Tidy tables -> RD curves, BD-rate / RD / runtime / ablation tables, report.


rule published_curve:
    output:
        "results/published/{name}.csv",
    log:
        "logs/published/{name}.log",
    conda:
        CONDA_ENV
    params:
        entry=lambda wc: json.dumps(PUBLISHED[wc.name]),
    shell:
        "python -m baselines.published --name {wildcards.name} --entry {params.entry:q} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        metric_csvs(CODECS),
        published_csvs(),
    output:
        "results/results.csv",
    log:
        "logs/report/aggregate.log",
    conda:
        CONDA_ENV
    shell:
        "python -m cgdm.evaluation.aggregate --out {output} {input} > {log} 2>&1"


rule aggregate_ablations:
    input:
        metric_csvs([ABLATIONS.get("full")] + list(ABLATION_CODECS)) if ABLATIONS else [],
    output:
        "results/ablations.csv",
    log:
        "logs/report/aggregate_ablations.log",
    conda:
        CONDA_ENV
    shell:
        "python -m cgdm.evaluation.aggregate --out {output} {input} > {log} 2>&1"


rule rd_report:
    input:
        results="results/results.csv",
    output:
        pdf=report("results/rd_curves.pdf", caption="../report/rd_curves.rst", category="RD curves"),
        rd=report("results/tables/rd_table.md", caption="../report/tables.rst", category="Tables"),
        bd=report("results/tables/bd_rate_table.md", caption="../report/tables.rst", category="Tables"),
        runtime=report("results/tables/runtime_table.md", caption="../report/tables.rst", category="Tables"),
    log:
        "logs/report/report.log",
    conda:
        CONDA_ENV
    params:
        anchor=config.get("report", {}).get("anchor", ""),
        bd_metrics=bd_metrics_arg(),
        labels=json.dumps({c: e["label"] for c, e in {**ALL_CODECS, **PUBLISHED}.items() if e.get("label")}),
    shell:
        "python -m cgdm.evaluation.report --results {input.results} --pdf {output.pdf}"
        " --tables results/tables --anchor {params.anchor} {params.bd_metrics}"
        " --labels {params.labels:q} > {log} 2>&1"


rule ablation_report:
    input:
        results="results/ablations.csv",
        # full CGDM and every variant re-decoded with each of ablations.seeds (workflow/rules/studies.smk)
        seeds="results/ablation_seeds.csv",
    output:
        pdf=report("results/ablations.pdf", caption="../report/ablations.rst", category="Ablations"),
        table=report("results/tables/ablation_table.md", caption="../report/tables.rst", category="Tables"),
        paired="results/tables/ablation_paired.csv",
    log:
        "logs/report/ablations.log",
    conda:
        CONDA_ENV
    params:
        variants=variant_args(),
        bd_metrics=bd_metrics_arg(),
    shell:
        "python -m cgdm.evaluation.report --ablations {input.results} --seeds {input.seeds} --pdf {output.pdf}"
        " --tables results/tables {params.bd_metrics} {params.variants} > {log} 2>&1"


# Committed snapshot of the quick profile's outcome, shown in README.md (results/reference/ is tracked).
# Every file is named (snapshot_copies in common.smk: the declared products and the figures / tables the
# report steps write next to them), never globbed, and all must exist: a missing product fails the rule,
# naming it ("missing product <path>" in the log), before anything is copied, so a snapshot is never left
# half-refreshed. The one optional file (bd_rate.csv: written only when the anchor codec has results) is
# listed as optional.
rule reference_snapshot:
    input:
        "results/rd_curves.pdf",
        "results/tables/rd_table.md",
        "results/tables/bd_rate_table.md",
        "results/tables/runtime_table.md",
        ["results/ablations.pdf", "results/tables/ablation_table.md"] if ABLATIONS else [],
        ["results/dp_curve.png", "results/tables/dp_curve_table.md"] if ABLATIONS else [],
        crops=expand("results/crops/{dataset}.png", dataset=DATASETS),
    output:
        "results/reference/rd_curves.pdf",
    log:
        "logs/report/reference_snapshot.log",
    conda:
        CONDA_ENV
    params:
        copies=snapshot_copies(),
        optional=snapshot_copies(optional=True),
    shell:
        "(set -euo pipefail; missing=0"
        " && for pair in {params.copies:q}; do src=${{pair%%::*}};"
        ' if [ ! -f "$src" ]; then echo "reference_snapshot: missing product $src" >&2; missing=1; fi; done'
        ' && if [ $missing = 1 ]; then echo "reference_snapshot: nothing copied" >&2; exit 1; fi'
        " && mkdir -p results/reference/tables"
        " && for pair in {params.copies:q}; do src=${{pair%%::*}}; dst=${{pair##*::}};"
        ' cp "$src" "$dst"; echo "copied $src -> $dst"; done'
        " && for pair in {params.optional:q}; do src=${{pair%%::*}}; dst=${{pair##*::}};"
        ' if [ -f "$src" ]; then cp "$src" "$dst"; echo "copied $src -> $dst";'
        ' else echo "optional $src not built: not copied"; fi; done'
        " && cp results/rd_curves.pdf {output}) > {log} 2>&1"


# Side-by-side crops of every codec at matched bpp (one figure per dataset), for the report.
# The target is the bpp of the reference codec (report.crops_reference, default: a cgdm codec) on the crop
# image; classical codecs are re-encoded at that bpp (real files), within report.crops_tolerance (5 %).
rule crops:
    input:
        lambda wc: encode_csvs(list(CODECS), [wc.dataset]),
    output:
        png=report("results/crops/{dataset}.png", caption="../report/crops.rst", category="Crops"),
        table="results/crops/{dataset}.csv",
    log:
        "logs/report/crops_{dataset}.log",
    conda:
        CONDA_ENV
    params:
        labels=json.dumps({c: e["label"] for c, e in CODECS.items() if e.get("label")}),
        entries=json.dumps(CODECS),
        bpp=lambda wc: f"--bpp {config['report']['crops_bpp']}" if config.get("report", {}).get("crops_bpp") else "",
        reference=lambda wc: (
            f"--reference {config['report']['crops_reference']}"
            if config.get("report", {}).get("crops_reference")
            else ""
        ),
        tolerance=config.get("report", {}).get("crops_tolerance", 0.05),
    shell:
        "python -m cgdm.evaluation.crops {input} --out {output.png} --table {output.table}"
        " --labels {params.labels:q} --entries {params.entries:q} {params.bpp} {params.reference}"
        " --tolerance {params.tolerance} > {log} 2>&1"
