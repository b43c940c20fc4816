"""Evaluation: pure functions on tidy frames (``cgdm.results``), each module with a ``main(argv)`` CLI.

* :mod:`cgdm.evaluation.weights` -- table of metric weight files (URL + sha256 + cache location),
  ``fetch`` / ``status``.
* :mod:`cgdm.evaluation.metrics` -- per-image metrics through pyiqa (PSNR, MS-SSIM, LPIPS, DISTS, ...).
* :mod:`cgdm.evaluation.fid` -- FID / KID through clean-fid on the FID/256 patch protocol, and SWD.
* :mod:`cgdm.evaluation.realism` -- sliced Wasserstein distance on Laplacian-pyramid patches (Karras et
  al. 2018), a realism measure that needs no weights.
* :mod:`cgdm.evaluation.bdrate` -- BD-rate through bjontegaard, bootstrap confidence intervals.
* :mod:`cgdm.evaluation.plots` -- RD curves (PDF + PNG), seaborn.
* :mod:`cgdm.evaluation.tables` -- RD / BD-rate / ablation / runtime / provenance tables (Markdown, LaTeX).
* :mod:`cgdm.evaluation.aggregate` -- concatenate and validate tidy CSVs.
* :mod:`cgdm.evaluation.report` -- figures + tables from the aggregated tidy CSV.
* :mod:`cgdm.evaluation.studies` -- re-decode studies (ablations over decode seeds, distortion-perception
  curve): the encoded files decoded again with other settings.
* :mod:`cgdm.evaluation.paired` -- statistics of the study tables: paired differences to full CGDM with
  confidence intervals, distortion-perception points.

Metric names used in the tidy ``metric`` column (and in published rows):
``psnr`` (RGB, dB), ``ms_ssim`` (RGB, linear), ``lpips`` (AlexNet, v0.1), ``dists``, ``nlpd``, ``gmsd``
(luma, weight-free), ``fid``, ``kid``, ``swd`` (x 1e3; with ``swd_ci_low`` / ``swd_ci_high`` and
``swd_l<k>`` per pyramid level), plus any configured no-reference pyiqa metric under its pyiqa name.
"""

#: ``image`` value of the rows of distribution metrics (FID/KID), computed over a whole dataset
DATASET_IMAGE = "<dataset>"

#: how each known metric is labelled in figures and tables (label, unit, lower_better)
METRIC_INFO = {
    "psnr": ("PSNR (RGB)", "dB", False),
    "ms_ssim": ("MS-SSIM (RGB)", "", False),
    "lpips": ("LPIPS (AlexNet)", "", True),
    "dists": ("DISTS", "", True),
    "fid": ("FID/256", "", True),
    "kid": ("KID/256", "", True),
    # weight-free: computed offline too (pyiqa's NLPD and GMSD work on luma)
    "nlpd": ("NLPD (Y)", "", True),
    "gmsd": ("GMSD (Y)", "", True),
    "swd": ("SWD", "x1e3", True),
    # tile-border visibility of a decoded image (cgdm.boundary.seam_metric; 1 = no seams), re-decode studies
    "seam": ("Seam ratio", "", True),
    # optional no-reference metrics (pyiqa) and metrics only published curves carry
    "niqe": ("NIQE", "", True),
    "musiq": ("MUSIQ", "", False),
    "clipiqa": ("CLIP-IQA", "", False),
    "ssim": ("SSIM", "", False),
    "fid_swav": ("FID-SwAV/256", "", True),
}

#: preferred order of metrics in figures and tables; others follow alphabetically
METRIC_ORDER = ["psnr", "ms_ssim", "lpips", "dists", "nlpd", "gmsd", "fid", "kid", "swd", "seam"]


def metric_label(metric: str, arrow: bool = True) -> str:
    """Human-readable metric name with unit and the better direction (for axes and table headers)."""
    label, unit, lower = METRIC_INFO.get(metric, (metric.upper(), "", None))
    text = f"{label} [{unit}]" if unit else label
    if arrow and lower is not None:
        text += " \u2193" if lower else " \u2191"  # arrow pointing to the better direction
    return text


def metric_title(metric: str) -> str:
    """Short metric name (panel titles)."""
    return METRIC_INFO.get(metric, (metric.upper(),))[0]


def order_metrics(metrics) -> list[str]:
    """Known metrics in :data:`METRIC_ORDER`, then the others alphabetically."""
    metrics = list(dict.fromkeys(metrics))
    known = [m for m in METRIC_ORDER if m in metrics]
    return known + sorted(m for m in metrics if m not in METRIC_ORDER)
