# Config validation and the helpers that list datasets, codecs, rates and models.
# The steps only wire files to the `cgdm` package's command lines; no logic lives in rules.

import json
import sys
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


# -- what the rows depend on outside the workflow --------------------------------------------------
# Metric weights, external programs (BPG, VTM) and downloaded model files are not workflow outputs, so
# Snakemake cannot see them appear, change or vanish, and rows marked `unavailable` would go stale
# (`fetch_weights` or installing BPG would leave "Nothing to be done"). Every `snakemake` call therefore
# probes them here, while the DAG is built, and writes resources/state/{metric,codec}-<name>.json
# (availability + sha256 of each file, no paths or times) *only when the content changed*; the encode and
# metric jobs take their state files as inputs, so the mtime trigger reruns exactly the jobs whose
# dependency changed. Why not `params:`: a params change is only seen through .snakemake metadata (lost
# when results are copied or the metadata is cleaned up) and would not show the state to the user; why
# not a rule: Snakemake has no rule that re-runs on every call. Probing costs well under a second
# (sha256 digests are cached by size + mtime); see cgdm/availability.py. Note: `snakemake fetch_weights
# all` probes before the fetch runs; fetch first, then run the targets.
from cgdm.availability import trainer_metrics, update_states

STATE_FILES = update_states(
    metrics=list(config["metrics"]["per_image"])
    + list(config["metrics"].get("distribution") or [])
    + [m for spec in MODELS.values() for m in trainer_metrics(spec)],
    codecs=ALL_CODECS,
)


def metric_state_files(metrics):
    """State files of the metrics that depend on weight files (none for PSNR, MS-SSIM, ...)."""
    return [STATE_FILES[f"metric:{m}"] for m in metrics if f"metric:{m}" in STATE_FILES]


def codec_state_files(codec):
    """State file of a codec's external programs / downloaded files (none for most codecs)."""
    return [STATE_FILES[f"codec:{codec}"]] if f"codec:{codec}" in STATE_FILES else []


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


# ---- The HTML report: `snakemake --report results/report.html` -------------------------------------
# The report renders files and runs nothing, and Snakemake stops at the first report-flagged file of the
# target's DAG that does not exist ("marked for report but does not exist"). So under --report the
# default target `all` asks only for what exists of its products and of the optional ones below, and
# anything missing is named on the report's "Not built yet" page with the command that builds it.
# Outside --report nothing changes: `all` builds its products and never the optional ones.

# Products outside the default target, shown by the report once they exist: path -> command building it.
# Another optional output only needs a `report(...)`-flagged rule output and a line here.
OPTIONAL_REPORT_PRODUCTS = {
    "results/ablations.pdf": "snakemake --cores 8 ablations",
    "results/tables/ablation_table.md": "snakemake --cores 8 ablations",
} if ABLATIONS else {}


def _report_only(argv):
    """`snakemake --report [FILE]` (render only), as opposed to a run or --report-after-run."""
    return any(a == "--report" or a.startswith("--report=") for a in argv) and "--report-after-run" not in argv


REPORT_ONLY = _report_only(sys.argv[1:])


def report_view(targets, command="snakemake --cores 8"):
    """Inputs of the default target: `targets` (built by `command`); under --report what exists of them
    and of OPTIONAL_REPORT_PRODUCTS, plus the "Not built yet" page when something is missing."""
    if not REPORT_ONLY:
        return list(targets)
    view = [p for p in _report_products(targets, command) if Path(p).exists()]
    if not_built_yet(targets, command):
        # absolute: the page is part of the workflow, not of the working directory (--directory)
        page = Path(workflow.basedir) / "workflow/report/not_built.svg"
        view.append(report(str(page), caption="workflow/report/not_built.rst", category="Not built yet"))
    return view


def not_built_yet(targets, command="snakemake --cores 8"):
    """[(path, command)] of the report's products that do not exist (only computed under --report)."""
    if not REPORT_ONLY:
        return []
    return [(p, c) for p, c in _report_products(targets, command).items() if not Path(p).exists()]


def _report_products(targets, command):
    """Every product the report shows: path -> the command that builds it."""
    return {**{t: command for t in targets}, **OPTIONAL_REPORT_PRODUCTS}
