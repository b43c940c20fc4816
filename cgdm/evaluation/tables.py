"""Paper tables from tidy rows, written as Markdown (``.md``) and LaTeX (``.tex``, booktabs).

Every number is computed here from the per-image rows (:mod:`cgdm.results`); nothing is typed in.

* ``rd_table``: per dataset, mean bpp and mean of every metric per codec and rate point (+ images used).
* ``bd_rate_table``: per dataset and metric, BD-rate (%) of every codec against the anchor, Akima and cubic
  side by side with their 95 % bootstrap intervals, their difference (flagged "!" beyond 5 points), the
  curves' overlap and the usable bootstrap resamples; refused rows give the reason in the cell
  (rules in :mod:`cgdm.evaluation.bdrate`).
* ``ablation_table``: full model vs each variant (no consistency / no SFF / no boundary control) at every
  rate point over several decode seeds, with the per-image paired difference to the full model and its
  95 % interval (:func:`ablation_seed_tables`, numbers from :func:`cgdm.evaluation.paired.paired_differences`),
  then the single-seed means of the encode run and the BD-rate of each variant against the full model.
* ``dp_curve_table``: the distortion-perception sweep (PSNR and SWD per guidance / bound point).
* ``runtime_table``: encode / decode seconds per image (mean +- std over images and rate points), device.
* ``provenance_table``: code revision, config hash, codec version, weights and device behind each codec's
  numbers.

Unavailable values print as ``n/a`` and the reasons are listed under the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.evaluation import DATASET_IMAGE, metric_label, metric_title, order_metrics
from cgdm.evaluation.bdrate import DISAGREE_MARGIN, METHODS, MIN_OVERLAP, MIN_USABLE, disagrees, short_reason
from cgdm.evaluation.tidy import rd_points, shown_metrics
from cgdm.results import STATUS_OK

NA = "n/a"
DECIMALS = {"bpp": 4, "psnr": 2, "ms_ssim": 4, "lpips": 4, "dists": 4, "nlpd": 4, "gmsd": 4, "fid": 2,
            "kid": 4, "swd": 2, "seam": 3}

#: ablation variants in table order and how they are named in the config (``<full>_<variant>``)
ABLATION_VARIANTS = ["full", "no_consistency", "no_sff", "no_boundary"]

#: what each ablation variant removes from full CGDM (cgdm.variants' ablation switches)
VARIANT_REMOVES = {
    "full": "nothing (consistency branch + SFF + global boundary control)",
    "no_consistency": "consistency branch: its features, loss, guidance and fusion (own decoder)",
    "no_sff": "syntax-driven fusion: fixed 0.5 gate, syntax unused (own decoder)",
    "no_boundary": "boundary control: separate non-overlapping tiles, own noise and conditioning each (full's weights)",
    "base": "the diffusion decoder (base codec output)",
    "online": "nothing: adds online optimisation at encode (each image's latent and syntax refined; same decoder)",
}


def fmt(value, decimals: int = 4) -> str:
    return NA if value is None or not np.isfinite(value) else f"{value:.{decimals}f}"


def sorted_rates(labels) -> list[str]:
    """Rate labels in numeric order when they are numbers ("2" before "10"), else as text."""
    labels = sorted(set(map(str, labels)))
    try:
        return sorted(labels, key=float)
    except ValueError:
        return labels


class Table:
    """A rendered table: header, string rows, caption and notes -> Markdown / LaTeX."""

    def __init__(self, frame: pd.DataFrame, caption: str, notes: list[str] | None = None):
        self.frame = frame.astype(str)
        self.caption = caption
        self.notes = list(dict.fromkeys(notes or []))

    def markdown(self) -> str:
        # tabulate (through pandas) renders the table; pipes inside cells would end a cell, so escape them
        body = self.frame.apply(lambda c: c.str.replace("|", "\\|", regex=False))
        body.columns = [str(c).replace("|", "\\|") for c in body.columns]
        text = f"**{self.caption}**\n\n" + body.to_markdown(index=False, disable_numparse=True) + "\n"
        if self.notes:
            text += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return text

    def latex(self) -> str:
        body = self.frame.map(latex_escape)
        body.columns = [latex_escape(str(c)) for c in body.columns]
        text = body.to_latex(index=False, escape=False, caption=latex_escape(self.caption),
                             column_format="l" * 1 + "r" * (body.shape[1] - 1), position="htbp")
        if self.notes:
            notes = "\\\\\n".join(latex_escape(n) for n in self.notes)
            text = text.replace("\\end{table}", "\\par\\footnotesize " + notes + "\n\\end{table}")
        return text


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "\u2191": r"$\uparrow$", "\u2193": r"$\downarrow$", "\u00b1": r"$\pm$", "\u2212": "-"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def write(tables: list[Table], out_dir: str | Path, name: str, title: str) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.tex`` holding ``tables`` (one block per dataset)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"# {title}\n\n" + ("\n".join(t.markdown() for t in tables) if tables else "No data.\n")
    tex = (f"% {title} -- generated by cgdm.evaluation.tables from the tidy results; do not edit\n"
           + ("\n".join(t.latex() for t in tables) if tables else "% no data\n"))
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.tex"]
    for path, text in zip(paths, (md, tex), strict=True):
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def _reason_notes(df: pd.DataFrame, dataset: str, metrics: list[str]) -> list[str]:
    """Why cells are n/a: per metric, the codecs without any usable row, grouped by reason."""
    d = df[df["dataset"] == dataset]
    notes = []
    for m in metrics:
        rows = d[d["metric"] == m]
        usable = set(rows.loc[rows["status"] == STATUS_OK, "codec"])
        missing = rows[~rows["codec"].isin(usable)]
        if missing.empty:
            continue
        reasons = missing.groupby("codec")["status"].agg(lambda s: s.mode().iloc[0])
        for reason, codecs in reasons.groupby(reasons):
            who = "" if not usable else " (" + ", ".join(sorted(codecs.index)) + ")"
            notes.append(f"{metric_label(m, arrow=False)}{who}: {reason}")
    return notes


def rd_tables(df: pd.DataFrame, metrics: list[str] | None = None) -> list[Table]:
    """Per dataset: codec x rate point -> mean bpp and mean metric values."""
    tables = []
    pts = rd_points(df)
    for dataset in sorted(set(df["dataset"])):
        p = pts[pts["dataset"] == dataset]
        mets = order_metrics(metrics or shown_metrics(df[df["dataset"] == dataset]))
        value = {(r.codec, r.kind, r.rate, r.metric): r.value for r in p.itertuples()}
        meta = p.groupby(["codec", "kind", "rate"]).agg(bpp=("bpp", "mean"), n=("n", "max")).reset_index()
        # measured codecs first, published ones after; rate points in bpp order
        meta = meta.assign(_published=meta["kind"] == "published").sort_values(["_published", "codec", "bpp"])
        rows = []
        for _, r in meta.iterrows():
            key = (r.codec, r.kind, r.rate)
            published = r.kind == "published" and not r.codec.endswith("(published)")
            row = {"codec": r.codec + (" (published)" if published else ""), "rate": r.rate,
                   "bpp": fmt(r.bpp, DECIMALS["bpp"])}
            for m in mets:
                # "-": the codec has no row for the metric (e.g. a published curve without it);
                # "n/a": rows exist but none is usable (reason in the notes)
                v = value.get((*key, m), None)
                row[metric_label(m)] = "-" if v is None else fmt(v, DECIMALS.get(m, 4))
                lo, hi = value.get((*key, f"{m}_ci_low")), value.get((*key, f"{m}_ci_high"))
                if v is not None and lo is not None and hi is not None and np.isfinite([v, lo, hi]).all():
                    d = DECIMALS.get(m, 4)  # a set-level metric with its bootstrap interval (SWD)
                    row[metric_label(m)] += f" [{lo:.{d}f}, {hi:.{d}f}]"
            row["images"] = str(int(r.n)) if r.kind != "published" and r.n else "-"
            rows.append(row)
        notes = _reason_notes(df, dataset, mets)
        notes.append("Means over images of per-image values (CompressAI convention); n/a = not available "
                     "(reason above), - = not reported.")
        if {"fid", "kid"} & set(mets):
            notes.append("FID/KID: one value per rate point over all FID/256 patches of the dataset (256x256 "
                         "patches + a pass shifted by 128 px); with few images (Kodak: 192 patches) FID is "
                         "unstable -- use it to spot gross changes only.")
        if "swd" in mets:
            notes.append("SWD: sliced Wasserstein distance (x1e3) between the Laplacian-pyramid 7x7 patch "
                         "descriptors of the reconstructions and of the originals (Karras et al. 2018), mean over "
                         "pyramid levels, one value per rate point [95 % bootstrap interval over images]; no "
                         "weights needed. Per-level values: rows swd_l0 (full resolution) ... of the tidy CSV.")
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: rate-distortion points", notes))
        tables += swd_level_tables(df[df["dataset"] == dataset])
    return tables


def swd_level_tables(df: pd.DataFrame) -> list[Table]:
    """Per dataset with SWD rows: codec x rate point -> SWD [interval] and its value per pyramid level."""
    out = []
    for dataset in sorted(set(df["dataset"])):
        d = df[(df["dataset"] == dataset) & (df["image"] == DATASET_IMAGE) & df["metric"].str.startswith("swd")]
        levels = sorted({int(m[5:]) for m in d["metric"] if m.startswith("swd_l")})
        if not levels:
            continue
        value = {(r.codec, r.rate, r.metric): r.value for r in d.itertuples()}
        rows = []
        for (codec, rate), g in sorted(d.groupby(["codec", "rate"]), key=lambda kv: (kv[0][0], kv[1]["bpp"].mean())):
            row = {"codec": codec, "rate": rate, "bpp": fmt(g["bpp"].mean(), DECIMALS["bpp"]),
                   "SWD (mean)": fmt(value.get((codec, rate, "swd"), np.nan), 2)}
            lo, hi = value.get((codec, rate, "swd_ci_low"), np.nan), value.get((codec, rate, "swd_ci_high"), np.nan)
            row["95 % CI"] = f"[{lo:.2f}, {hi:.2f}]" if np.isfinite([lo, hi]).all() else NA
            for k in levels:
                row[f"level {k}"] = fmt(value.get((codec, rate, f"swd_l{k}"), np.nan), 2)
            rows.append(row)
        notes = _reason_notes(df, dataset, ["swd"])
        notes.append("SWD x1e3 (lower is better) per Laplacian-pyramid level: level 0 = full resolution, each next "
                     "level half the size, the last one the low-pass residual (>= 16 px); the mean over levels "
                     "is the SWD of the RD table. Interval: paired bootstrap over images (normal, 95 %).")
        out.append(Table(pd.DataFrame(rows), f"{dataset}: SWD per pyramid level", notes))
    return out


def _bd_cell(r) -> str:
    """One method's BD-rate cell: value [CI], or the refusal's short reason, or n/a (unavailable)."""
    if r.status != STATUS_OK:
        return short_reason(r.status) if str(r.status).startswith("refused") else NA
    cell = f"{r.bd_rate:+.2f}"
    if np.isfinite(r.ci_low):
        cell += f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
    return cell


def bd_tables(bd: pd.DataFrame) -> list[Table]:
    """BD-rate blocks from :func:`cgdm.evaluation.bdrate.bd_rate_table` output, one per (dataset, metric):
    codec x (one column per interpolation side by side, their difference, overlap, usable resamples).

    Refused rows say why in the cell (``refused: overlap 11 % < 50 %``), the full reason is in the notes;
    unavailable ones show n/a with the reason in the notes."""
    tables = []
    if bd.empty:
        return tables
    for dataset, bds in bd.groupby("dataset", sort=True):
        anchor = bds["anchor"].iloc[0]
        methods = [m for m in METHODS if m in set(bds["method"])]
        both = len(methods) > 1
        for metric in order_metrics(bds["metric"].unique()):
            b = bds[bds["metric"] == metric]
            label = metric_label(metric, arrow=False)
            rows, notes, flagged = [], [], False
            for codec in sorted(set(b["codec"])):
                g = b[b["codec"] == codec].set_index("method")
                row = {"codec": codec}
                for method in methods:
                    row[f"{method} [95 % CI]"] = _bd_cell(g.loc[method]) if method in g.index else "-"
                first = g.iloc[0]
                if both:
                    diff = first.akima_cubic_diff
                    row["akima - cubic"] = "-" if not np.isfinite(diff) else f"{diff:+.2f}" + (
                        " !" if disagrees(diff) else "")
                    flagged |= disagrees(diff)
                row["overlap"] = f"{100 * first.overlap:.0f} %" if np.isfinite(first.overlap) else "-"
                usable = []
                for method in methods:
                    r = g.loc[method] if method in g.index else None
                    if r is not None and r.n_boot_drawn:
                        text = f"{int(r.n_boot)}/{int(r.n_boot_drawn)}"
                        if r.ci_status != STATUS_OK:
                            text += " (CI " + ("widened" if str(r.ci_status).startswith("widened") else "refused") + ")"
                        usable.append(text)
                row["resamples usable"] = ", ".join(dict.fromkeys(usable)) or "-"
                for status in dict.fromkeys(g["status"]):
                    if status != STATUS_OK and (short_reason(status) != status or not status.startswith("refused")):
                        notes.append(f"{codec}: {status}")
                rows.append(row)
            notes.append(f"BD-rate in % against {anchor} (negative = fewer bits at equal quality) over the quality "
                         f"interval both curves cover, {' and '.join(methods)} interpolation (bjontegaard); "
                         "[95 % paired bootstrap interval over images]. overlap = share of the shorter curve's "
                         f"quality range that both cover; below {100 * MIN_OVERLAP:.0f} % the BD-rate is refused.")
            if flagged:
                notes.append(f"! = Akima and cubic differ by more than {DISAGREE_MARGIN:g} points: the interpolation, "
                             "not the data, decides the number; quote it with that caveat.")
            if any(row["resamples usable"] != "-" for row in rows):
                notes.append("resamples usable = bootstrap resamples whose BD-rate is defined (monotonic curves, "
                             f"enough overlap); with fewer than all the interval is widened (worst case for the "
                             f"unusable ones), below {100 * MIN_USABLE:.0f} % it is refused.")
            tables.append(Table(pd.DataFrame(rows), f"{dataset}, {label}: BD-rate vs {anchor}", notes))
    return tables


def ablation_tables(df: pd.DataFrame, variants: dict[str, str], bd: pd.DataFrame | None = None,
                    metrics: list[str] | None = None) -> list[Table]:
    """Full model vs variants at every rate point. ``variants`` maps variant name -> codec name, e.g.
    ``{"full": "cgdm", "no_consistency": "cgdm_no_consistency", ...}``; a variant without rows shows n/a."""
    tables = []
    pts = rd_points(df)
    for dataset in sorted(set(df["dataset"])):
        p = pts[pts["dataset"] == dataset]
        # SWD's interval and per-level rows qualify SWD: not columns of their own (as in the RD table)
        mets = order_metrics(metrics or [m for m in p["metric"].unique() if not is_detail(m)])
        rates = sorted_rates(p[p["codec"].isin(variants.values())]["rate"])
        # encode seconds per image (online optimisation is an encoder-side variant: its cost is here)
        timed = df[(df["dataset"] == dataset) & (df["image"] != DATASET_IMAGE)]
        timed = timed.drop_duplicates(["image", "codec", "rate"])
        rows, notes = [], []
        for variant, codec in variants.items():
            c = p[p["codec"] == codec]
            if c.empty:
                notes.append(f"{variant} ({codec}): no results")
            for rate in rates:
                pr = c[c["rate"] == rate]
                enc = timed[(timed["codec"] == codec) & (timed["rate"].astype(str) == str(rate))]["encode_s"].dropna()
                row = {"variant": variant, "codec": codec, "rate": rate,
                       "bpp": fmt(pr["bpp"].mean() if len(pr) else np.nan, DECIMALS["bpp"]),
                       "encode s/image": fmt(enc.mean() if len(enc) else np.nan, 2)}
                for m in mets:
                    v = pr[pr["metric"] == m]["value"]
                    row[metric_label(m)] = fmt(v.iloc[0] if len(v) else np.nan, DECIMALS.get(m, 4))
                rows.append(row)
        notes += _reason_notes(df, dataset, mets)
        notes.append("encode s/image = wall-clock seconds of encode() per image (mean over images), as in the "
                     "runtime table.")
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: ablation, every variant at every rate point", notes))
        if bd is not None and not bd.empty:
            b = bd[(bd["dataset"] == dataset) & (bd["method"] == "akima")]
            if not b.empty:
                full = variants.get("full")
                renamed = b.assign(codec=b["codec"].map({v: k for k, v in variants.items()}).fillna(b["codec"]))
                tables += [Table(t.frame.rename(columns={"codec": "variant"}),
                                 t.caption.replace(f"BD-rate vs {full}",
                                                   f"BD-rate of each variant vs the full model ({full}, akima)"),
                                 t.notes)
                           for t in bd_tables(renamed)]
    return tables


def runtime_tables(df: pd.DataFrame) -> list[Table]:
    """Encode / decode seconds per image per codec (mean +- std over images and rate points)."""
    tables = []
    per_image = df[(df["kind"] != "published") & (df["image"] != DATASET_IMAGE)]
    per_image = per_image.drop_duplicates(["dataset", "image", "codec", "rate"])
    for dataset in sorted(set(per_image["dataset"])):
        d = per_image[per_image["dataset"] == dataset]
        rows = []
        for codec, g in d.groupby("codec", sort=True):
            enc, dec = g["encode_s"].dropna(), g["decode_s"].dropna()
            rows.append({"codec": codec, "device": ";".join(sorted(set(g["device"].dropna().astype(str)) - {""})) or NA,
                         "encode s/image": _mean_std(enc), "decode s/image": _mean_std(dec),
                         "images x rates": str(len(enc))})
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: coding time per image",
                            ["Wall-clock seconds of encode() and decode() per image, mean \u00b1 std over images "
                             "and rate points; file writing and metric computation excluded."]))
    return tables


def _mean_std(s: pd.Series) -> str:
    if s.empty:
        return NA
    return f"{s.mean():.3f} \u00b1 {s.std(ddof=0):.3f}"


def provenance_tables(df: pd.DataFrame) -> list[Table]:
    """What produced each codec's numbers (distinct values of the provenance columns)."""
    tables = []
    for dataset in sorted(set(df["dataset"])):
        d = df[df["dataset"] == dataset]
        rows = []
        for codec, g in d.groupby("codec", sort=True):
            row = {"codec": codec, "kind": _distinct(g["kind"])}
            for col in ("codec_version", "weights", "device", "code_revision", "config_hash"):
                row[col] = _distinct(g[col])
            row["rows"] = str(len(g))
            row["ok"] = str(int((g["status"] == STATUS_OK).sum()))
            rows.append(row)
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: provenance of the results",
                            ["Distinct values over all rows of the codec; every aggregated number traces to "
                             "per-image rows in results.csv carrying these columns."]))
    return tables


