"""Helpers on the suite's two tables (``cgdm.results``): reading and checking encode / tidy CSVs, building
tidy rows from encode rows, and averaging per-image rows into RD points.

RD points follow CompressAI's convention: for each (dataset, codec, rate point), bpp and every metric are
the arithmetic means of the per-image values. Published rows (``kind == "published"``) and distribution
metrics (``image == DATASET_IMAGE``) are already one value per rate point and pass through unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.results import ENCODE_COLUMNS, STATUS_OK, TIDY_COLUMNS

#: provenance columns copied from an encode row to each of its tidy rows
CARRIED = ["dataset", "image", "codec", "kind", "rate", "bpp", "encode_s", "decode_s", "codec_version",
           "weights", "device", "code_revision", "config_hash"]

KEY = ["dataset", "image", "codec", "rate", "metric"]


class TableError(ValueError):
    """A CSV that is not a valid encode / tidy table; the message names the file and the problem."""


def _read_csv(path: str | os.PathLike, required: list[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such {what} file")
    # rate labels and image names are strings ("0", "007", even "NA"), never numbers or missing values;
    # only empty fields (how to_csv writes NaN) are missing
    df = pd.read_csv(path, dtype={"rate": str, "image": str, "codec": str, "dataset": str, "status": str},
                     keep_default_na=False, na_values=[""])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TableError(f"{path}: not a {what} (missing columns {missing}; expected {required})")
    return df


def read_encode_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read an encode CSV (``ENCODE_COLUMNS``); statuses other than ``ok`` are kept as they are."""
    df = _read_csv(path, ENCODE_COLUMNS, "encode table")
    df["status"] = df["status"].fillna("unavailable: no status recorded")
    return df


def read_tidy_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy CSV (``TIDY_COLUMNS``) and check it (see :func:`validate_tidy`)."""
    df = _read_csv(path, TIDY_COLUMNS, "tidy results table")
    return validate_tidy(df, source=str(path))


def validate_tidy(df: pd.DataFrame, source: str = "table", key: list[str] | None = None) -> pd.DataFrame:
    """Check the invariants every table and figure relies on; return the frame with typed columns.

    * all ``TIDY_COLUMNS`` present; ``value`` numeric;
    * ``status == "ok"`` exactly when ``value`` is a finite number;
    * one row per ``key`` (default :data:`KEY`: dataset, image, codec, rate, metric; tables of several
      decoder settings per rate point add their ``setting``, :mod:`cgdm.evaluation.studies`).
    """
    key = list(key or KEY)
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise TableError(f"{source}: missing columns {missing}")
    df = df.copy()
    for col in ("dataset", "image", "codec", "kind", "rate", "metric", "status"):
        df[col] = df[col].astype("string").fillna("")
    for col in ("value", "bpp", "encode_s", "decode_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["lower_better"] = df["lower_better"].map(_as_bool)
    ok = df["status"] == STATUS_OK
    bad = ok & ~np.isfinite(df["value"])
    if bad.any():
        r = df[bad].iloc[0]
        raise TableError(f"{source}: {int(bad.sum())} rows have status 'ok' but no finite value "
                         f"(first: {r.codec} {r.rate} {r.image} {r.metric})")
    bad = ~ok & df["value"].notna()
    if bad.any():
        r = df[bad].iloc[0]
        raise TableError(f"{source}: {int(bad.sum())} rows carry a value although their status is not 'ok' "
                         f"(first: {r.codec} {r.rate} {r.image} {r.metric}: {r.status!r})")
    dup = df.duplicated(key, keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise TableError(f"{source}: {int(dup.sum())} duplicated rows for ({', '.join(key)}), "
                         f"first: {' '.join(str(r[k]) for k in key)}; was an input given twice?")
    return df


def _as_bool(v):
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return False
    return bool(v)


def tidy_rows(encode_row: dict, values: dict[str, tuple[float, str]], lower_better: dict[str, bool]) -> list[dict]:
    """Tidy rows of one encode row: ``values`` maps metric -> (value, status)."""
    base = {c: encode_row.get(c) for c in CARRIED}
    rows = []
    for metric, (value, status) in values.items():
        value = float(value) if status == STATUS_OK else np.nan
        rows.append(dict(base, metric=metric, value=value, lower_better=bool(lower_better[metric]), status=status))
    return rows


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def rd_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, codec, kind, rate, metric) with mean ``bpp`` and ``value`` over images.

    Only rows with status ``ok`` enter the means; ``n`` counts them and ``n_total`` counts all rows, so a
    point computed from fewer images than the others is visible. Rates are ordered by mean bpp.
    """
    if df.empty:
        return pd.DataFrame(columns=["dataset", "codec", "kind", "rate", "metric", "bpp", "value",
                                     "lower_better", "n", "n_total"])
    g = df.assign(_ok=df["status"] == STATUS_OK).groupby(["dataset", "codec", "kind", "rate", "metric"],
                                                         sort=False, dropna=False)
    out = g.apply(_mean_point, include_groups=False).reset_index()
    return out.sort_values(["dataset", "metric", "codec", "bpp"], kind="stable").reset_index(drop=True)


def _mean_point(group: pd.DataFrame) -> pd.Series:
    ok = group[group["_ok"]]
    return pd.Series({
        "bpp": ok["bpp"].mean() if len(ok) else group["bpp"].mean(),
        "value": ok["value"].mean() if len(ok) else np.nan,
        "lower_better": bool(group["lower_better"].iloc[0]),
        "n": len(ok),
        "n_total": len(group),
    })


def join_values(values: pd.Series) -> str:
    """The distinct non-empty values of a column, ``;``-joined (provenance of a set-level row)."""
    return ";".join(str(v) for v in pd.unique(values.dropna()) if str(v) != "")


def set_row(dataset: str, codec: str, rate, g: pd.DataFrame, image: str) -> dict:
    """Fields of one set-level row (FID, KID, SWD: one value per dataset x codec x rate) from the encode
    rows ``g`` of that set: mean bpp and times over the images that coded, joined provenance."""
    ok = g[g["status"] == STATUS_OK]
    means = {c: ok[c].mean() if len(ok) else np.nan for c in ("bpp", "encode_s", "decode_s")}
    return dict(dataset=dataset, image=image, codec=codec, kind=join_values(g["kind"]), rate=rate, **means,
                **{c: join_values(g[c]) for c in ("codec_version", "weights", "device", "code_revision",
                                                   "config_hash")})


def unavailable_reasons(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(dataset, metric) -> reason, for metrics with no usable row at all in a dataset."""
    out = {}
    for (dataset, metric), g in df.groupby(["dataset", "metric"], sort=False):
        if not (g["status"] == STATUS_OK).any():
            out[(dataset, metric)] = g["status"].mode().iloc[0]
    return out


def shown_metrics(df: pd.DataFrame) -> list[str]:
    """Metrics to show for the rows of one dataset: those measured here (rows that are not published
    curves), so metrics only a published source carries (NIQE, luma PSNR, ...) do not add panels and
    columns; all metrics when there are only published rows. Rows that qualify another metric (SWD's
    interval and per-level values) are left out: they are shown with it, not as panels of their own."""
    from cgdm.evaluation.realism import is_detail_metric

    measured = df[df["kind"] != "published"]
    return [m for m in dict.fromkeys((measured if len(measured) else df)["metric"]) if not is_detail_metric(m)]
