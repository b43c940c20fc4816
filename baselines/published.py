"""Published rate-distortion results, loaded as tidy rows of a ``published`` codec kind.

The data files live in ``baselines/published_data/`` (see its ``SOURCES.md`` for source, commit,
licence, units). A config entry names one curve::

    published:
      vtm_published:   {source: compressai/kodak/vtm.json, dataset: kodak, label: "VTM (published)"}
      hific_published: {source: hific/data.csv, dataset: kodak, label: "HiFiC (published)"}
      msillm:          {source: ms-illm/results.csv, dataset: kodak, method: MS-ILLM}
      perco_diffeic:   {source: diffeic/results_kodak.csv, dataset: kodak, method: PerCo}
      nsc:             {source: neural-syntax/rd_points.dat, dataset: kodak, method: Ours}
      bpg444_tfc:      {source: "tensorflow-compression/kodak/*/bpg444.txt", dataset: kodak}

Keys: ``source`` (path under ``published_data/``; a glob joins several files, e.g. one per metric),
``dataset`` (the name written in the rows, i.e. the suite's dataset name), ``source_dataset`` (the
dataset's name inside the file when it differs, e.g. ``CLIC`` in neural-syntax; default ``dataset``),
``method`` (which method of a multi-method file), ``label`` (the codec name in the rows; default
``"<method or file name> (published)"``).

Rows follow :data:`cgdm.results.TIDY_COLUMNS`: ``image = "<mean>"`` (published values are means over the
dataset), ``kind = weights = "published"``, ``status = "ok"``, ``rate`` = the point's label in the source
when it has one (QP, quality name) else its index; timing columns are empty (the sources' timings were
measured on other hardware).

Metric names match the evaluation: ``psnr`` (RGB, dB), ``ms_ssim`` (RGB, **linear** 0..1; sources in dB
are converted with ``1 - 10^(-dB/10)``), ``lpips``, ``dists``, ``fid``, ``kid``; also ``niqe``, ``ssim``,
``fid_swav``, and ``psnr_y`` / ``ms_ssim_y`` (luma only, tensorflow-compression) which are kept apart from
the RGB metrics on purpose.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.hashing import config_hash
from cgdm.results import STATUS_OK, TIDY_COLUMNS, code_revision

DATA_DIR = Path(__file__).resolve().parent / "published_data"

#: direction of every metric the published files carry
LOWER_BETTER = {
    "psnr": False, "ms_ssim": False, "ssim": False, "psnr_y": False, "ms_ssim_y": False,
    "lpips": True, "dists": True, "fid": True, "kid": True, "fid_swav": True, "niqe": True,
}

# column / key names of the sources -> metric names of the suite ("db" = MS-SSIM in dB, to convert)
_COLUMN_METRIC = {
    "psnr": "psnr", "psnr-rgb": "psnr", "ms-ssim": "ms_ssim", "ms_ssim": "ms_ssim", "ms-ssim-rgb": "ms_ssim",
    "ms-ssim-db-rgb": ("ms_ssim", "db"), "lpips": "lpips", "dists": "dists", "fid": "fid", "kid": "kid",
    "fid_swav": "fid_swav", "niqe": "niqe", "ssim": "ssim",
}
_TFC_FOLDER_METRIC = {"PSNR_sRGB_RGB": "psnr", "PSNR_sRGB_Y": "psnr_y",
                      "MS-SSIM_sRGB_RGB": "ms_ssim", "MS-SSIM_sRGB_Y": "ms_ssim_y"}


class PublishedError(ValueError):
    """A published-curve entry that cannot be resolved; the message lists what is available."""


def ms_ssim_from_db(db):
    """MS-SSIM in dB (``-10·log10(1 - x)``) -> linear."""
    return 1.0 - np.power(10.0, -np.asarray(db, dtype=float) / 10.0)


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


# -- one parser per file format; each returns a long frame: source_dataset, method, rate, bpp, metric, value --


def _long(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source_dataset", "method", "rate", "bpp", "metric", "value", "description"])


def _parse_compressai(path: Path) -> pd.DataFrame:
    doc = json.loads(path.read_text())
    res = doc["results"]
    dataset = path.parent.name          # kodak, clic2020-mobile, clic2020-professional
    method = path.stem                  # the file name is reliable (the "name" field is not, see SOURCES.md)
    desc = doc.get("description") or doc.get("name") or method
    rows = []
    keys = [k for k in res if k in _COLUMN_METRIC]
    if "ms-ssim-rgb" in keys and "ms-ssim-db-rgb" in keys:
        keys.remove("ms-ssim-db-rgb")   # the linear values are given: no conversion needed
    for key in keys:
        metric = _COLUMN_METRIC[key]
        values = res[key]
        if isinstance(metric, tuple):
            metric, values = metric[0], ms_ssim_from_db(values)
        for i, (bpp, v) in enumerate(zip(res["bpp"], values, strict=True)):
            rows.append(dict(source_dataset=dataset, method=method, rate=i, bpp=bpp, metric=metric,
                             value=float(v), description=desc))
    return _long(rows)


def _parse_table(path: Path, method_col: str | None, point_col: str | None, fixed_method: str,
                 rate_names: list | None = None) -> pd.DataFrame:
    df = pd.read_csv(path)
    df = df.loc[:, ~df.columns.str.startswith("Unnamed")]
    rows = []
    metric_cols = [c for c in df.columns if c.lower() in _COLUMN_METRIC]
    for method, group in (df.groupby(method_col, sort=False) if method_col else [(fixed_method, df)]):
        for ds, sub in group.groupby("dataset", sort=False):
            for i, (_, r) in enumerate(sub.iterrows()):
                if pd.isna(r["bpp"]):
                    continue    # e.g. DiffEIC's "SD Encoder" row: no rate
                rate = r[point_col] if point_col else (rate_names[i] if rate_names else i)
                for c in metric_cols:
                    if pd.isna(r[c]):
                        continue  # FID/KID are not given on Kodak
                    rows.append(dict(source_dataset=ds, method=str(method), rate=rate, bpp=float(r["bpp"]),
                                     metric=_COLUMN_METRIC[c.lower()], value=float(r[c]),
                                     description=f"{method} ({path.parent.name}/{path.name})"))
    return _long(rows)


def _parse_neural_syntax(path: Path) -> pd.DataFrame:
    rows, block = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            # "# Ours+ Kodak MS-SSIM": "Ours" is the paper's own name; MSE- and MS-SSIM-optimised models
            # are different curves, so the optimised metric is part of the method name
            method, dataset, kind = line.lstrip("# ").split()
            method = f"{method.replace('Ours', 'Neural-Syntax')} {kind}"
            block, i = (method, dataset, kind), 0
        elif line:
            if block is None:
                raise ValueError(f"{path}: data line before any '# <method> <dataset> <metric>' header")
            method, dataset, kind = block
            bpp, value = (float(x) for x in line.split())
            # MSE blocks give PSNR in dB; MS-SSIM blocks give MS-SSIM in dB
            metric, value = ("psnr", value) if kind == "MSE" else ("ms_ssim", float(ms_ssim_from_db(value)))
            rows.append(dict(source_dataset=dataset, method=method, rate=i, bpp=bpp, metric=metric, value=value,
                             description=f"{method} (Wang et al., CVPR 2022; '+' = with pre/post-processing)"))
            i += 1
    return _long(rows)


def _parse_tfc(path: Path) -> pd.DataFrame:
    metric = _TFC_FOLDER_METRIC.get(path.parent.name)
    if metric is None:
        raise ValueError(f"{path}: folder {path.parent.name!r} is not one of {sorted(_TFC_FOLDER_METRIC)}")
    text = path.read_text()
    m = re.search(r'data for "(.+?)" on (\w+)', text)
    # the file name, not the header's title, names the method: the opt-MSE and opt-MS-SSIM versions of
    # a model share one title
    method, title = path.stem, (m.group(1) if m else path.stem)
    dataset = m.group(2) if m else path.parent.parent.name
    rows, i = [], 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        bpp, value = (float(x) for x in line.split(","))
        rows.append(dict(source_dataset=dataset, method=method, rate=i, bpp=bpp, metric=metric, value=value,
                         description=f"{title} (tensorflow-compression)"))
        i += 1
    return _long(rows)


def parse_file(path: str | Path) -> pd.DataFrame:
    """Parse any published file into a long frame (source_dataset, method, rate, bpp, metric, value, description)."""
    path = Path(path)
    rel = path.resolve().relative_to(DATA_DIR) if path.resolve().is_relative_to(DATA_DIR) else path
    top = rel.parts[0] if len(rel.parts) > 1 else ""
    if path.suffix == ".json":
        return _parse_compressai(path)
    if top == "hific" or path.name == "data.csv":
        # three operating points per dataset in increasing bpp: HiFiC's "lo", "mi", "hi" models
        return _parse_table(path, None, None, "HiFiC", rate_names=["lo", "mi", "hi"])
    if top == "ms-illm" or "model" in pd.read_csv(path, nrows=0).columns:
        return _parse_table(path, "model", None, "")
    if top == "diffeic" or "point" in pd.read_csv(path, nrows=0).columns:
        return _parse_table(path, "method", "point", "")
    if path.suffix == ".dat":
        return _parse_neural_syntax(path)
    if path.suffix == ".txt":
        return _parse_tfc(path)
    raise ValueError(f"{path}: unknown published file format")


def _source_files(source: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(DATA_DIR / source)))
    files = [f for f in files if f.is_file() and f.suffix in (".json", ".csv", ".dat", ".txt")]
    if not files:
        raise PublishedError(f"published source {source!r} matches no file under {DATA_DIR}; "
                             "see list_published() or baselines/published_data/SOURCES.md")
    return files


def load_published(entry: dict, name: str | None = None) -> pd.DataFrame:
    """Tidy rows (``TIDY_COLUMNS``) of one published curve; see the module docstring for ``entry``.

    The ``codec`` column is ``name`` (the curve's key in the config's ``published:`` table) when given,
    else the entry's ``label``, else ``"<method> (published)"``.
    """
    if "source" not in entry or "dataset" not in entry:
        raise PublishedError(f"published entry {entry!r} needs 'source' and 'dataset'")
    long = pd.concat([parse_file(f) for f in _source_files(entry["source"])], ignore_index=True)

    want = _norm(entry.get("source_dataset", entry["dataset"]))
    available = sorted(long["source_dataset"].unique())
    long = long[long["source_dataset"].map(_norm) == want]
    if long.empty:
        wanted = entry.get("source_dataset", entry["dataset"])
        raise PublishedError(f"{entry['source']}: no rows for dataset {wanted!r}; "
                             f"the file has {available} (set source_dataset to pick one)")
    methods = list(dict.fromkeys(long["method"]))
    if "method" in entry:
        long = long[long["method"] == str(entry["method"])]
        if long.empty:
            raise PublishedError(f"{entry['source']}: no method {entry['method']!r}; it has {methods}")
    elif len(methods) > 1:
        raise PublishedError(f"{entry['source']} holds several methods {methods}; set 'method' to one of them")

    method = str(entry.get("method", methods[0]))
    label = name or entry.get("label") or f"{method} (published)"
    desc = long["description"].iloc[0]
    return pd.DataFrame({
        "dataset": entry["dataset"],
        "image": "<mean>",
        "codec": label,
        "kind": "published",
        "rate": long["rate"].to_numpy(),
        "bpp": long["bpp"].astype(float).to_numpy(),
        "metric": long["metric"].to_numpy(),
        "value": long["value"].astype(float).to_numpy(),
        "lower_better": long["metric"].map(LOWER_BETTER).astype(bool).to_numpy(),
        "status": STATUS_OK,
        "encode_s": math.nan,
        "decode_s": math.nan,
        "codec_version": f"published: {entry['source']} ({desc})",
        "weights": "published",
        "device": "",
        "code_revision": code_revision(),
        "config_hash": config_hash(entry),
    }, columns=TIDY_COLUMNS)


def list_published(dataset: str | None = None) -> list[dict]:
    """Every curve available under ``published_data/`` (optionally for one dataset), as entries for
    :func:`load_published` (``source``, ``dataset``, ``method``, ``label``, ``metrics``)."""
    found: dict[tuple, dict] = {}
    for f in sorted(DATA_DIR.rglob("*")):
        if not f.is_file() or f.suffix not in (".json", ".csv", ".dat", ".txt"):
            continue
        long = parse_file(f)
        rel = f.relative_to(DATA_DIR)
        if rel.parts[0] == "tensorflow-compression":   # one file per metric: one entry per method
            rel = rel.parent.parent / "*" / rel.name
        for (ds, method), g in long.groupby(["source_dataset", "method"], sort=False):
            if dataset is not None and _norm(ds) != _norm(dataset):
                continue
            e = found.setdefault((rel.as_posix(), ds, method), {
                "source": rel.as_posix(), "dataset": _norm(ds), "source_dataset": ds, "method": method,
                "label": f"{method} (published)", "metrics": []})
            e["metrics"] = sorted(set(e["metrics"]) | set(g["metric"]))
    return list(found.values())


# -------------------------------------------------------------------------------------------------
# our run vs its published twin
# -------------------------------------------------------------------------------------------------


def _curve(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean (bpp, value) per rate point of one codec's ok rows for ``metric``, sorted by bpp."""
    d = df[(df["metric"] == metric) & (df["status"] == STATUS_OK)]
    return (d.groupby("rate", sort=False)[["bpp", "value"]].mean()
            .reset_index().sort_values("bpp").reset_index(drop=True))


