"""BD-rate through the ``bjontegaard`` package (Akima and cubic interpolation), for every metric.

BD-rate is the average rate difference (%) of a test curve against an anchor curve at equal quality,
integrated over the quality interval both curves cover (log-rate interpolated as a function of quality;
bjontegaard integrates over the overlapping interval only, never extrapolating). Negative = the test codec
needs fewer bits. Conventions and rules used here (each has a test in tests/test_bdrate.py):

* Rate is the mean bpp over images of each rate point, quality the mean metric value (CompressAI).
* Metrics where lower is better (LPIPS, DISTS, FID, KID) are negated first, so "better" is always "up".
* Refused, with the reason, when a curve has fewer than 4 points or is not monotonic (quality must
  increase with rate: BD-rate integrates rate as a function of quality).
* **Overlap rule.** ``overlap`` = length of the quality interval both curves cover / the quality range of
  the *shorter* curve (the one spanning fewer quality units). Below :data:`MIN_OVERLAP` (50 %) the
  BD-rate is refused ("refused: overlap 11 % < 50 %"): the integral would then rest on the end segments
  of the curves, not on an average over most of the measured points of either. (bjontegaard's own
  overlap, relative to the union of both ranges, is stricter for curves of different length and is not
  what decides here.)
* **Akima vs cubic.** Both are computed; when they differ by more than :data:`DISAGREE_MARGIN` (5 points
  of BD-rate) the row is flagged (``akima_cubic_diff``): the curve shape between rate points, not the
  data, decides the number, so quote it with that caveat.
* **Bootstrap.** Paired bootstrap over images (the same resampled images for anchor and test), only when
  both curves come from per-image rows. A resample is *usable* when its BD-rate is defined by the rules
  above (a resample can make a curve non-monotonic or shrink the overlap); ``n_boot`` counts the usable
  ones out of ``n_boot_drawn``. Because unusable resamples are not random (they sit where the curves are
  flat or barely overlap) they are never silently dropped:

  - all usable: percentile interval (``ci_status`` ``ok``);
  - at least :data:`MIN_USABLE` (90 %) usable: *widened* interval -- each bound is the quantile the
    full set of drawn resamples would have if every unusable one lay beyond that bound (worst case); past
    the 2.5 % tail this is the most extreme usable resample (``ci_status`` ``widened: 950/1000 usable``);
  - fewer: no interval (``ci_status`` ``refused: 887/1000 resamples usable < 90 %``); the point
    estimate stays, since it is computed on the full-sample curves.

CLI (``cgdm bd-rate``) prints Akima and cubic side by side with the overlap::

    cgdm bd-rate vtm.json bmshj2018-hyperprior.json            # CompressAI-style results files
    cgdm bd-rate jpeg hyperprior --csv results/results.csv      # codecs of a tidy CSV (+ bootstrap CI)
    cgdm bd-rate jpeg --csv results/results.csv --out bd.csv    # every codec against the anchor
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.evaluation import DATASET_IMAGE, METRIC_INFO, order_metrics
from cgdm.evaluation.realism import is_detail_metric
from cgdm.results import STATUS_OK, TIDY_COLUMNS

METHODS = ("akima", "cubic")
#: ``image`` of published rows (means over a dataset), as written by ``baselines.published``
PUBLISHED_IMAGE = "<mean>"
MIN_POINTS = 4
#: least fraction of the shorter curve's quality range that both curves must cover
MIN_OVERLAP = 0.5
#: Akima and cubic BD-rates differing by more than this many points (of %) are flagged
DISAGREE_MARGIN = 5.0
#: least fraction of usable bootstrap resamples for any interval; below 1.0 the interval is widened
MIN_USABLE = 0.9

#: CompressAI results-JSON keys -> tidy metric names
COMPRESSAI_KEYS = {"psnr-rgb": "psnr", "ms-ssim-rgb": "ms_ssim", "lpips": "lpips", "dists": "dists",
                   "fid": "fid", "kid": "kid"}

BD_COLUMNS = ["dataset", "metric", "codec", "anchor", "method", "bd_rate", "ci_low", "ci_high", "n_images",
              "n_boot", "n_boot_drawn", "ci_status", "overlap", "akima_cubic_diff", "status"]


class BDRateError(ValueError):
    """BD-rate is undefined (or refused) for these curves; the message says why, its short reason first
    (up to the first ``;``), so tables can show that part in the cell."""


def _prepare(rate, quality, lower_better: bool, name: str) -> tuple[np.ndarray, np.ndarray]:
    rate = np.asarray(rate, dtype=float)
    quality = np.asarray(quality, dtype=float)
    if rate.shape != quality.shape or rate.ndim != 1:
        raise BDRateError(f"{name}: rate and quality must be 1-D arrays of the same length")
    if len(rate) < MIN_POINTS:
        raise BDRateError(f"{name} has {len(rate)} rate points; BD-rate needs at least {MIN_POINTS}")
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(quality))):
        raise BDRateError(f"{name} has missing (NaN) points")
    if np.any(rate <= 0):
        raise BDRateError(f"{name} has a rate <= 0 (log-rate undefined)")
    order = np.argsort(rate, kind="stable")
    rate, quality = rate[order], quality[order]
    if lower_better:
        quality = -quality
    if np.any(np.diff(quality) <= 0):
        raise BDRateError(f"{name} is not monotonic; quality does not increase with rate "
                          f"({'negated ' if lower_better else ''}values {np.round(quality, 4).tolist()} at bpp "
                          f"{np.round(rate, 4).tolist()}), so BD-rate is undefined")
    return rate, quality


def overlap(quality_a, quality_b) -> float:
    """Length of the quality interval both curves cover / the quality range of the shorter curve (0..1)."""
    lo, hi = max(np.min(quality_a), np.min(quality_b)), min(np.max(quality_a), np.max(quality_b))
    shorter = min(np.ptp(quality_a), np.ptp(quality_b))
    return float(max(hi - lo, 0.0) / shorter) if shorter > 0 else 0.0


def bd_rate(anchor_rate, anchor_quality, test_rate, test_quality, method: str = "akima",
            lower_better: bool = False, names: tuple[str, str] = ("anchor", "test"),
            min_overlap: float = MIN_OVERLAP) -> float:
    """BD-rate (%) of the test curve against the anchor curve over the quality interval both cover;
    raises :class:`BDRateError` when undefined or when the curves overlap on less than ``min_overlap`` of
    the shorter curve's quality range."""
    import bjontegaard

    if method not in METHODS:
        raise BDRateError(f"unknown interpolation {method!r}; choose from {METHODS}")
    ra, qa = _prepare(anchor_rate, anchor_quality, lower_better, names[0])
    rt, qt = _prepare(test_rate, test_quality, lower_better, names[1])
    ov = overlap(qa, qt)
    ranges = f"{names[0]} [{qa.min():.4g}, {qa.max():.4g}] vs {names[1]} [{qt.min():.4g}, {qt.max():.4g}]"
    if ov <= 0:
        raise BDRateError(f"curves do not overlap in quality; {ranges}"
                          + ("  (negated: lower is better)" if lower_better else ""))
    if ov < min_overlap:
        raise BDRateError(f"overlap {100 * ov:.0f} % < {100 * min_overlap:.0f} %; the curves share "
                          f"{100 * ov:.1f} % of the shorter one's quality range ({ranges}), too little for an "
                          "average rate difference")
    with warnings.catch_warnings():
        # bjontegaard warns below 75 % of its (union) overlap; our own overlap rule applies instead.
        warnings.simplefilter("ignore")
        return float(bjontegaard.bd_rate(ra, qa, rt, qt, method=method, require_matching_points=False,
                                         min_overlap=0))


