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
rule reference_snapshot:
    input:
        "results/rd_curves.pdf",
        "results/tables/rd_table.md",
        "results/tables/bd_rate_table.md",
        "results/tables/runtime_table.md",
        "results/tables/ablation_table.md" if ABLATIONS else [],
        expand("results/crops/{dataset}.png", dataset=DATASETS),
    output:
        "results/reference/rd_curves.pdf",
    conda:
        CONDA_ENV
    log:
        "logs/report/reference_snapshot.log",
    shell:
        "(mkdir -p results/reference/tables && cp results/rd_curves*.png results/reference/"
        " && cp results/tables/*.md results/tables/*.tex results/reference/tables/"
        " && for f in results/crops/*.png; do cp $f results/reference/crops-$(basename $f); done"
        " && cp results/ablations*.png results/reference/ 2>/dev/null || true"
        " && cp results/rd_curves.pdf {output}) > {log} 2>&1"


# Side-by-side crops of every codec at matched bpp (one figure per dataset), for the report.
rule crops:
    input:
        lambda wc: encode_csvs(list(CODECS), [wc.dataset]),
    output:
        report("results/crops/{dataset}.png", caption="../report/crops.rst", category="Crops"),
    params:
        labels=json.dumps({c: e["label"] for c, e in CODECS.items() if e.get("label")}),
        bpp=lambda wc: f"--bpp {config['report']['crops_bpp']}" if config.get("report", {}).get("crops_bpp") else "",
    conda:
        CONDA_ENV
    log:
        "logs/report/crops_{dataset}.log",
    shell:
        "python -m cgdm.evaluation.crops {input} --out {output} --labels {params.labels:q} {params.bpp} > {log} 2>&1"