def _distinct(s: pd.Series) -> str:
    vals = sorted(set(s.dropna().astype(str)) - {""})
    return "; ".join(vals) if vals else "-"


def _diff_cell(r, decimals: int) -> str:
    """``+0.12 [-0.05, +0.29]`` (paired difference to the full model), ``ref`` for the full model."""
    if r is None:
        return "-"
    if r.method == "reference":
        return "ref"
    if r.status != STATUS_OK or not np.isfinite(r.diff):
        return NA
    cell = f"{r.diff:+.{decimals}f}"
    if np.isfinite(r.ci_low) and np.isfinite(r.ci_high):
        cell += f" [{r.ci_low:+.{decimals}f}, {r.ci_high:+.{decimals}f}]"
    return cell


def ablation_seed_tables(paired: pd.DataFrame, df: pd.DataFrame | None = None,
                         variants: dict[str, str] | None = None) -> list[Table]:
    """Per dataset: every variant at every rate point over the decode seeds, each metric's mean and its
    paired difference to full CGDM [95 % CI] (``paired``: :func:`cgdm.evaluation.paired.paired_differences`;
    ``df``: the study rows, for the reasons of n/a cells and the tile sizes)."""
    from cgdm.evaluation.studies import SEAM

    tables = []
    if paired.empty:
        return tables
    for dataset, p in paired.groupby("dataset", sort=True):
        shown = [m for m in order_metrics(p["metric"].unique()) if np.isfinite(p.loc[p["metric"] == m, "mean"]).any()]
        order = list(dict.fromkeys([*(variants or {}), *p["variant"]]))
        rates = sorted_rates(p["rate"])
        present = set(zip(p["variant"], p["rate"], strict=True))
        keys = [(v, r) for v in order for r in rates if (v, r) in present]
        value = {(r.variant, r.rate, r.metric): r for r in p.itertuples()}
        rows = []
        for variant, rate in keys:
            some = next((value[(variant, rate, m)] for m in shown if (variant, rate, m) in value), None)
            row = {"variant": variant, "removes": VARIANT_REMOVES.get(variant, "-"), "rate": rate,
                   "bpp": fmt(some.bpp if some is not None else np.nan, DECIMALS["bpp"]),
                   "seeds": some.seeds if some is not None and some.seeds else "-"}
            for m in shown:
                r = value.get((variant, rate, m))
                d = DECIMALS.get(m, 4)
                row[metric_label(m)] = fmt(r.mean if r is not None else np.nan, d)
                row[f"\u0394 {metric_title(m)} [95 % CI]"] = _diff_cell(r, d)
            rows.append(row)
        n_images = int(p.loc[p["metric"] != "swd", "n_images"].max()) if (p["metric"] != "swd").any() else 0
        seeds = sorted({s for x in p["seeds"] if x for s in str(x).split(",")}, key=int)
        notes = []
        if df is not None:
            notes += _reason_notes(df, dataset, [m for m in order_metrics(df["metric"].unique()) if not is_detail(m)])
        notes.append(f"Same bitstreams for every decode seed ({', '.join(seeds)}): the encoded files' decoder settings "
                     "are rewritten (cgdm.redecode), the image sections are byte-identical, so bpp does not change. "
                     f"Columns without \u0394: means over images ({n_images}) and seeds.")
        notes.append("\u0394 = variant minus full CGDM on the same images. Per-image metrics: per image, the "
                     "variant's value averaged over the seeds minus the full model's, then the mean over images "
                     "[95 % Student-t interval over images, n - 1 degrees of freedom]. SWD (one value per set): "
                     "per seed, SWD(variant) - SWD(full) on the same originals; mean over seeds [95 % normal "
                     "interval from a two-level bootstrap: the paired image bootstrap of the SWD (the same "
                     "resampled images for both) x seeds drawn with replacement; cgdm.evaluation.realism."
                     "paired_difference]. An interval that excludes 0 marks a difference the seeds and images "
                     "support.")
        if SEAM in shown:
            tiles = _tiles(df, dataset) if df is not None else {}
            probe = "; ".join(f"{v}: {t} px" for v, t in tiles.items() if v in set(p["codec"]))
            notes.append("Seam ratio = mean |pixel step| across the tile borders (every tile-size pixels, both "
                         "directions) / mean step elsewhere (cgdm.boundary.seam_metric), probed at each variant's "
                         f"own tile size{f' ({probe})' if probe else ''}; 1 = borders invisible, above 1 = "
                         "seams. Full CGDM blends evenly spread overlapping tiles whose borders lie elsewhere: its "
                         "value is the level of a seamless image at the probed lines.")
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: ablation over decode seeds, paired differences to "
                                                f"full CGDM", notes))
    return tables