def bootstrap_interval(boots, n_drawn: int, ci: float = 0.95) -> tuple[float, float, str]:
    """(low, high, ci_status) from the usable resamples ``boots`` out of ``n_drawn`` (module docstring rule)."""
    boots = np.sort(np.asarray(boots, dtype=float))
    u, k = len(boots), n_drawn - len(boots)
    if u == 0 or u < MIN_USABLE * n_drawn:
        return np.nan, np.nan, f"refused: {u}/{n_drawn} resamples usable < {100 * MIN_USABLE:.0f} %"
    alpha = (1.0 - ci) / 2.0
    if k == 0:
        low, high = np.quantile(boots, [alpha, 1.0 - alpha])
        return float(low), float(high), STATUS_OK
    # worst case: all k unusable resamples lie beyond the bound on its side. Then the lower bound is the
    # usable sample's quantile at level (alpha * n - k) / u (clamped to its minimum), likewise the upper.
    lo_level = max(alpha * n_drawn - k, 0.0) / u
    hi_level = min((1.0 - alpha) * n_drawn / u, 1.0)
    low, high = np.quantile(boots, [lo_level, hi_level])
    return float(low), float(high), f"widened: {u}/{n_drawn} usable"


# ---------------------------------------------------------------------------------------------------
# curves from tidy rows


