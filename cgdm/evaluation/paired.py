"""Statistics of the re-decode study tables (:mod:`cgdm.evaluation.studies`): what the report and the
tables show of them.

* Ablations over decode seeds: per dataset, variant, rate point and metric, the mean and the paired
  difference to full CGDM with its confidence interval (:func:`paired_differences`, rows with
  :data:`PAIRED_COLUMNS`). Per-image metrics (incl. ``seam``): the variant's value averaged over the
  seeds both codecs have, minus full's, per image; the difference is the mean over images with a
  Student-t interval over images (:func:`t_interval`, ``method = t``). SWD (one value per set and seed):
  :func:`cgdm.evaluation.realism.paired_difference` of the per-seed values and their paired image
  bootstrap (the ``bootstrap`` column of the study's ``swd`` rows), resampling seeds too
  (``method = bootstrap``). The full model's rows are the reference (``method = reference``).
* Distortion-perception curve: one point per (dataset, codec, sweep point) with PSNR (mean over images
  and seeds), SWD (mean over seeds; its interval when there is one seed) and the stored settings
  (:func:`dp_points`, rows with :data:`DP_COLUMNS`), flagging codecs whose points all decode to the same
  pixels (settings without effect, e.g. guidance without the consistency branch).

Input: study rows (:data:`cgdm.evaluation.studies.STUDY_TIDY_COLUMNS`), as read by
:func:`cgdm.evaluation.studies.read_study_table`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats

from cgdm.evaluation import DATASET_IMAGE, order_metrics, realism
from cgdm.evaluation.tidy import join_values
from cgdm.results import STATUS_OK, unavailable

#: confidence level of every interval here (the tables label them "95 % CI")
CI = 0.95


# ---------------------------------------------------------------------------------------------------
# ablations over decode seeds: paired differences to full CGDM
# ---------------------------------------------------------------------------------------------------
PAIRED_COLUMNS = ["dataset", "variant", "codec", "rate", "metric", "bpp", "mean", "diff", "ci_low", "ci_high",
                  "n_images", "n_seeds", "seeds", "method", "status"]


def t_interval(d: np.ndarray, ci: float = CI) -> tuple[float, float, float]:
    """Mean of ``d`` and its ``ci`` Student-t interval (n - 1 degrees of freedom); NaN bounds for n < 2."""
    d = np.asarray(d, dtype=np.float64)
    mean = float(d.mean()) if len(d) else np.nan
    if len(d) < 2:
        return mean, np.nan, np.nan
    half = float(stats.t.ppf(0.5 + ci / 2.0, len(d) - 1)) * float(d.std(ddof=1)) / np.sqrt(len(d))
    return mean, mean - half, mean + half


def _per_image(df: pd.DataFrame) -> pd.DataFrame:
    # one value per image: set-level rows (SWD, image = <dataset>) are per set, failed rows carry no value
    return df[(df["image"] != DATASET_IMAGE) & (df["status"] == STATUS_OK)]


def _seed_list(seeds) -> str:
    return ",".join(str(int(s)) for s in sorted(seeds))


def paired_differences(df: pd.DataFrame, variants: dict[str, str], ci: float = CI) -> pd.DataFrame:
    """Per dataset, variant, rate point and metric: the mean and the paired difference to full CGDM.

    ``df``: study rows (:data:`cgdm.evaluation.studies.STUDY_TIDY_COLUMNS`) of the seeds study;
    ``variants``: variant -> codec, with a ``full`` entry. Per-image metrics (incl. ``seam``): the variant's
    value averaged over the seeds both codecs have, minus full's, per image (images both have for each of
    those seeds); ``diff`` is the mean over images with a Student-t interval over images (``method = t``).
    SWD (one value per set and seed): :func:`realism.paired_difference` of the per-seed values and their
    paired image bootstrap, resampling seeds too (``method = bootstrap``). ``mean``: the variant's mean
    over images and seeds (SWD: over seeds). The full model's rows have ``method = reference`` and no
    difference.
    """
    if "full" not in variants:
        raise ValueError("paired differences need the full model: a 'full' entry in variants")
    out = []
    for dataset in sorted(set(df["dataset"])):
        d = df[df["dataset"] == dataset]
        pi = _per_image(d)
        per_image_metrics = [m for m in order_metrics(pi["metric"].unique())]
        rates = sorted(set(d.loc[d["codec"].isin(variants.values()), "rate"]), key=_rate_key)
        full = variants["full"]
        for variant, codec in variants.items():
            for rate in rates:
                c = d[(d["codec"] == codec) & (d["rate"] == rate)]
                f = d[(d["codec"] == full) & (d["rate"] == rate)]
                bpp = _per_image(c).drop_duplicates(["image", "setting"])["bpp"].mean()
                for metric in per_image_metrics:
                    out.append(dict(dataset=dataset, variant=variant, codec=codec, rate=rate, metric=metric,
                                    bpp=bpp, **_paired_image(c, f, metric, variant == "full", ci)))
                if (d["metric"] == realism.SWD).any():
                    out.append(dict(dataset=dataset, variant=variant, codec=codec, rate=rate, metric=realism.SWD,
                                    bpp=bpp, **_paired_swd(c, f, variant == "full", ci)))
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def _rate_key(rate):
    try:
        return (0, float(rate), str(rate))
    except ValueError:
        return (1, 0.0, str(rate))


def _paired_image(c: pd.DataFrame, f: pd.DataFrame, metric: str, is_full: bool, ci: float) -> dict:
    v = _per_image(c[c["metric"] == metric]).pivot_table(index="image", columns="seed", values="value")
    res = dict(mean=float(np.nanmean(v.to_numpy())) if v.size else np.nan, diff=np.nan, ci_low=np.nan,
               ci_high=np.nan, n_images=int(len(v)), n_seeds=int(v.shape[1]), seeds=_seed_list(v.columns))
    if v.empty:
        return dict(res, method="", status=_status(c, metric))
    if is_full:
        return dict(res, method="reference", status=STATUS_OK)
    r = _per_image(f[f["metric"] == metric]).pivot_table(index="image", columns="seed", values="value")
    seeds = sorted(set(v.columns) & set(r.columns))
    if not seeds:
        return dict(res, method="t", status=unavailable(f"no {metric} of the full model for the same seeds"))
    a, b = v[seeds], r[seeds]
    images = sorted(set(a.dropna().index) & set(b.dropna().index))
    if not images:
        return dict(res, method="t", status=unavailable(f"no image has {metric} for both codecs"))
    d = a.loc[images].mean(axis=1).to_numpy() - b.loc[images].mean(axis=1).to_numpy()
    diff, lo, hi = t_interval(d, ci)
    return dict(res, diff=diff, ci_low=lo, ci_high=hi, n_images=len(images), n_seeds=len(seeds),
                seeds=_seed_list(seeds), method="t", status=STATUS_OK)


def _status(rows: pd.DataFrame, metric: str) -> str:
    s = rows.loc[rows["metric"] == metric, "status"]
    return s.mode().iloc[0] if len(s) else "unavailable: no rows"


def _swd_by_seed(rows: pd.DataFrame) -> dict:
    s = rows[(rows["metric"] == realism.SWD) & (rows["status"] == STATUS_OK)]
    return {int(r.seed): (float(r.value), np.asarray(json.loads(r.bootstrap) if r.bootstrap else [], dtype=float))
            for r in s.itertuples() if np.isfinite(r.seed)}


def _images(rows: pd.DataFrame) -> dict:
    """seed -> sorted images of the seed's SWD set (the images with per-image rows)."""
    pi = rows[rows["image"] != DATASET_IMAGE]
    return {int(s): tuple(sorted(set(g["image"]))) for s, g in pi.groupby("seed")}


