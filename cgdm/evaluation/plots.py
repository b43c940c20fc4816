"""Rate-distortion curves from tidy rows: one PDF page per dataset, one panel per metric (bpp on x).

Every codec gets the same colour and marker on every panel and page; published curves are dashed and
labelled "(published)". A metric with no usable row in a dataset still gets its panel, showing
"unavailable: <reason>", so the gap is visible; codecs missing from an otherwise filled panel are named
under it. Sizes are chosen for print (panels about 3.2 in wide, 9-10 pt text). A PNG copy of each page is
written for the HTML report.

Drawn with matplotlib's object API (no pyplot state), styled by seaborn.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.evaluation import DATASET_IMAGE, metric_label, metric_title, order_metrics
from cgdm.evaluation.tidy import rd_points, shown_metrics, unavailable_reasons

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]
PUBLISHED_DASHES = (4, 2)
#: text sizes for print: panels are about 3.3 in wide, so 8-10 pt stays legible at column width
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8.5,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "pdf.fonttype": 42}


def _style(codecs: list[str], published: set[str]) -> dict[str, dict]:
    """Stable colour / marker / dash per codec (measured codecs first, then published)."""
    import seaborn as sns

    ordered = sorted(c for c in codecs if c not in published) + sorted(c for c in codecs if c in published)
    colors = sns.color_palette("colorblind", 10) + sns.color_palette("dark", 10) + sns.color_palette("pastel", 10)
    return {c: dict(color=colors[i % len(colors)], marker=MARKERS[i % len(MARKERS)],
                    dashes=PUBLISHED_DASHES if c in published else "")
            for i, c in enumerate(ordered)}


def _label(codec: str, labels: dict[str, str], published: set[str]) -> str:
    text = labels.get(codec, codec)
    return f"{text} (published)" if codec in published and not text.endswith("(published)") else text


def _reason_text(status: str, width: int = 42, limit: int = 320) -> str:
    text = status if status.startswith("unavailable") else f"unavailable: {status}"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return textwrap.fill(text, width)


def plot_rd(df: pd.DataFrame, pdf: str | Path, png_dir: str | Path | None = None,
            metrics: list[str] | None = None, labels: dict[str, str] | None = None,
            title: str = "") -> list[Path]:
    """Draw the RD curves of tidy rows ``df`` into ``pdf`` (one page per dataset) and PNG copies.

    Returns the PNG paths (``<png_dir>/<pdf stem>-<dataset>.png``; ``png_dir`` defaults to the PDF's folder).
    The PDF is written to a temporary name and renamed, so an interrupted job leaves no partial figure.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    if df.empty:
        raise ValueError("no rows to plot")
    pdf = Path(pdf)
    png_dir = Path(png_dir) if png_dir else pdf.parent
    pdf.parent.mkdir(parents=True, exist_ok=True)
    png_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    tmp = pdf.with_name(f".{pdf.name}.part")
    with PdfPages(tmp) as pages:
        for dataset in sorted(set(df["dataset"])):
            fig = rd_figure(df, dataset, metrics=metrics, labels=labels, title=title)
            pages.savefig(fig)
            png = png_dir / f"{pdf.stem}-{dataset}.png"
            fig.savefig(png, dpi=200)
            pngs.append(png)
    tmp.replace(pdf)
    return pngs


def rd_figure(df: pd.DataFrame, dataset: str, metrics: list[str] | None = None,
              labels: dict[str, str] | None = None, title: str = ""):
    """The figure of one dataset: a panel per metric, a shared legend below (matplotlib ``Figure``).

    Colours and markers are assigned over all codecs of ``df``, so they match across datasets.
    """
    import matplotlib
    import seaborn as sns
    from matplotlib.figure import Figure

    labels = labels or {}
    published = set(df.loc[df["kind"] == "published", "codec"])
    style = _style(sorted(set(df["codec"])), published)
    d = df[df["dataset"] == dataset]
    points = rd_points(d)
    reasons = unavailable_reasons(d)
    mets = order_metrics(metrics or shown_metrics(d))
    ncols = min(len(mets), 3)
    nrows = int(np.ceil(len(mets) / ncols))
    with sns.axes_style("whitegrid"), matplotlib.rc_context(RC):
        n_codecs = len(set(d["codec"]))
        legend_cols = 3
        legend_height = 0.25 * np.ceil(n_codecs / legend_cols) + 0.3
        # panels stay a readable size however many codecs share the legend below them
        fig = Figure(figsize=(4.4 * ncols, 3.6 * nrows + legend_height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        handles = {}
        # the grid may have more axes than metrics; the spare ones are hidden below
        for ax, metric in zip(axes, mets, strict=False):
            _panel(ax, points[points["metric"] == metric], d[d["metric"] == metric], metric,
                   reasons.get((dataset, metric)), style, labels, published, handles)
        for ax in axes[len(mets):]:
            ax.set_visible(False)
        n_images = d.loc[(d["kind"] != "published") & (d["image"] != DATASET_IMAGE), "image"].nunique()
        head = f"{title} - {dataset}" if title else dataset
        fig.suptitle(f"{head} ({n_images} images)" if n_images else head, fontsize=11)
        if handles:
            fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                       ncols=min(len(handles), legend_cols), frameon=False)
    return fig


def _panel(ax, pts: pd.DataFrame, rows: pd.DataFrame, metric: str, reason: str | None, style: dict,
           labels: dict, published: set, handles: dict) -> None:
    import seaborn as sns

    ax.set_title(metric_title(metric))
    pts = pts[np.isfinite(pts["value"].astype(float))]
    if pts.empty:
        ax.text(0.5, 0.5, _reason_text(reason or "no data"), ha="center", va="center", fontsize=8,
                color="0.3", transform=ax.transAxes, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        return
    pts = pts.assign(label=[_label(c, labels, published) for c in pts["codec"]])
    order = [c for c in style if c in set(pts["codec"])]
    hue_order = [_label(c, labels, published) for c in order]
    sns.lineplot(data=pts, x="bpp", y="value", hue="label", style="label", hue_order=hue_order,
                 style_order=hue_order, palette={_label(c, labels, published): style[c]["color"] for c in order},
                 markers={_label(c, labels, published): style[c]["marker"] for c in order},
                 dashes={_label(c, labels, published): style[c]["dashes"] for c in order},
                 estimator=None, sort=True, markersize=5, linewidth=1.3, ax=ax)
    for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
        handles.setdefault(lab, h)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set_xlabel("bpp")
    ax.set_ylabel(metric_label(metric))
    measured = pts[~pts["codec"].isin(published)]
    if not measured.empty and len(measured) < len(pts):
        # Published curves often span far more rates than were measured here: zoom on the measured range
        # so the curves under study stay readable (the published ones are clipped, not rescaled).
        xmax = 1.15 * measured["bpp"].max()
        shown = pts[pts["bpp"] <= xmax]["value"]
        pad = 0.05 * (shown.max() - shown.min() or abs(shown.max()) or 1.0)
        ax.set_xlim(0, xmax)
        ax.set_ylim(shown.min() - pad, shown.max() + pad)
    missing = sorted(set(rows["codec"]) - set(pts["codec"]))
    if missing:
        # name the codecs without a usable point (their reasons are in the tables)
        names = ", ".join(_label(c, labels, published) for c in missing)
        if len(names) > 60:
            names = f"{len(missing)} codecs"
        # inside the axes (constrained layout ignores text outside them); the tables give each reason
        ax.text(0.98, 0.03, textwrap.fill(f"n/a: {names} (unavailable, see table notes)", 48),
                transform=ax.transAxes, fontsize=6.5, color="0.35", ha="right", va="bottom")
    if metric == "ms_ssim":
        ax.yaxis.set_major_formatter("{x:.3f}")


def plot_dp_curve(points: pd.DataFrame, pdf: str | Path, png: str | Path, labels: dict[str, str] | None = None,
                  title: str = "Distortion-perception") -> list[Path]:
    """The distortion-perception sweep (``points``: :func:`cgdm.evaluation.paired.dp_points`): one panel
    per dataset, PSNR on x (better to the right), SWD on y (better down), one line per codec through its
    sweep points in order, the base codec as a star and its dithered decodes (the noise-alone control,
    ``dp_curve.dither``) as a dashed grey line from it. A codec whose points all decode to the same pixels
    (no consistency branch: guidance and bound have no effect) is drawn as one point, and says so.

    Writes ``pdf`` and ``png`` (the same figure), each atomically."""
    import matplotlib
    import seaborn as sns
    from matplotlib.figure import Figure

    if points.empty:
        raise ValueError("no distortion-perception points to plot")
    labels = labels or {}
    datasets = sorted(set(points["dataset"]))
    codecs = list(dict.fromkeys(points["codec"]))
    colors = sns.color_palette("colorblind", 10)
    with sns.axes_style("whitegrid"), matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.6 * len(datasets), 4.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)).ravel()
        handles = {}
        notes = []
        for ax, dataset in zip(axes, datasets, strict=True):
            d = points[points["dataset"] == dataset]
            swept = d[d["variant"] != "base"]
            # the rate the title states: full CGDM's (the variants that decode its bitstreams share it)
            ref_bpp = (d[d["variant"] == "full"] if (d["variant"] == "full").any() else swept)["bpp"].mean()
            for i, codec in enumerate(codecs):
                c = d[(d["codec"] == codec) & np.isfinite(d["psnr"]) & np.isfinite(d["swd"])].sort_values("point")
                if c.empty:
                    continue
                first = c.iloc[0]
                name = labels.get(codec, first["variant"] if first["variant"] != codec else codec)
                color = colors[i % len(colors)]
                if first["variant"] not in ("base", "full") and abs(c["bpp"].mean() - ref_bpp) > 5e-4:
                    name += f", {c['bpp'].mean():.3f} bpp"  # an encoder-side variant (online) has its own rate
                if first["variant"] == "base":
                    plain, dithered = c[c["point"] < 0], c[c["point"] >= 0]
                    h = ax.scatter(plain["psnr"], plain["swd"], marker="*", s=160, color="0.2", zorder=4)
                    name = name if "diffusion" in name else f"{name} (no diffusion)"
                    handles.setdefault(f"{name}, {c['bpp'].mean():.3f} bpp", h)
                    if len(dithered):
                        # the noise-alone control, from the base point through its dithered decodes
                        line = pd.concat([plain, dithered])
                        (h,) = ax.plot(line["psnr"], line["swd"], linestyle="--", marker="x", color="0.45",
                                       markersize=5, linewidth=1.0, zorder=2)
                        handles.setdefault("base codec + white noise (noise alone)", h)
                        for r in dithered.itertuples():
                            ax.annotate(r.label.replace("dither=", "\u03c3="), (r.psnr, r.swd),
                                        textcoords="offset points", xytext=(4, -9), fontsize=7, color="0.45")
                    continue
                if bool(first["coincide"]):
                    h = ax.scatter([c["psnr"].mean()], [c["swd"].mean()], marker=MARKERS[i % len(MARKERS)],
                                   s=55, color=color, edgecolor="black", zorder=3)
                    label = f"{name}: all {len(c)} points coincide"
                    handles.setdefault(label, h)
                    notes.append(f"{name}: no consistency branch, so guidance and bound have no effect; its "
                                 f"{len(c)} sweep points decode to the same image (one marker).")
                    continue
                (h,) = ax.plot(c["psnr"], c["swd"], marker=MARKERS[i % len(MARKERS)], color=color, markersize=5,
                               linewidth=1.3)
                handles.setdefault(name, h)
                ok = c[np.isfinite(c["swd_ci_low"]) & np.isfinite(c["swd_ci_high"])]
                if len(ok):
                    yerr = [ok["swd"] - ok["swd_ci_low"], ok["swd_ci_high"] - ok["swd"]]
                    ax.errorbar(ok["psnr"], ok["swd"], yerr=yerr, fmt="none", ecolor=color, elinewidth=0.8,
                                capsize=2, alpha=0.7)
                for r in c.itertuples():
                    ax.annotate(str(r.point), (r.psnr, r.swd), textcoords="offset points", xytext=(4, 3),
                                fontsize=7, color=color)
            rate = ", ".join(sorted({str(r) for r in swept["rate"]}))
            ax.set_title(f"{title}, {dataset}: rate point {rate} ({ref_bpp:.3f} bpp)")
            ax.set_xlabel(metric_label("psnr"))
            ax.set_ylabel(metric_label("swd"))
            ax.legend([handles[k] for k in handles], list(handles), loc="best", fontsize=7.5, framealpha=0.85)
        # the sweep's points (the base codec's dithered decodes are labelled on the figure itself)
        pts = points[(points["point"] >= 0) & (points["variant"] != "base")]
        pts = pts.drop_duplicates("point").sort_values("point")
        legend_text = "Sweep points: " + "; ".join(f"{r.point} = {r.label}" for r in pts.itertuples())
        width = int(100 * len(datasets))
        footer = "\n".join(textwrap.wrap(legend_text, width)
                           + [line for n in dict.fromkeys(notes) for line in textwrap.wrap(n, width)])
        # a figure-level label: the constrained layout makes room for it (plain fig.text would overlap)
        fig.supxlabel(footer, fontsize=7, color="0.3", ha="left", x=0.02, linespacing=1.3)
    written = []
    for path, fmt in ((Path(pdf), "pdf"), (Path(png), "png")):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        fig.savefig(tmp, format=fmt, dpi=200)
        tmp.replace(path)
        written.append(path)
    return written
