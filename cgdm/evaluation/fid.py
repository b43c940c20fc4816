"""Distribution metrics per (dataset, codec, rate point): FID and KID through clean-fid on the FID/256
patch protocol, and the weight-free SWD (:mod:`cgdm.evaluation.realism`).

Protocol (Mentzer et al., HiFiC, NeurIPS 2020, "FID/256"; also used by MS-ILLM): every image is cut into
non-overlapping 256x256 patches starting at (0, 0), plus a second pass of non-overlapping patches starting
at (128, 128); partial patches at the borders are dropped. A 768x512 image gives 3x2 + 2x1 = 8 patches,
so Kodak gives 24 x 8 = 192. FID and KID compare the Inception features of the reconstruction patches
with those of the original patches of the same images. Features follow clean-fid's "clean" mode exactly:
each patch resized to 299x299 with PIL bicubic per channel in float (``cleanfid.resize.build_resizer``),
the TorchScript Inception of ``inception-2015-12-05.pt`` (``cleanfid.inception_torchscript.InceptionV3W``),
``cleanfid.fid.frechet_distance`` and ``cleanfid.fid.kernel_distance`` (seeded here).

This matches NeuralCompression's ``update_patch_fid`` (MS-ILLM) patching: crop at offset 0 and 128,
then non-overlapping tiles. Published FID/256 values computed with torchmetrics' Inception (which resizes
inside the network) can differ slightly from clean-fid's; compare FIDs computed by the same code.

Caveat: FID estimates a 2048x2048 covariance; Kodak's 192 patches are far too few for a stable value
(the covariance is rank-deficient, FID is biased upwards and varies strongly with the sample). HiFiC and
MS-ILLM therefore report FID/KID on CLIC2020 and DIV2K only. Use Kodak FID/KID to spot gross changes,
not to rank codecs; KID is unbiased and the better of the two on small sets.

The Inception file is never downloaded here (clean-fid would fetch it into /tmp): it must be in the
weights cache (:mod:`cgdm.weights`), otherwise the rows say ``unavailable``. ``swd`` needs no
weights: offline it is the realism measure that is always there; it writes the rows ``swd``,
``swd_ci_low``, ``swd_ci_high`` and ``swd_l<k>`` per pyramid level (see :mod:`cgdm.evaluation.realism`).

CLI (a workflow step)::

    python -m cgdm.evaluation.fid --encode-csv encode.csv --out fid.csv [--metrics fid,kid,swd]
        [--device cpu] [--cache DIR] [--feature-cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cgdm import weights as W
from cgdm.evaluation import DATASET_IMAGE, realism
from cgdm.evaluation.metrics import resolve_device
from cgdm.evaluation.tidy import read_encode_table, set_row, to_frame
from cgdm.imageio import atomic_write_bytes, load_image
from cgdm.results import STATUS_OK, unavailable, write_table

PATCH_SIZE = 256
PATCH_SHIFT = 128
DISTRIBUTION_METRICS = ("fid", "kid", "swd")
#: the metrics computed on Inception features (need the Inception weights)
INCEPTION_METRICS = ("fid", "kid")
KID_SEED = 0


def patches(image: np.ndarray, size: int = PATCH_SIZE, shift: int = PATCH_SHIFT) -> list[np.ndarray]:
    """FID/256 patches of an (H, W, 3) image: the ``size`` grid from (0, 0), then from (shift, shift)."""
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    out = []
    for offset in (0, shift):
        for y in range(offset, h - size + 1, size):
            for x in range(offset, w - size + 1, size):
                out.append(image[y:y + size, x:x + size])
    return out


def num_patches(height: int, width: int, size: int = PATCH_SIZE, shift: int = PATCH_SHIFT) -> int:
    """Number of FID/256 patches of a ``height`` x ``width`` image (without cutting it)."""
    def count(n, offset):
        return max(0, (n - offset) // size)

    return count(height, 0) * count(width, 0) + count(height, shift) * count(width, shift)


class InceptionFeatures:
    """clean-fid's Inception (TorchScript) and "clean" resize, loaded from the weights cache."""

    def __init__(self, cache: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32):
        import torch  # lazy: torch takes seconds to import; only this path needs it
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer  # lazy: clean-fid imports torch

        self.cache = Path(cache) if cache else W.default_cache()
        ok, reason = W.status("fid", self.cache)
        if not ok:
            raise FileNotFoundError(reason)
        path = W.WEIGHTS["inception"].path(self.cache)
        self.device = torch.device(device)
        # download=False: the file is verified above; clean-fid would otherwise fetch it into /tmp.
        self.model = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(self.device).eval()
        self.resize = build_resizer("clean")
        self.batch_size = batch_size

    def __call__(self, images: list[np.ndarray], desc: str = "inception") -> np.ndarray:
        """(N, 2048) float64 features of uint8 (h, w, 3) patches."""
        import torch  # lazy: torch takes seconds to import; only this path needs it

        feats = []
        for i in tqdm(range(0, len(images), self.batch_size), desc=desc, unit="batch", file=sys.stderr):
            # same as cleanfid.utils.ResizeDataset: float32 [0, 255] after the clean resize, CHW
            batch = np.stack([self.resize(p).transpose(2, 0, 1) for p in images[i:i + self.batch_size]])
            with torch.no_grad():
                feats.append(self.model(torch.from_numpy(batch).to(self.device)).cpu().numpy())
        return np.concatenate(feats).astype(np.float64) if feats else np.zeros((0, 2048))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    from cleanfid.fid import frechet_distance  # lazy: clean-fid imports torch

    mu1, s1 = real.mean(axis=0), np.cov(real, rowvar=False)
    mu2, s2 = fake.mean(axis=0), np.cov(fake, rowvar=False)
    return float(frechet_distance(mu1, s1, mu2, s2))


