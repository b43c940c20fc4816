# One job per (dataset, codec, rate): every image really written to a file, bpp from its size.


rule encode:
    input:
        data=lambda wc: dataset_marker(wc.dataset),
        models=lambda wc: list(codec_models(wc.codec).values()),
        # programs / downloaded files outside the workflow (common.smk): installing BPG reruns BPG only
        state=lambda wc: codec_state_files(wc.codec),
    output:
        csv="results/encoded/{dataset}/{codec}/{rate}/encode.csv",
    log:
        "logs/encode/{dataset}/{codec}/{rate}.log",
    benchmark:
        "results/benchmarks/encode/{dataset}/{codec}/{rate}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=lambda wc: 1 if ALL_CODECS[wc.codec].get("gpu") else 0,
    params:
        entry=lambda wc: json.dumps(ALL_CODECS[wc.codec]),
        images=lambda wc: dataset_dir(wc.dataset),
        models=lambda wc: " ".join(f"--model {k}={v}" for k, v in codec_models(wc.codec).items()),
        out_dir=lambda wc: f"results/encoded/{wc.dataset}/{wc.codec}/{wc.rate}",
        limit=lambda wc: DATASETS[wc.dataset].get("limit", 0),
        config_hash=lambda wc: codec_hash(wc.codec, wc.dataset),
        device=device(),
    shell:
        "cgdm encode --dataset {wildcards.dataset} --images-dir {params.images} --codec {wildcards.codec}"
        " --entry {params.entry:q} --rate {wildcards.rate} {params.models} --out-dir {params.out_dir}"
        " --out-csv {output.csv} --device {params.device} --config-hash {params.config_hash}"
        " --limit {params.limit} --threads {threads} > {log} 2>&1"
