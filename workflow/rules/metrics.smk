# Per-image metrics (pyiqa) and distribution metrics (clean-fid's FID/KID on FID/256 patches; SWD, which
# needs no weights: cgdm/evaluation/realism.py) per rate point.


# Not part of `all`: offline it fails with instructions; metrics then report "unavailable".
rule fetch_weights:
    output:
        "resources/weights/.fetched",
    log:
        "logs/weights/fetch.log",
    conda:
        CONDA_ENV
    shell:
        "python -m cgdm.evaluation.weights --fetch --marker {output} > {log} 2>&1"


rule image_metrics:
    input:
        csv="results/encoded/{dataset}/{codec}/{rate}/encode.csv",
        # weight files' availability + sha256 (common.smk): fetching weights reruns these jobs
        state=metric_state_files(config["metrics"]["per_image"]),
    output:
        "results/metrics/{dataset}/{codec}/{rate}.csv",
    log:
        "logs/metrics/{dataset}/{codec}/{rate}.log",
    benchmark:
        "results/benchmarks/metrics/{dataset}/{codec}/{rate}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        metrics=",".join(config["metrics"]["per_image"]),
        device=device(),
    shell:
        "python -m cgdm.evaluation.metrics --encode-csv {input.csv} --out {output}"
        " --metrics {params.metrics} --device {params.device} --threads {threads} > {log} 2>&1"


rule distribution_metrics:
    input:
        csv="results/encoded/{dataset}/{codec}/{rate}/encode.csv",
        state=metric_state_files(config["metrics"].get("distribution") or []),
    output:
        "results/fid/{dataset}/{codec}/{rate}.csv",
    log:
        "logs/fid/{dataset}/{codec}/{rate}.log",
    benchmark:
        "results/benchmarks/fid/{dataset}/{codec}/{rate}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    params:
        metrics=",".join(config["metrics"].get("distribution", [])),
        # Inception features of the originals are computed once per dataset, not per codec x rate.
        feature_cache=lambda wc: f"resources/fid_features/{wc.dataset}",
        device=device(),
    shell:
        "python -m cgdm.evaluation.fid --encode-csv {input.csv} --out {output} --metrics {params.metrics}"
        " --device {params.device} --threads {threads} --feature-cache {params.feature_cache} > {log} 2>&1"
