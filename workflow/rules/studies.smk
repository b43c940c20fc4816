# Re-decode studies (cgdm/evaluation/studies.py): the bitstreams written by `encode`, decoded again with
# other decoder settings (cgdm.redecode rewrites only the file's decoder section; nothing is re-encoded).
#   ablations  full CGDM + every variant, every rate point, each decode seed of ablations.seeds
#   dp_curve   full CGDM + every variant at dp_curve.rate, each dp_curve.points entry x dp_curve.seeds,
#              and dp_curve.base (no diffusion) as the reference point
# One job per (study, dataset, codec, rate point) decodes, one measures; settings whose pixels exist already
# (the encoded settings, or settings without effect) are not decoded again.


rule redecode:
    input:
        encode="results/encoded/{dataset}/{codec}/{rate}/encode.csv",
        models=lambda wc: list(codec_models(wc.codec).values()),
    output:
        csv="results/redecoded/{study}/{dataset}/{codec}/{rate}/decode.csv",
    log:
        "logs/redecode/{study}/{dataset}/{codec}/{rate}.log",
    benchmark:
        "results/benchmarks/redecode/{study}/{dataset}/{codec}/{rate}.tsv"
    wildcard_constraints:
        study="ablations|dp_curve",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=lambda wc: 1 if ALL_CODECS[wc.codec].get("gpu") else 0,
    params:
        entry=lambda wc: json.dumps(ALL_CODECS[wc.codec]),
        models=lambda wc: " ".join(f"--model {k}={v}" for k, v in codec_models(wc.codec).items()),
        settings=lambda wc: json.dumps(study_settings(wc.study, wc.codec)),
        out_dir=lambda wc: f"results/redecoded/{wc.study}/{wc.dataset}/{wc.codec}/{wc.rate}",
        config_hash=lambda wc: _hash(
            {"codec": codec_hash(wc.codec, wc.dataset), "settings": study_settings(wc.study, wc.codec)}
        ),
        device=device(),
    shell:
        "python -m cgdm.evaluation.studies decode --encode-csv {input.encode} --study {wildcards.study}"
        " --entry {params.entry:q} {params.models} --settings {params.settings:q} --out-dir {params.out_dir}"
        " --out {output.csv} --device {params.device} --config-hash {params.config_hash}"
        " --threads {threads} > {log} 2>&1"


rule redecode_metrics:
    input:
        csv="results/redecoded/{study}/{dataset}/{codec}/{rate}/decode.csv",
        state=lambda wc: metric_state_files(study_metrics(wc.study)),
    output:
        "results/redecoded/{study}/{dataset}/{codec}/{rate}/metrics.csv",
    log:
        "logs/redecode/{study}/{dataset}/{codec}/{rate}.metrics.log",
    benchmark:
        "results/benchmarks/redecode/{study}/{dataset}/{codec}/{rate}.metrics.tsv"
    wildcard_constraints:
        study="ablations|dp_curve",
    conda:
        CONDA_ENV
    threads: 1
    params:
        metrics=lambda wc: ",".join(study_metrics(wc.study)),
        device=device(),
    shell:
        "python -m cgdm.evaluation.studies metrics --decode-csv {input.csv} --out {output}"
        " --metrics {params.metrics} --device {params.device} --threads {threads} > {log} 2>&1"


rule aggregate_ablation_seeds:
    input:
        study_csvs("ablations"),
    output:
        "results/ablation_seeds.csv",
    log:
        "logs/report/aggregate_ablation_seeds.log",
    conda:
        CONDA_ENV
    shell:
        "python -m cgdm.evaluation.studies aggregate --out {output} {input} > {log} 2>&1"


rule aggregate_dp_curve:
    input:
        study_csvs("dp_curve"),
    output:
        "results/dp_curve.csv",
    log:
        "logs/report/aggregate_dp_curve.log",
    conda:
        CONDA_ENV
    shell:
        "python -m cgdm.evaluation.studies aggregate --out {output} {input} > {log} 2>&1"


rule dp_curve_report:
    input:
        "results/dp_curve.csv",
    output:
        pdf="results/dp_curve.pdf",
        png=report("results/dp_curve.png", caption="../report/dp_curve.rst", category="Distortion-perception"),
        table=report("results/tables/dp_curve_table.md", caption="../report/tables.rst", category="Tables"),
    log:
        "logs/report/dp_curve.log",
    conda:
        CONDA_ENV
    params:
        variants=variant_args(),
        base=f"--base {DP_BASE}" if DP_BASE else "",
        labels=json.dumps({c: ALL_CODECS[c]["label"] for c in DP_CODECS if ALL_CODECS[c].get("label")}),
    shell:
        "python -m cgdm.evaluation.report --dp-curve {input} --pdf {output.pdf} --png {output.png}"
        " --tables results/tables {params.variants} {params.base} --labels {params.labels:q} > {log} 2>&1"
