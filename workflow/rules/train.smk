# Training of every model named in the config's models: table (CGDM stages, small baselines).


rule train_model:
    input:
        unpack(lambda wc: {r: model_path(r) for r in MODELS[wc.model].get("requires", [])}),
        unpack(lambda wc: train_inputs()),
        # the CGDM decoder trains with an LPIPS loss when the LPIPS weights are there (common.smk)
        state=lambda wc: metric_state_files(trainer_metrics(MODELS[wc.model])),
    output:
        "resources/models/{model}.pt",
    params:
        spec=lambda wc: json.dumps(MODELS[wc.model]),
        train_dir=train_dir(),
        requires=lambda wc, input: " ".join(
            f"--require {k}={v}" for k, v in input.items() if k not in ("train_data", "state")
        ),
        device=device(),
    threads: lambda wc: MODELS[wc.model].get("threads", 2)
    resources:
        gpu=lambda wc: 1 if MODELS[wc.model].get("gpu") else 0,
    conda:
        CONDA_ENV
    log:
        "logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    shell:
        "cgdm train-model --name {wildcards.model} --spec {params.spec:q} --train-dir {params.train_dir}"
        " --out {output} {params.requires} --device {params.device} --threads {threads} > {log} 2>&1"