def is_detail(metric: str) -> bool:
    from cgdm.evaluation.realism import is_detail_metric

    return is_detail_metric(metric)


def _tiles(df: pd.DataFrame, dataset: str) -> dict[str, str]:
    """codec -> tile size(s) of its decoded files (from the study rows' stored settings)."""
    import json

    out = {}
    d = df[df["dataset"] == dataset]
    for codec, g in d.groupby("codec", sort=False):
        tiles = sorted({str(json.loads(o).get("tile")) for o in set(g["options"]) if o})
        if tiles:
            out[codec] = "/".join(tiles)
    return out


def dp_curve_tables(points: pd.DataFrame) -> list[Table]:
    """Per dataset: every codec at every point of the distortion-perception sweep (PSNR, SWD [CI])."""
    tables = []
    for dataset, p in points.groupby("dataset", sort=True):
        rows = []
        for r in p.itertuples():
            swd = fmt(r.swd, DECIMALS["swd"])
            if np.isfinite(r.swd_ci_low) and np.isfinite(r.swd_ci_high):
                swd += f" [{r.swd_ci_low:.2f}, {r.swd_ci_high:.2f}]"
            rows.append({"variant": r.variant, "codec": r.codec, "rate": r.rate,
                         "point": "-" if r.point < 0 else str(r.point), "settings": r.label,
                         "bpp": fmt(r.bpp, DECIMALS["bpp"]), metric_label("psnr"): fmt(r.psnr, DECIMALS["psnr"]),
                         metric_label("swd"): swd, "seeds": "-" if r.variant == "base" else str(r.n_seeds),
                         "images": str(r.n_images),
                         "pixels from": "same for every point" if r.coincide else r.decoded_as})
        notes = ["Fixed bitstreams of one rate point decoded at every sweep point (cgdm.redecode rewrites only "
                 "the decoder settings): guidance = strength of the consistency guidance in [0, 1], bound = "
                 "allowed low-frequency deviation from the consistency reconstruction. PSNR: mean over images "
                 "and seeds; SWD: mean over seeds [95 % bootstrap interval over images, with one seed].",
                 "Variants without the consistency branch have no guidance: guidance and bound have no effect, "
                 "all their points decode to the same pixels (pixels from = same for every point). The base "
                 "codec (no diffusion decoder) is the reference point.",
                 "pixels from: the setting whose decode gave the pixels (encode = the encode step's own decode, "
                 "same settings)."]
        if (p["label"].str.contains("dither=", regex=False)).any():
            notes.append("dither=s: the noise-alone control, the base codec's decodes plus white Gaussian noise of "
                         "s grey levels (seeded per image; cgdm.evaluation.realism.dither). Noise carries no "
                         "information about the image, yet lowers SWD: a decoder's SWD gain is added realism "
                         "only where it beats this curve at the same PSNR.")
        tables.append(Table(pd.DataFrame(rows), f"{dataset}: distortion-perception sweep", notes))
    return tables
