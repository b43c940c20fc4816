# Datasets: embedded Kodak is verified in place; CLIC2020 / DIV2K are downloaded, verified (sha256) and
# extracted into resources/datasets/<name>/ by cgdm.datasets (never leaving a partial folder).


rule prepare_dataset:
    output:
        f"{DATA_ROOT}/{{dataset}}/.ready",
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "results/benchmarks/data/{dataset}.tsv"
    retries: 1
    conda:
        CONDA_ENV
    params:
        root=lambda wc, output: str(Path(output[0]).parent.parent),
        mirror=lambda wc: (f"--mirror '{config['data']['mirror']}'" if config.get("data", {}).get("mirror") else ""),
    shell:
        "cgdm download {wildcards.dataset} --root {params.root} {params.mirror} --marker {output} > {log} 2>&1"
