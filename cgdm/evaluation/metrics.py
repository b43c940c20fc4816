"""Per-image metrics through pyiqa, one tidy row per (image, metric).

Metrics and how they are configured (each pyiqa metric object is created once per job):

=========  ===============================================================================================
psnr       pyiqa ``psnr`` on RGB (``test_y_channel=False``), 8-bit images scaled to [0, 1] so the peak is
           255 in 8-bit units: one MSE over the three R'G'B' channels, as CompressAI's ``psnr-rgb``.
           Identical images give 80 dB (pyiqa's epsilon) instead of infinity.
ms_ssim    pyiqa's MS-SSIM on RGB (pyiqa's default is luma only), data range 255, evaluated in float32
           (:class:`MSSSIM`); matches ``pytorch_msssim.ms_ssim`` (CompressAI's ``ms-ssim-rgb``) and
           pyiqa's float64 module to better than 1e-5. Needs at least 161 px per side (5 scales, 11-tap
           window); smaller images get ``unavailable`` rows.
lpips      pyiqa ``lpips`` (AlexNet, v0.1), weights from :mod:`cgdm.weights`.
dists      pyiqa ``dists`` (VGG16), weights from :mod:`cgdm.weights`.
nlpd       pyiqa ``nlpd`` (normalised Laplacian pyramid distance, Laparra et al. 2016; luma), lower is
           better. No weights: its filters are fixed, so it is there offline.
gmsd       pyiqa ``gmsd`` (gradient magnitude similarity deviation, Xue et al. 2014; luma), lower is better.
           No weights. NLPD and GMSD were chosen among pyiqa's weight-free full-reference metrics by cost
           (benchmarks/results/metrics.json: FSIM, VIF and CW-SSIM take 3-11x NLPD's CPU time, MAD far more) and
           because both respond to what perceptual codecs trade (lost detail and structure, not only MSE).
other      any pyiqa no-reference metric (``niqe``, ``musiq``, ``clipiqa``, ...), computed on the
           reconstruction only, with pyiqa's own weight files (not sha256-checked here).
=========  ===============================================================================================

No metric ever downloads: LPIPS / DISTS files are checked (present + sha256) before pyiqa builds the
network, and every download function pyiqa / torchvision could reach is replaced by one that fails while
the metrics are built (:func:`no_downloads`). A metric that cannot be built yields rows with
``status = "unavailable: <reason and how to fetch>"`` and value NaN; the other metrics go on.

CLI (a workflow step)::

    python -m cgdm.evaluation.metrics --encode-csv encode.csv --out metrics.csv \\
        --metrics psnr,ms_ssim,lpips,dists [--device cpu] [--cache DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgdm import weights as W
from cgdm.evaluation.tidy import read_encode_table, tidy_rows, to_frame
from cgdm.imageio import load_image
from cgdm.results import STATUS_OK, unavailable, write_table
from cgdm.weights import DownloadBlocked, no_downloads, torch_home

DEFAULT_METRICS = ["psnr", "ms_ssim", "lpips", "dists"]

#: pyiqa options of the metrics configured here (everything else: pyiqa defaults)
PYIQA_OPTIONS = {
    "psnr": {"test_y_channel": False},
    "lpips": {},
    "dists": {},
}

#: pyiqa option naming the file of the metric's own (non-backbone) weights
PRETRAINED_FILE = {"lpips": "lpips_alex_v0.1", "dists": "dists"}

#: smallest side MS-SSIM accepts: 5 scales (4 halvings) of an 11-tap valid filter
MS_SSIM_MIN_SIDE = 161


class MSSSIM:
    """pyiqa's MS-SSIM (its RGB preprocessing and ``ms_ssim`` function, product form, no downsampling,
    data range 255) evaluated in float32.

    pyiqa's ``MS_SSIM`` module casts its inputs to float64, which makes it about 20x slower on CPU (3.4 s
    instead of 0.17 s per Kodak image on one core) for differences below 1e-5 -- below the 4 decimals
    MS-SSIM is reported with. ``lower_better`` etc. still come from pyiqa's ``ms_ssim`` entry.
    """

    def __init__(self, device: str = "cpu"):
        from pyiqa.archs.func_util import preprocess_rgb  # lazy: pyiqa is slow to import (torch)
        from pyiqa.archs.ssim_arch import ms_ssim

        self._preprocess, self._ms_ssim, self.device = preprocess_rgb, ms_ssim, device

    def __call__(self, x, ref):
        x = self._preprocess(x, test_y_channel=False, data_range=255)
        ref = self._preprocess(ref, test_y_channel=False, data_range=255)
        return self._ms_ssim(x, ref, data_range=255, downsample=False, is_prod=True)


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch  # lazy: torch takes seconds to import; only this path needs it

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def known_metrics() -> list[str]:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS  # lazy: pyiqa is slow to import (torch)

    return sorted(DEFAULT_CONFIGS)


def lower_better(metric: str) -> bool:
    """pyiqa's ``lower_better`` flag of a metric (without building it)."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS  # lazy: pyiqa is slow to import (torch)

    return bool(DEFAULT_CONFIGS[metric].get("lower_better", False))


def metric_mode(metric: str) -> str:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS  # lazy: pyiqa is slow to import (torch)

    return DEFAULT_CONFIGS[metric].get("metric_mode", "FR")


