# Every model named in the config's models: table (CGDM stages, small baselines): installed from the
# shipped zoo/ when the entry names one (`zoo:`), else trained (`retrain: true` trains them all).


rule train_model:
    input:
        unpack(lambda wc: {r: model_path(r) for r in MODELS[wc.model].get("requires", [])}),
        unpack(lambda wc: {} if shipped(wc.model) else train_inputs()),
        # the CGDM decoder trains with an LPIPS loss when the LPIPS weights are there (common.smk)
        state=lambda wc: [] if shipped(wc.model) else metric_state_files(trainer_metrics(MODELS[wc.model])),
        zoo=lambda wc: zoo_files(wc.model),
    output:
        model_path("{model}"),
    log:
        "logs/train/{model}.log",
    benchmark:
        train_benchmark("{model}")
    conda:
        CONDA_ENV
    threads: lambda wc: MODELS[wc.model].get("threads", 2)
    resources:
        gpu=lambda wc: 1 if MODELS[wc.model].get("gpu") else 0,
    params:
        spec=lambda wc: json.dumps(MODELS[wc.model]),
        train_dir=train_dir(),
        requires=lambda wc, input: " ".join(
            f"--require {k}={v}" for k, v in input.items() if k not in ("train_data", "state", "zoo")
        ),
        zoo=lambda wc: f"--zoo {shipped(wc.model)}" if shipped(wc.model) else "",
        device=device(),
    shell:
        "cgdm train --name {wildcards.model} --spec {params.spec:q} --train-dir {params.train_dir}"
        " --out {output} {params.requires} {params.zoo} --device {params.device} --threads {threads} > {log} 2>&1"


# Re-trains every model that has shipped weights (needs retrain: true) and rewrites zoo/: the files and
# zoo/zoo.json with their sha256 and provenance. `snakemake train_zoo --config retrain=true`
rule train_zoo:
    input:
        models=[model_path(m) for m, e in MODELS.items() if e.get("zoo")],
        benchmarks=[train_benchmark(m) for m, e in MODELS.items() if e.get("zoo")],
    output:
        touch("resources/zoo.shipped"),
    log:
        "logs/train/train_zoo.log",
    conda:
        CONDA_ENV
    params:
        models=" ".join(m for m, e in MODELS.items() if e.get("zoo")),
        retrain="--retrained" if RETRAIN else "",
        config=lambda wc: json.dumps({m: e for m, e in MODELS.items() if e.get("zoo")}),
    shell:
        "cgdm zoo-ship {params.retrain} --models {params.config:q} {params.models} > {log} 2>&1"
