# Tidy tables -> RD curves, BD-rate / RD / runtime / ablation tables, report.


rule published_curve:
    output:
        "results/published/{name}.csv",
    params:
        entry=lambda wc: json.dumps(PUBLISHED[wc.name]),
    conda:
        CONDA_ENV
    log:
        "logs/published/{name}.log",
    shell:
        "python -m baselines.published --name {wildcards.name} --entry {params.entry:q} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        metric_csvs(CODECS),
        published_csvs(),
    output:
        "results/results.csv",
    conda:
        CONDA_ENV
    log:
        "logs/report/aggregate.log",
    shell:
        "python -m cgdm.evaluation.aggregate --out {output} {input} > {log} 2>&1"


rule aggregate_ablations:
    input:
        metric_csvs([ABLATIONS.get("full")] + list(ABLATION_CODECS)) if ABLATIONS else [],
    output:
        "results/ablations.csv",
    conda:
        CONDA_ENV
    log:
        "logs/report/aggregate_ablations.log",
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
    params:
        anchor=config.get("report", {}).get("anchor", ""),
        labels=json.dumps(
            {c: e["label"] for c, e in {**ALL_CODECS, **PUBLISHED}.items() if e.get("label")}
        ),
    conda:
        CONDA_ENV
    log:
        "logs/report/report.log",
    shell:
        "python -m cgdm.evaluation.report --results {input.results} --pdf {output.pdf}"
        " --tables results/tables --anchor {params.anchor} --labels {params.labels:q} > {log} 2>&1"


rule ablation_report:
    input:
        "results/ablations.csv",
    output:
        pdf=report("results/ablations.pdf", caption="../report/ablations.rst", category="Ablations"),
        table=report("results/tables/ablation_table.md", caption="../report/tables.rst", category="Tables"),
    params:
        full=ABLATIONS.get("full", ""),
        variants=" ".join(f"{k}={ABLATIONS.get('full')}_{k}" for k in (ABLATIONS.get("variants") or {})),
    conda:
        CONDA_ENV
    log:
        "logs/report/ablations.log",
    shell:
        "python -m cgdm.evaluation.report --ablations {input} --pdf {output.pdf} --tables results/tables"
        " --full {params.full} --variants {params.variants} > {log} 2>&1"


# Committed snapshot of the quick profile's outcome, shown in README.md (results/reference/ is tracked).
# Every copy must succeed (bash strict mode): a missing figure or table fails the rule.
rule reference_snapshot:
    input:
        "results/rd_curves.pdf",
        "results/tables/rd_table.md",
        "results/tables/bd_rate_table.md",
        "results/tables/runtime_table.md",
        ["results/ablations.pdf", "results/tables/ablation_table.md"] if ABLATIONS else [],
        crops=expand("results/crops/{dataset}.png", dataset=DATASETS),
    output:
        "results/reference/rd_curves.pdf",
    params:
        ablations="results/ablations*.png" if ABLATIONS else "",
    conda:
        CONDA_ENV
    log:
        "logs/report/reference_snapshot.log",
    shell:
        "(mkdir -p results/reference/tables"
        " && cp results/rd_curves*.png {params.ablations} results/reference/"
        " && cp results/tables/*.md results/tables/*.tex results/reference/tables/"
        " && for f in {input.crops:q}; do cp $f results/reference/crops-$(basename $f); done"
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
    params:
        labels=json.dumps({c: e["label"] for c, e in CODECS.items() if e.get("label")}),
        entries=json.dumps(CODECS),
        bpp=lambda wc: f"--bpp {config['report']['crops_bpp']}" if config.get("report", {}).get("crops_bpp") else "",
        reference=lambda wc: f"--reference {config['report']['crops_reference']}"
        if config.get("report", {}).get("crops_reference") else "",
        tolerance=config.get("report", {}).get("crops_tolerance", 0.05),
    conda:
        CONDA_ENV
    log:
        "logs/report/crops_{dataset}.log",
    shell:
        "python -m cgdm.evaluation.crops {input} --out {output.png} --table {output.table}"
        " --labels {params.labels:q} --entries {params.entries:q} {params.bpp} {params.reference}"
        " --tolerance {params.tolerance} > {log} 2>&1"