class ImageMetrics:
    """The metric objects of one job. ``unavailable`` maps metric -> reason for those that cannot run."""

    def __init__(self, names: list[str], device: str = "cpu", cache: str | os.PathLike | None = None):
        import pyiqa  # lazy: pyiqa is slow to import (torch)

        unknown = [n for n in names if n not in known_metrics()]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; use pyiqa metric names such as {DEFAULT_METRICS} "
                             "(list: python -c 'import pyiqa; print(pyiqa.list_models())')")
        self.names = list(dict.fromkeys(names))
        self.device = resolve_device(device)
        self.cache = Path(cache) if cache else W.default_cache()
        self.lower_better = {n: lower_better(n) for n in self.names}
        self.mode = {n: metric_mode(n) for n in self.names}
        self.metrics, self.unavailable = {}, {}
        for name in self.names:
            ok, reason = W.status(name, self.cache)
            if not ok:
                self.unavailable[name] = reason
            elif name == "ms_ssim":
                self.metrics[name] = MSSSIM(self.device)
            else:
                opts = dict(PYIQA_OPTIONS.get(name, {}))
                if name in PRETRAINED_FILE:  # explicit file: pyiqa must not look anywhere else
                    opts["pretrained_model_path"] = str(W.WEIGHTS[PRETRAINED_FILE[name]].path(self.cache))
                try:
                    with torch_home(self.cache), no_downloads():
                        self.metrics[name] = pyiqa.create_metric(name, device=self.device, **opts)
                except DownloadBlocked as exc:
                    self.unavailable[name] = (f"{name} weights not in the cache ({exc}); run once with network "
                                              "access or place the file there by hand")
                except ImportError as exc:  # optional no-reference metrics may need extra packages
                    self.unavailable[name] = f"{name} needs a package that is not installed ({exc})"

    def __call__(self, reconstruction: np.ndarray, original: np.ndarray) -> dict[str, tuple[float, str]]:
        """metric -> (value, status) for one image pair (uint8 H x W x 3 each)."""
        import torch  # lazy: torch takes seconds to import; only this path needs it

        if reconstruction.shape != original.shape:
            raise ValueError(f"reconstruction shape {reconstruction.shape} != original shape {original.shape}")
        out = {name: (np.nan, unavailable(reason)) for name, reason in self.unavailable.items()}
        if not self.metrics:
            return {n: out[n] for n in self.names}
        x = _to_tensor(reconstruction, self.device)
        ref = _to_tensor(original, self.device)
        with torch.no_grad():
            for name, metric in self.metrics.items():
                if name == "ms_ssim" and min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
                    out[name] = (np.nan, unavailable(f"MS-SSIM needs at least {MS_SSIM_MIN_SIDE} px per side, "
                                                     f"image is {original.shape[1]}x{original.shape[0]}"))
                    continue
                value = metric(x) if self.mode[name] == "NR" else metric(x, ref)
                out[name] = (float(value.reshape(-1)[0].item()), STATUS_OK)
        return {n: out[n] for n in self.names}


def _to_tensor(image: np.ndarray, device: str):
    import torch  # lazy: torch takes seconds to import; only this path needs it

    # 8-bit values scaled to [0, 1]: PSNR's peak 1.0 is 255 in 8-bit units.
    return torch.tensor(image).permute(2, 0, 1)[None].float().div(255.0).to(device)


def compute(encode: pd.DataFrame, metrics: ImageMetrics, progress: bool = True) -> pd.DataFrame:
    """Tidy rows (``TIDY_COLUMNS``) of every encode row and metric.

    Encode rows whose status is not ``ok`` (codec unavailable, ...) give rows with that status and NaN.
    """
    rows = []
    records = encode.to_dict("records")
    desc = f"metrics {records[0]['codec']}@{records[0]['rate']}" if records else "metrics"
    for rec in tqdm(records, desc=desc, unit="img", disable=not progress, file=sys.stderr):
        if rec["status"] != STATUS_OK:
            values = {n: (np.nan, rec["status"]) for n in metrics.names}
        else:
            values = metrics(load_image(rec["reconstruction"]), load_image(rec["original"]))
        rows += tidy_rows(rec, values, metrics.lower_better)
    return to_frame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.metrics",
                                description="Per-image metrics (pyiqa) of an encode table -> tidy rows.")
    p.add_argument("--encode-csv", required=True, type=Path, help="encode table of one (dataset, codec, rate)")
    p.add_argument("--out", required=True, type=Path, help="tidy CSV to write")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated pyiqa metric names")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--cache", type=Path, default=None, help="metric weights cache (see cgdm.evaluation.weights)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not names:
        p.error("--metrics is empty")
    if args.threads:
        import torch  # lazy: torch takes seconds to import; only this path needs it

        torch.set_num_threads(args.threads)
    encode = read_encode_table(args.encode_csv)
    try:
        metrics = ImageMetrics(names, device=args.device, cache=args.cache)
    except ValueError as exc:
        p.error(str(exc))
    for name, reason in metrics.unavailable.items():
        print(f"[metrics] {name} unavailable: {reason}", file=sys.stderr)
    write_table(compute(encode, metrics), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
