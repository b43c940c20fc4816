# Config validation and the helpers that list datasets, codecs, rates and models.
# The steps only wire files to the `cgdm` package's command lines; no logic lives in rules.

import json
import sys
from pathlib import Path

from snakemake.utils import validate

from cgdm.availability import trainer_metrics, update_states
from cgdm.cli_train import MODEL_PATH, TRAIN_BENCHMARK
from cgdm.hashing import config_hash as _hash
from cgdm.zoo import CheckpointError, SHIPPED_DIR, check_shipped

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
# every metric the workflow computes (per image and per set), and the ones the BD-rate tables cover
METRICS = list(config["metrics"]["per_image"]) + list(config["metrics"].get("distribution") or [])
BD_METRICS = config.get("report", {}).get("bd_metrics") or []

for _name, _entry in ALL_CODECS.items():
    for _role, _model in (_entry.get("models") or {}).items():
        if _model not in MODELS:
            _config_error(f"codec {_name!r} uses model {_model!r} (role {_role!r}), which is not in models:")
for _name, _entry in MODELS.items():
    for _req in _entry.get("requires", []):
        if _req not in MODELS:
            _config_error(f"model {_name!r} requires {_req!r}, which is not in models:")

# Shipped weights (zoo/, cgdm/zoo.py): a model with `zoo:` is installed from the repository, unless
# `retrain: true`. Checked here, before any job runs: the weights must have been trained from this very
# entry, and a model installed from the zoo may only build on models installed from the zoo (a decoder
# trained on the shipped base is meaningless on a retrained one).
RETRAIN = config.get("retrain", False) in (True, "true")  # `--config retrain=true` gives a string


def shipped(model):
    """Name of the shipped weights the workflow installs for `model`, or None when it trains it."""
    return None if RETRAIN else MODELS[model].get("zoo")


# zoo/zoo.json, read once: the checks below and the rule inputs (zoo_files) use the same table
SHIPPED = {}
for _name, _entry in MODELS.items():
    if shipped(_name):
        try:
            SHIPPED[shipped(_name)] = check_shipped(shipped(_name), _entry)
        except CheckpointError as exc:
            _config_error(f"models.{_name}: {exc}")
        for _req in _entry.get("requires", []):
            if not shipped(_req):
                _config_error(
                    f"model {_name!r} is installed from the zoo but {_req!r}, which it requires, is "
                    "trained here; give both `zoo:` names or set retrain: true"
                )
if ABLATIONS and ABLATIONS.get("full") not in CODECS:
    _config_error(f"ablations.full = {ABLATIONS.get('full')!r} is not a codec in codecs:")
_anchor = config.get("report", {}).get("anchor")
if _anchor and _anchor not in CODECS:
    _config_error(f"report.anchor = {_anchor!r} is not a codec in codecs:")
_unmeasured = [m for m in BD_METRICS if m not in METRICS]
if _unmeasured:
    _config_error(
        f"report.bd_metrics names {_unmeasured}, which metrics.per_image / metrics.distribution do "
        f"not compute; choose from {sorted(METRICS)}"
    )
for _name, _entry in PUBLISHED.items():
    if _entry["dataset"] not in DATASETS:
        # Published curves for datasets we do not evaluate are simply not drawn.
        pass


# -- re-decode studies (workflow/rules/studies.smk): the encoded files decoded again with other decoder
# settings (cgdm.redecode), never re-encoded. `ablations`: full CGDM and every variant at every rate point
# over ablations.seeds; `dp_curve`: at dp_curve.rate, every variant at every dp_curve.points entry (guidance
# / bound) x dp_curve.seeds, plus dp_curve.base (a codec without diffusion) as the reference point.
DEFAULT_ABLATION_SEEDS = [0, 1, 2]
DEFAULT_DP_CURVE = {
    "rate": 0,
    "seeds": [0],
    "points": [{"guidance": 0.0}, {"guidance": 0.5}, {"guidance": 1.0}, {"guidance": 1.0, "bound": 0.005}],
}
ABLATION_SEEDS = [int(s) for s in (ABLATIONS.get("seeds") or DEFAULT_ABLATION_SEEDS)] if ABLATIONS else []
ABLATION_STUDY_CODECS = [ABLATIONS.get("full"), *ABLATION_CODECS] if ABLATIONS else []
DP_CURVE = {**DEFAULT_DP_CURVE, **(config.get("dp_curve") or {})} if ABLATIONS else {}
DP_BASE = DP_CURVE.get("base")
DP_CODECS = [*ABLATION_STUDY_CODECS, *([DP_BASE] if DP_BASE else [])]