def twin_points(ours: pd.DataFrame, published: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Per rate point of our run: our mean metric vs the published curve interpolated at our mean bpp
    (linear in log-bpp; NaN outside the published bpp range)."""
    a, b = _curve(ours, metric), _curve(published, metric)
    if a.empty or b.empty:
        raise ValueError(f"no {metric!r} rows in {'our run' if a.empty else 'the published curve'}")
    lo, hi = b["bpp"].min(), b["bpp"].max()
    inside = (a["bpp"] >= lo) & (a["bpp"] <= hi)
    interp = np.interp(np.log(a["bpp"]), np.log(b["bpp"]), b["value"])
    pub = np.where(inside, interp, np.nan)
    return pd.DataFrame({"metric": metric, "rate": a["rate"], "bpp": a["bpp"], "ours": a["value"],
                         "published": pub, "delta": a["value"] - pub})


def published_twin_diff(ours: pd.DataFrame, published: pd.DataFrame, metrics=("psnr", "ms_ssim")) -> pd.DataFrame:
    """Summary of our run of a codec against its published twin, one row per metric both have.

    Columns: ``metric``, ``points`` (our points inside the published bpp range), ``mean_delta`` (ours −
    published at equal bpp), ``bd_rate_percent`` (Bjøntegaard delta rate of ours with the published curve
    as anchor, pchip; negative = we need fewer bits), ``bd_metric`` (BD in the metric's unit).
    """
    import warnings

    from bjontegaard import bd_psnr, bd_rate

    rows = []
    for metric in metrics:
        try:
            pts = twin_points(ours, published, metric)
        except ValueError:
            continue
        a, b = _curve(ours, metric), _curve(published, metric)
        bd_r = bd_m = math.nan
        if len(a) >= 2 and len(b) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the library warns when the curves overlap little
                try:
                    bd_r = float(bd_rate(b["bpp"], b["value"], a["bpp"], a["value"], method="pchip",
                                         require_matching_points=False))
                    bd_m = float(bd_psnr(b["bpp"], b["value"], a["bpp"], a["value"], method="pchip",
                                         require_matching_points=False))
                except (ValueError, ZeroDivisionError):
                    pass  # no overlap: left NaN
        rows.append({"codec": ours["codec"].iloc[0], "published": published["codec"].iloc[0], "metric": metric,
                     "points": int(pts["delta"].notna().sum()), "mean_delta": float(pts["delta"].mean()),
                     "bd_rate_percent": bd_r, "bd_metric": bd_m})
    return pd.DataFrame(rows, columns=["codec", "published", "metric", "points", "mean_delta",
                                       "bd_rate_percent", "bd_metric"])


def main(argv: list[str] | None = None) -> int:
    """Write one published curve as a tidy CSV (workflow step), print one, or list them all."""
    from cgdm.results import write_table

    ap = argparse.ArgumentParser(prog="python -m baselines.published", description=main.__doc__)
    ap.add_argument("--entry", help="config entry as JSON ({source, dataset[, method, label, source_dataset]})")
    ap.add_argument("--name", help="the entry's name in the config (written as the codec column)")
    ap.add_argument("--out", help="CSV file to write the tidy rows to (with --entry)")
    ap.add_argument("--dataset", help="only curves of this dataset (kodak, clic2020-mobile, div2k, ...)")
    ap.add_argument("--source", help="print this source's rows (path under published_data/)")
    ap.add_argument("--method", help="method of a multi-method source")
    args = ap.parse_args(argv)
    if args.entry:
        try:
            df = load_published(json.loads(args.entry), name=args.name)
        except (PublishedError, json.JSONDecodeError) as exc:
            print(f"baselines.published: {exc}", file=sys.stderr)
            return 2
        if args.out:
            write_table(df, args.out)
        else:
            print(df.to_csv(index=False), end="")
        return 0
    if args.source:
        if not args.dataset:
            ap.error("--source needs --dataset")
        entry = {"source": args.source, "dataset": args.dataset}
        if args.method:
            entry["method"] = args.method
        print(load_published(entry).drop(columns=["code_revision", "config_hash"]).to_string(index=False))
        return 0
    for e in list_published(args.dataset):
        print(f"{e['dataset']:<22} {e['source']:<70} {e['method']:<38} {','.join(e['metrics'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
