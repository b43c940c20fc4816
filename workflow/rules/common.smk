# Config validation and the helpers that list datasets, codecs, rates and models.
# The steps only wire files to the `cgdm` package's command lines; no logic lives in rules.

import json
from pathlib import Path

from snakemake.utils import validate

from cgdm.results import config_hash as _hash

validate(config, schema="../schemas/config.schema.yaml")


# All jobs run the same software, the project's own environment (with --use-conda; by default the
# active environment made by `make setup`).
CONDA_ENV = "../../environment.yml"


def _config_error(msg):
    raise ValueError(f"config error: {msg} (see the config section of README.md)")


CODECS = dict(config["codecs"])
ABLATIONS = config.get("ablations", {}) or {}
ABLATION_CODECS = {f"{ABLATIONS.get('full', 'cgdm')}_{v}": e for v, e in (ABLATIONS.get("variants") or {}).items()}
ALL_CODECS = {**CODECS, **ABLATION_CODECS}
MODELS = config.get("models", {}) or {}
DATASETS = config["datasets"]
PUBLISHED = config.get("published", {}) or {}
DATA_ROOT = config.get("data", {}).get("root", "resources/datasets")

for _name, _entry in ALL_CODECS.items():
    for _role, _model in (_entry.get("models") or {}).items():
        if _model not in MODELS:
            _config_error(f"codec {_name!r} uses model {_model!r} (role {_role!r}), which is not in models:")
for _name, _entry in MODELS.items():
    for _req in _entry.get("requires", []):
        if _req not in MODELS:
            _config_error(f"model {_name!r} requires {_req!r}, which is not in models:")
if ABLATIONS and ABLATIONS.get("full") not in CODECS:
    _config_error(f"ablations.full = {ABLATIONS.get('full')!r} is not a codec in codecs:")
_anchor = config.get("report", {}).get("anchor")
if _anchor and _anchor not in CODECS:
    _config_error(f"report.anchor = {_anchor!r} is not a codec in codecs:")
for _name, _entry in PUBLISHED.items():
    if _entry["dataset"] not in DATASETS:
        # Published curves for datasets we do not evaluate are simply not drawn.
        pass


def device():
    return config.get("device", "auto")


def dataset_marker(dataset):
    """Input that guarantees the dataset's images exist (empty for a local folder)."""
    if DATASETS[dataset].get("path"):
        return []
    return dataset_marker_registry(dataset)


def dataset_dir(dataset):
    """Folder holding the images of a dataset (local path, embedded copy or download)."""
    if DATASETS[dataset].get("path"):
        return DATASETS[dataset]["path"]
    from cgdm.datasets import image_dir

    # check=False: the folder that `cgdm download` fills; it need not exist while the DAG is built.
    return str(image_dir(dataset, root=DATA_ROOT, check=False))


def train_inputs():
    """Training images: a local folder (train_data) or a registry dataset (train_dataset)."""
    if config.get("train_dataset"):
        return {"train_data": dataset_marker_registry(config["train_dataset"])}
    return {}


def train_dir():
    if config.get("train_dataset"):
        from cgdm.datasets import image_dir

        return str(image_dir(config["train_dataset"], root=DATA_ROOT, check=False))
    return config["train_data"]


def dataset_marker_registry(name):
    return f"{DATA_ROOT}/{name}/.ready"


def rates(codec):
    return [str(i) for i in range(len(ALL_CODECS[codec]["rates"]))]


def model_path(model):
    return f"resources/models/{model}.pt"


def codec_models(codec):
    return {role: model_path(m) for role, m in (ALL_CODECS[codec].get("models") or {}).items()}


def codec_hash(codec, dataset):
    """Hash of everything that determines a codec's results on a dataset (its entry + its models)."""
    entry = ALL_CODECS[codec]
    models = {m: MODELS[m] for m in (entry.get("models") or {}).values()}
    return _hash({"codec": entry, "models": models, "dataset": DATASETS[dataset]})


def encode_csvs(codecs, datasets=None):
    return [
        f"results/encoded/{d}/{c}/{r}/encode.csv"
        for d in (datasets or DATASETS)
        for c in codecs
        for r in rates(c)
    ]


def metric_csvs(codecs, datasets=None):
    out = []
    for d in datasets or DATASETS:
        for c in codecs:
            for r in rates(c):
                out.append(f"results/metrics/{d}/{c}/{r}.csv")
                if config["metrics"].get("distribution"):
                    out.append(f"results/fid/{d}/{c}/{r}.csv")
    return out


def published_csvs():
    return [f"results/published/{name}.csv" for name, e in PUBLISHED.items() if e["dataset"] in DATASETS]