if len(set(ABLATION_SEEDS)) != len(ABLATION_SEEDS):
    _config_error(f"ablations.seeds = {ABLATION_SEEDS} repeats a seed")
if config.get("dp_curve") and not ABLATIONS:
    _config_error("dp_curve needs the ablation study (ablations: full and variants): it sweeps those codecs")
if DP_CURVE:
    if DP_BASE and DP_BASE not in CODECS:
        _config_error(f"dp_curve.base = {DP_BASE!r} is not a codec in codecs:")
    for _name in DP_CODECS:
        if not 0 <= int(DP_CURVE["rate"]) < len(ALL_CODECS[_name]["rates"]):
            _config_error(
                f"dp_curve.rate = {DP_CURVE['rate']} is not a rate index of codec {_name!r} "
                f"(its rates: {ALL_CODECS[_name]['rates']}; dp_curve.rate indexes that list)"
            )
    for _i, _point in enumerate(DP_CURVE["points"]):
        if not _point or "seed" in _point:
            _config_error(
                f"dp_curve.points[{_i}] = {_point}: give decoder settings (guidance, bound, ...), "
                "not the seed (dp_curve.seeds)"
            )
    if len({json.dumps(p, sort_keys=True) for p in DP_CURVE["points"]}) != len(DP_CURVE["points"]):
        _config_error("dp_curve.points lists the same settings twice")
    if DP_CURVE.get("dither") and not DP_BASE:
        _config_error("dp_curve.dither adds noise to the base codec's decodes: set dp_curve.base too")


def study_codecs(study):
    return DP_CODECS if study == "dp_curve" else ABLATION_STUDY_CODECS


def study_rates(study, codec):
    return [str(DP_CURVE["rate"])] if study == "dp_curve" else rates(codec)


def study_metrics(study):
    """Per-image metrics of a study's decodes (the seam ratio and SWD are always computed): the configured
    ones for the ablation table; PSNR alone for the D-P curve, which draws PSNR against SWD."""
    if study == "ablations":
        return list(ABLATIONS.get("metrics") or config["metrics"]["per_image"])
    return ["psnr"]


def study_settings(study, codec):
    """What the re-decode job of (study, codec) decodes: [{name, overrides, point}] (cgdm.evaluation.studies)."""
    if study == "ablations":
        return [{"name": f"seed{s}", "overrides": {"seed": s}} for s in ABLATION_SEEDS]
    if codec == DP_BASE:
        # no decoder: the encoded files as they are, and the noise-alone control (dp_curve.dither)
        return [{"name": "as_encoded", "overrides": {}}] + [
            {"name": f"dither{i}", "point": i, "overrides": {}, "dither": float(sigma)}
            for i, sigma in enumerate(DP_CURVE.get("dither") or [], start=1)
        ]
    return [
        {"name": f"p{i}_seed{s}", "point": i, "overrides": {**point, "seed": int(s)}}
        for i, point in enumerate(DP_CURVE["points"])
        for s in DP_CURVE["seeds"]
    ]


def study_csvs(study, datasets=None):
    return [
        f"results/redecoded/{study}/{d}/{c}/{r}/metrics.csv"
        for d in (datasets or DATASETS)
        for c in study_codecs(study)
        for r in study_rates(study, c)
    ]


def bd_metrics_arg():
    """`--bd-metrics a,b` of the report steps when report.bd_metrics is set (validated above), else nothing:
    the report then computes BD-rates for every metric."""
    return f"--bd-metrics {','.join(BD_METRICS)}" if BD_METRICS else ""


def variant_args():
    """`--full CODEC --variants VARIANT=CODEC ...` of the report steps."""
    full = ABLATIONS.get("full", "")
    return f"--full {full} --variants " + " ".join(f"{k}={full}_{k}" for k in (ABLATIONS.get("variants") or {}))


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