def _paired_swd(c: pd.DataFrame, f: pd.DataFrame, is_full: bool, ci: float) -> dict:
    a = _swd_by_seed(c)
    res = dict(mean=float(np.mean([v for v, _ in a.values()])) if a else np.nan, diff=np.nan, ci_low=np.nan,
               ci_high=np.nan, n_images=len(next(iter(_images(c).values()), ())), n_seeds=len(a),
               seeds=_seed_list(a))
    if not a:
        return dict(res, method="", status=_status(c, realism.SWD))
    if is_full:
        return dict(res, method="reference", status=STATUS_OK)
    b = _swd_by_seed(f)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return dict(res, method="bootstrap", status=unavailable("no SWD of the full model for the same seeds"))
    ia, ib = _images(c), _images(f)
    if any(ia.get(s) != ib.get(s) for s in seeds):
        return dict(res, method="bootstrap", status=unavailable("SWD sets of different images: not paired"))
    diff, lo, hi = realism.paired_difference([a[s][0] for s in seeds], [a[s][1] for s in seeds],
                                             [b[s][0] for s in seeds], [b[s][1] for s in seeds], ci=ci)
    return dict(res, diff=diff, ci_low=lo, ci_high=hi, n_seeds=len(seeds), seeds=_seed_list(seeds),
                method="bootstrap", status=STATUS_OK)