def kid_from_features(real: np.ndarray, fake: np.ndarray, seed: int = KID_SEED) -> float:
    """clean-fid's KID; its subsets come from numpy's global generator, seeded here and restored."""
    from cleanfid.fid import kernel_distance  # lazy: clean-fid imports torch

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return float(kernel_distance(real, fake))
    finally:
        np.random.set_state(state)


def _distance(metric: str, real: np.ndarray, fake: np.ndarray) -> tuple[float, str]:
    func = {"fid": fid_from_features, "kid": kid_from_features}[metric]
    try:
        return func(real, fake), STATUS_OK
    except ValueError as exc:  # e.g. clean-fid's "Imaginary component" on a degenerate covariance
        return np.nan, unavailable(f"{metric} undefined on {len(fake)} patches: {exc}")


def _feature_key(paths: list[str], model_sha: str) -> str:
    h = hashlib.sha256(f"FID/{PATCH_SIZE}/{PATCH_SHIFT}/{model_sha}".encode())
    for p in paths:
        h.update(W.sha256_file(p).encode())
    return h.hexdigest()[:24]


def reference_features(paths: list[str], model: InceptionFeatures, feature_cache: Path | None) -> np.ndarray:
    """Features of the original images' patches; cached by content when ``feature_cache`` is given
    (every codec and rate point of a dataset shares them)."""
    cached = None
    if feature_cache:
        cached = Path(feature_cache) / f"{_feature_key(paths, W.WEIGHTS['inception'].sha256)}.npy"
        if cached.is_file():
            return np.load(cached)
    feats = model([p for path in paths for p in patches(load_image(path))], desc="originals")
    if cached is not None:
        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(cached, buf.getvalue())
    return feats


def _swd_levels(g: pd.DataFrame) -> int:
    """SWD pyramid levels of a rate point's images (from the encode table's sizes; 0 when unknown)."""
    sizes = g[["height", "width"]].apply(pd.to_numeric, errors="coerce").dropna()
    return min((realism.num_levels(h, w) for h, w in zip(sizes["height"], sizes["width"], strict=True)), default=0)


def _swd(ok: pd.DataFrame, names: list[str], label: str) -> dict[str, tuple[float, str]]:
    """The SWD rows (``names``) of one rate point's reconstructions vs originals."""
    try:
        res = realism.swd([load_image(p) for p in ok["reconstruction"]], [load_image(p) for p in ok["original"]])
    except realism.RealismError as exc:
        return {m: (np.nan, unavailable(f"swd: {exc}")) for m in names}
    print(f"[swd] {label}: {res.value:.2f} [{res.ci_low:.2f}, {res.ci_high:.2f}] over {res.n_images} images, "
          f"{len(res.levels)} levels", file=sys.stderr)
    values = res.as_metrics()
    return {m: (values[m], STATUS_OK) if np.isfinite(values.get(m, np.nan))
            else (np.nan, unavailable(f"{m} undefined for {res.n_images} image(s)")) for m in names}