STATE_FILES = update_states(
    metrics=METRICS + [m for spec in MODELS.values() for m in trainer_metrics(spec)],
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


# Where a model and its training benchmark go: cgdm.cli_train's paths (MODEL_PATH, TRAIN_BENCHMARK; its
# zoo-ship and zoo-extend read them there), so that the rules and the command line cannot disagree.


def model_path(model):
    return MODEL_PATH.format(model)


def train_benchmark(model):
    return TRAIN_BENCHMARK.format(model)


def zoo_files(model):
    """The shipped weights file `model` is installed from (an input: a changed file reinstalls it)."""
    name = shipped(model)
    return [str(SHIPPED_DIR / SHIPPED[name].file)] if name else []


def codec_models(codec):
    return {role: model_path(m) for role, m in (ALL_CODECS[codec].get("models") or {}).items()}


def codec_hash(codec, dataset):
    """Hash of everything that determines a codec's results on a dataset (its entry + its models)."""
    entry = ALL_CODECS[codec]
    models = {m: MODELS[m] for m in (entry.get("models") or {}).values()}
    return _hash({"codec": entry, "models": models, "dataset": DATASETS[dataset]})


def encode_csvs(codecs, datasets=None):
    return [f"results/encoded/{d}/{c}/{r}/encode.csv" for d in (datasets or DATASETS) for c in codecs for r in rates(c)]


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


def snapshot_copies(optional=False):
    """["source::destination", ...] of the reference snapshot (required ones, or the optional ones)."""
    if optional:
        return ["results/tables/bd_rate.csv::results/reference/tables/bd_rate.csv"]
    tables = ["rd_table", "bd_rate_table", "runtime_table", "provenance_table"]
    figures = [f"results/rd_curves-{d}.png" for d in DATASETS]
    if ABLATIONS:
        tables += ["ablation_table", "dp_curve_table"]
        figures += [f"results/ablations-{d}.png" for d in DATASETS] + ["results/dp_curve.png"]
    pairs = [(f, f"results/reference/{Path(f).name}") for f in figures]
    pairs += [
        (f"results/tables/{t}.{ext}", f"results/reference/tables/{t}.{ext}") for t in tables for ext in ("md", "tex")
    ]
    pairs += [(f"results/crops/{d}.png", f"results/reference/crops-{d}.png") for d in DATASETS]
    return [f"{src}::{dst}" for src, dst in pairs]


# ---- The HTML report: `snakemake --report results/report.html` -------------------------------------
# The report renders files and runs nothing, and Snakemake stops at the first report-flagged file of the
# target's DAG that does not exist ("marked for report but does not exist"). So under --report the
# default target `all` asks only for what exists of its products and of the optional ones below, and
# anything missing is named on the report's "Not built yet" page with the command that builds it.
# Outside --report nothing changes: `all` builds its products and never the optional ones.

# Products outside the default target, shown by the report once they exist: path -> command building it.
# Another optional output only needs a `report(...)`-flagged rule output and a line here.
OPTIONAL_REPORT_PRODUCTS = (
    {
        "results/ablations.pdf": "snakemake --cores 8 ablations",
        "results/tables/ablation_table.md": "snakemake --cores 8 ablations",
        "results/dp_curve.png": "snakemake --cores 8 dp_curve",
        "results/tables/dp_curve_table.md": "snakemake --cores 8 dp_curve",
    }
    if ABLATIONS
    else {}
)


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
        page = Path(workflow.basedir) / "report/not_built.svg"
        view.append(report(str(page), caption="report/not_built.rst", category="Not built yet"))
    return view


def not_built_yet(targets, command="snakemake --cores 8"):
    """[(path, command)] of the report's products that do not exist (only computed under --report)."""
    if not REPORT_ONLY:
        return []
    return [(p, c) for p, c in _report_products(targets, command).items() if not Path(p).exists()]


def _report_products(targets, command):
    """Every product the report shows: path -> the command that builds it."""
    return {**{t: command for t in targets}, **OPTIONAL_REPORT_PRODUCTS}