def _per_image(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(bpp, value) matrices image x rate from per-image ok rows; None for dataset-level rows."""
    if rows.empty or (rows["image"] == DATASET_IMAGE).all() or (rows["kind"] == "published").all():
        return None
    rows = rows[rows["status"] == STATUS_OK]
    return (rows.pivot_table(index="image", columns="rate", values="bpp", aggfunc="mean"),
            rows.pivot_table(index="image", columns="rate", values="value", aggfunc="mean"))


def _mean_curve(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    ok = rows[rows["status"] == STATUS_OK]
    pts = ok.groupby("rate")[["bpp", "value"]].mean()
    return pts["bpp"].to_numpy(), pts["value"].to_numpy()


def compare(anchor_rows: pd.DataFrame, test_rows: pd.DataFrame, method: str = "akima", n_boot: int = 1000,
            seed: int = 0, ci: float = 0.95, min_overlap: float = MIN_OVERLAP) -> dict:
    """BD-rate of two codecs' tidy rows of ONE (dataset, metric), with a paired bootstrap CI over images.

    Returns a dict with the :data:`BD_COLUMNS` that depend on the curves (``bd_rate``, ``ci_low``,
    ``ci_high``, ``n_images``, ``n_boot`` (usable resamples), ``n_boot_drawn``, ``ci_status``, ``overlap``,
    ``status``). ``overlap`` is filled even when the BD-rate is refused, as long as both curves are valid.
    """
    names = (str(anchor_rows["codec"].iloc[0]), str(test_rows["codec"].iloc[0]))
    lower = bool(test_rows["lower_better"].iloc[0])
    out = dict(bd_rate=np.nan, ci_low=np.nan, ci_high=np.nan, n_images=np.nan, n_boot=0, n_boot_drawn=0,
               ci_status="-", overlap=np.nan)
    pa, pt = _per_image(anchor_rows), _per_image(test_rows)
    paired = pa is not None and pt is not None
    if paired:
        # images with every rate point of both codecs: means over the same images on both curves
        mats = [m.dropna(axis=0, how="any") for m in (*pa, *pt)]
        common = sorted(set.intersection(*(set(m.index) for m in mats)))
        if not common:
            return dict(out, status="refused: no image has every rate point of both codecs")
        ab, av, tb, tv = (m.loc[common].to_numpy() for m in mats)
        out["n_images"] = len(common)
        curves = (ab.mean(0), av.mean(0), tb.mean(0), tv.mean(0))
    else:
        curves = (*_mean_curve(anchor_rows), *_mean_curve(test_rows))
    sign = -1.0 if lower else 1.0
    if all(len(c) for c in curves):
        out["overlap"] = overlap(sign * curves[1], sign * curves[3])
    try:
        out["bd_rate"] = bd_rate(*curves, method=method, lower_better=lower, names=names, min_overlap=min_overlap)
    except BDRateError as exc:
        return dict(out, status=f"refused: {exc}")
    if paired and n_boot > 0 and len(common) > 1:
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(common), len(common))
            try:
                boots.append(bd_rate(ab[idx].mean(0), av[idx].mean(0), tb[idx].mean(0), tv[idx].mean(0),
                                     method=method, lower_better=lower, names=names, min_overlap=min_overlap))
            except BDRateError:
                pass  # unusable resample (non-monotonic / too little overlap): counted, see bootstrap_interval
        out["n_boot"], out["n_boot_drawn"] = len(boots), n_boot
        out["ci_low"], out["ci_high"], out["ci_status"] = bootstrap_interval(boots, n_boot, ci)
    return dict(out, status=STATUS_OK)


def bd_rate_table(df: pd.DataFrame, anchor: str, metrics: list[str] | None = None,
                  methods: tuple[str, ...] = METHODS, n_boot: int = 1000, seed: int = 0,
                  codecs: list[str] | None = None, min_overlap: float = MIN_OVERLAP) -> pd.DataFrame:
    """BD-rate of every codec (or ``codecs``) against ``anchor`` for every dataset, metric and method.

    With both methods, ``akima_cubic_diff`` (Akima minus cubic, points of %) is set on both rows of a
    (dataset, metric, codec); compare its magnitude with :data:`DISAGREE_MARGIN`."""
    rows = []
    for dataset, d in df.groupby("dataset", sort=True):
        if anchor not in set(d["codec"]):
            continue
        # SWD's interval / per-level rows qualify "swd"; they get no BD-rate of their own
        for metric in order_metrics(metrics or [m for m in d["metric"].unique() if not is_detail_metric(m)]):
            m = d[d["metric"] == metric]
            a = m[m["codec"] == anchor]
            if a.empty:
                continue
            for codec in sorted(set(m["codec"]) - {anchor}) if codecs is None else codecs:
                t = m[m["codec"] == codec]
                if t.empty or codec == anchor:
                    continue
                per_method = {}
                for method in methods:
                    if not (a["status"] == STATUS_OK).any() or not (t["status"] == STATUS_OK).any():
                        bad = a if not (a["status"] == STATUS_OK).any() else t
                        res = dict(bd_rate=np.nan, ci_low=np.nan, ci_high=np.nan, n_images=np.nan, n_boot=0,
                                   n_boot_drawn=0, ci_status="-", overlap=np.nan, status=str(bad["status"].iloc[0]))
                    else:
                        res = compare(a, t, method=method, n_boot=n_boot, seed=seed, min_overlap=min_overlap)
                    per_method[method] = dict(res, dataset=dataset, metric=metric, codec=codec, anchor=anchor,
                                              method=method)
                diff = np.nan
                if {"akima", "cubic"} <= set(per_method):
                    diff = per_method["akima"]["bd_rate"] - per_method["cubic"]["bd_rate"]
                rows += [dict(r, akima_cubic_diff=diff) for r in per_method.values()]
    return pd.DataFrame(rows, columns=BD_COLUMNS)


def disagrees(diff) -> bool:
    """Whether an ``akima_cubic_diff`` exceeds :data:`DISAGREE_MARGIN`."""
    return bool(np.isfinite(diff) and abs(diff) > DISAGREE_MARGIN)


def short_reason(status: str) -> str:
    """The part of a status shown in a table cell: a refusal's short reason (up to the first ``;``)."""
    return str(status).split(";", 1)[0].strip()


# ---------------------------------------------------------------------------------------------------
# CompressAI results files


def from_compressai_json(path: str | Path, dataset: str = "", codec: str | None = None) -> pd.DataFrame:
    """Tidy rows (``kind = "published"``, ``image = "<mean>"`` as in ``baselines.published``) of a
    CompressAI-style results file
    ``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...]}}``.
    ``ms-ssim-db-rgb`` is converted to linear MS-SSIM when ``ms-ssim-rgb`` is absent."""
    path = Path(path)
    try:
        blob = json.loads(path.read_text())
        results = blob["results"]
        bpp = [float(v) for v in results["bpp"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BDRateError(f"{path}: not a CompressAI-style results file with results.bpp ({exc})") from exc
    results = dict(results)
    if "ms-ssim-rgb" not in results and "ms-ssim-db-rgb" in results:
        results["ms-ssim-rgb"] = [1.0 - 10 ** (-float(v) / 10.0) for v in results["ms-ssim-db-rgb"]]
    codec = codec or path.stem
    version = f"{blob.get('name', '')}: {blob.get('description', '')}".strip(": ")
    rows = []
    for key, metric in COMPRESSAI_KEYS.items():
        if key not in results:
            continue
        values = [float(v) for v in results[key]]
        if len(values) != len(bpp):
            raise BDRateError(f"{path}: results.{key} has {len(values)} values but results.bpp has {len(bpp)}")
        for i, (b, v) in enumerate(zip(bpp, values, strict=True)):
            rows.append(dict(dataset=dataset, image=PUBLISHED_IMAGE, codec=codec, kind="published", rate=str(i),
                             bpp=b, metric=metric, value=v, lower_better=METRIC_INFO[metric][2],
                             status=STATUS_OK, encode_s=np.nan, decode_s=np.nan, codec_version=version,
                             weights="published", device="", code_revision="", config_hash=""))
    if not rows:
        raise BDRateError(f"{path}: no known metric in results (known keys: {sorted(COMPRESSAI_KEYS)})")
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def format_table(table: pd.DataFrame) -> str:
    """Plain-text rendering of a BD-rate table for the terminal: one line per (dataset, metric, codec) with
    every method side by side, the overlap, the bootstrap's usable resamples and the disagreement flag."""
    lines = []
    for (dataset, metric, codec), g in table.groupby(["dataset", "metric", "codec"], sort=False):
        anchor = g["anchor"].iloc[0]
        head = f"{dataset + ' ' if dataset else ''}{metric:8s} {codec} vs {anchor}:"
        ok = g[g["status"] == STATUS_OK]
        if ok.empty:  # the same reason for every method (the curves, not the interpolation, are at fault)
            ov = g["overlap"].iloc[0]
            status = str(g["status"].iloc[0])
            shown = np.isfinite(ov) and "overlap" not in status
            lines.append(f"{head} {status}" + (f"  [overlap {100 * ov:.0f} %]" if shown else ""))
            continue
        parts = []
        for r in g.itertuples():
            if r.status != STATUS_OK:
                parts.append(f"{r.method} {short_reason(r.status)}")
                continue
            part = f"{r.method} {r.bd_rate:+.2f} %"
            if np.isfinite(r.ci_low):
                part += f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            if r.n_boot_drawn:
                part += f" ({int(r.n_boot)}/{int(r.n_boot_drawn)} resamples usable"
                part += f"; CI {r.ci_status})" if r.ci_status != STATUS_OK else ")"
            parts.append(part)
        line = f"{head} " + "  ".join(parts) + f"  overlap {100 * ok['overlap'].iloc[0]:.0f} %"
        diff = g["akima_cubic_diff"].iloc[0]
        if disagrees(diff):
            line += f"  ! Akima and cubic differ by {abs(diff):.1f} points (> {DISAGREE_MARGIN:g})"
        lines.append(line)
    if (table["n_boot_drawn"] > 0).any():
        lines.append("[95 % paired bootstrap interval over images]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="cgdm bd-rate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="BD-rate (%) of test curves against an anchor curve, Akima and cubic side by side "
                    "(bjontegaard), with the curves' overlap; refused below --min-overlap.",
        epilog="ANCHOR / TEST: a CompressAI-style results .json file, or a codec name of the tidy CSV given\n"
               "with --csv. Negative = fewer bits at equal quality; lower-is-better metrics are negated.\n\n"
               "examples:\n"
               "  cgdm bd-rate vtm.json bmshj2018-hyperprior.json\n"
               "  cgdm bd-rate jpeg hyperprior --csv results/results.csv\n"
               "  cgdm bd-rate jpeg --csv results/results.csv --out bd.csv   # every codec vs jpeg")
    p.add_argument("anchor", help="anchor curve")
    p.add_argument("test", nargs="*", help="test curves (default with --csv: every other codec)")
    p.add_argument("--csv", type=Path, default=None, help="tidy results CSV holding the named codecs")
    p.add_argument("--dataset", default=None, help="only this dataset of the CSV")
    p.add_argument("--metric", default=None, help="comma-separated metrics (default: all)")
    p.add_argument("--method", default="both", choices=[*METHODS, "both"])
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CI (0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-overlap", type=float, default=MIN_OVERLAP,
                   help="refuse when the curves share less than this fraction of the shorter curve's quality "
                        f"range (default {MIN_OVERLAP})")
    p.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    args = p.parse_args(argv)

    from cgdm.evaluation.tidy import TableError, read_tidy_table

    frames = []
    try:
        if args.csv is not None:
            frames.append(read_tidy_table(args.csv))
        names = []
        for spec in [args.anchor, *args.test]:
            if spec.endswith(".json"):
                frames.append(from_compressai_json(spec))
                names.append(Path(spec).stem)
            elif args.csv is None:
                p.error(f"{spec!r} is not a .json file; name codecs of a tidy CSV together with --csv")
            else:
                names.append(spec)
    except (BDRateError, TableError) as exc:
        print(f"cgdm bd-rate: {exc}", file=sys.stderr)
        return 2
    df = pd.concat(frames, ignore_index=True)
    if args.dataset:
        df = df[df["dataset"] == args.dataset]
    # JSON curves have no dataset; let them meet CSV rows of any (single) dataset
    if (df["dataset"] == "").any() and (df["dataset"] != "").any():
        datasets = sorted(set(df["dataset"]) - {""})
        if len(datasets) > 1:
            p.error(f"the CSV holds several datasets {datasets}; choose one with --dataset")
        df.loc[df["dataset"] == "", "dataset"] = datasets[0]
    missing = [n for n in names if n not in set(df["codec"])]
    if missing:
        print(f"cgdm bd-rate: codecs {missing} not found; available: {sorted(set(df['codec']))}", file=sys.stderr)
        return 2
    metrics = [m for m in args.metric.split(",") if m] if args.metric else None
    methods = METHODS if args.method == "both" else (args.method,)
    table = bd_rate_table(df, names[0], metrics=metrics, methods=methods, n_boot=args.bootstrap, seed=args.seed,
                          codecs=names[1:] or None, min_overlap=args.min_overlap)
    if table.empty:
        print("cgdm bd-rate: no metric shared by the anchor and the test curves", file=sys.stderr)
        return 2
    print(format_table(table))
    if args.out:
        from cgdm.results import write_table

        write_table(table, args.out)
    return 0 if (table["status"] == STATUS_OK).any() else 1


if __name__ == "__main__":
    sys.exit(main())