# ---------------------------------------------------------------------------------------------------
# distortion-perception curve
# ---------------------------------------------------------------------------------------------------
DP_COLUMNS = ["dataset", "variant", "codec", "rate", "point", "label", "overrides", "options", "bpp", "psnr", "swd",
              "swd_ci_low", "swd_ci_high", "n_images", "n_seeds", "decoded_as", "coincide"]


def point_label(overrides: str) -> str:
    """``guidance=0.5, bound=0.005`` from a setting's overrides (the seed left out)."""
    o = json.loads(overrides) if overrides else {}
    o.pop("seed", None)
    first = [k for k in ("guidance", "bound") if k in o]
    return ", ".join(f"{k}={o[k]}" for k in [*first, *sorted(set(o) - set(first))]) or "as encoded"


def dp_points(df: pd.DataFrame, variants: dict[str, str], base: str | None = None) -> pd.DataFrame:
    """One row per (dataset, codec, point) of the D-P study: PSNR (mean over images and seeds), SWD (mean
    over seeds; its interval when there is one seed), the stored settings, and ``coincide``: True when
    every point of the codec decodes to the same pixels (settings without effect, e.g. guidance without
    the consistency branch). ``base``: the reference codec (one point, ``variant = base``)."""
    roles = {**{c: v for v, c in variants.items()}, **({base: "base"} if base else {})}
    out = []
    for (dataset, codec), g in df[df["codec"].isin(roles)].groupby(["dataset", "codec"], sort=False):
        by_point = g.assign(point=g["point"].fillna(-1)).groupby("point", sort=True)
        sources = {}
        for point, p in by_point:
            sources[point] = {(s, join_values(q["decoded_as"])) for s, q in p[p["image"] != DATASET_IMAGE]
                              .groupby("seed", dropna=False)}
        coincide = len(sources) > 1 and len({frozenset(s) for s in sources.values()}) == 1
        for point, p in by_point:
            psnr = _per_image(p[p["metric"] == "psnr"])
            swd = p[(p["metric"] == realism.SWD) & (p["status"] == STATUS_OK)]
            lo = p[(p["metric"] == realism.SWD_CI[0]) & (p["status"] == STATUS_OK)]["value"]
            hi = p[(p["metric"] == realism.SWD_CI[1]) & (p["status"] == STATUS_OK)]["value"]
            one = len(swd) == 1
            first = p.iloc[0]
            out.append(dict(dataset=dataset, variant=roles[codec], codec=codec, rate=first["rate"],
                            point=int(point), label=point_label(first["overrides"]),
                            overrides=first["overrides"], options=first["options"],
                            bpp=_per_image(p).drop_duplicates(["image", "setting"])["bpp"].mean(),
                            psnr=psnr["value"].mean() if len(psnr) else np.nan,
                            swd=swd["value"].mean() if len(swd) else np.nan,
                            swd_ci_low=lo.iloc[0] if one and len(lo) else np.nan,
                            swd_ci_high=hi.iloc[0] if one and len(hi) else np.nan,
                            n_images=psnr["image"].nunique(), n_seeds=p["seed"].nunique(),
                            decoded_as=join_values(p.loc[p["image"] != DATASET_IMAGE, "decoded_as"]),
                            coincide=coincide))
    order = {v: i for i, v in enumerate([*variants, "base"])}
    frame = pd.DataFrame(out, columns=DP_COLUMNS)
    return (frame.assign(_o=frame["variant"].map(order)).sort_values(["dataset", "_o", "point"], kind="stable")
                 .drop(columns="_o").reset_index(drop=True))