def compute(encode: pd.DataFrame, metrics=DISTRIBUTION_METRICS, cache=None, device: str = "cpu",
            feature_cache: Path | None = None, batch_size: int = 32) -> pd.DataFrame:
    """Tidy rows (``image = DATASET_IMAGE``) of FID / KID / SWD for every (dataset, codec, rate) of
    ``encode``."""
    unknown = [m for m in metrics if m not in DISTRIBUTION_METRICS]
    if unknown:
        raise ValueError(f"unknown distribution metrics {unknown}; known: {list(DISTRIBUTION_METRICS)}")
    inception = [m for m in metrics if m in INCEPTION_METRICS]
    model, model_error = None, None
    if inception:
        try:
            model = InceptionFeatures(cache, device, batch_size)
        except FileNotFoundError as exc:
            model_error = str(exc)
    rows = []
    for (dataset, codec, rate), g in encode.groupby(["dataset", "codec", "rate"], sort=False):
        ok = g[g["status"] == STATUS_OK]
        base = set_row(dataset, codec, rate, g, DATASET_IMAGE)
        n_patches = int(sum(num_patches(int(h), int(w)) for h, w in zip(ok["height"], ok["width"], strict=True)))
        # "swd" stands for its summary, interval and per-level rows
        swd_names = realism.metric_names(_swd_levels(g)) if "swd" in metrics else []
        names = [n for m in metrics for n in (swd_names if m == "swd" else [m])]
        if len(ok) < len(g):
            bad = g[g["status"] != STATUS_OK]["status"]
            status = (bad.iloc[0] if len(ok) == 0 else
                      unavailable(f"{len(bad)} of {len(g)} images have no reconstruction ({bad.iloc[0]})"))
            values = {m: (np.nan, status) for m in names}
        else:
            values = {}
            if inception and model is None:
                values.update({m: (np.nan, unavailable(model_error)) for m in inception})
            elif inception and n_patches < 2:
                values.update({m: (np.nan, unavailable(f"{n_patches} FID/256 patches; images must be at least "
                                                       f"{PATCH_SIZE}x{PATCH_SIZE}")) for m in inception})
            elif inception:
                real = reference_features(list(ok["original"]), model, feature_cache)
                fake = model([p for path in ok["reconstruction"] for p in patches(load_image(path))],
                             desc=f"{codec}@{rate}")
                print(f"[fid] {dataset} {codec}@{rate}: {len(fake)} patches from {len(ok)} images",
                      file=sys.stderr)
                values.update({m: _distance(m, real, fake) for m in inception})
            if swd_names:
                values.update(_swd(ok, swd_names, f"{dataset} {codec}@{rate}"))
            values = {m: values[m] for m in names}
        for m, (value, status) in values.items():
            rows.append(dict(base, metric=m, value=value if status == STATUS_OK else np.nan,
                             lower_better=True, status=status))
    return to_frame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.fid",
                                description="FID/KID (clean-fid, FID/256 patches) and SWD (no weights) of an "
                                            "encode table -> tidy rows.")
    p.add_argument("--encode-csv", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--metrics", default="fid,kid,swd", help="comma-separated subset of fid,kid,swd")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--cache", type=Path, default=None, help="metric weights cache (see cgdm.evaluation.weights)")
    p.add_argument("--feature-cache", type=Path, default=None,
                   help="folder caching the originals' features (shared by all codecs of a dataset)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in DISTRIBUTION_METRICS]
    if unknown or not metrics:
        p.error(f"--metrics: unknown {unknown}; choose from {list(DISTRIBUTION_METRICS)}")
    if args.threads:
        import torch  # lazy: torch takes seconds to import; only this path needs it

        torch.set_num_threads(args.threads)
    encode = read_encode_table(args.encode_csv)
    df = compute(encode, metrics, cache=args.cache, device=resolve_device(args.device),
                 feature_cache=args.feature_cache, batch_size=args.batch_size)
    write_table(df, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
