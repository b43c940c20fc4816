"""Weight files of the learned metrics: where they come from, their sha256, where they are cached.

The metrics never download anything themselves: :func:`status` decides from the files on disk, before
pyiqa / torchvision / clean-fid are asked to build a network, whether a metric can run. A metric whose
files are missing or do not match their sha256 yields ``unavailable`` rows -- never a number from random
or corrupt weights. ``python -m cgdm.evaluation.weights --fetch`` downloads and verifies them. While a
network is built from the cache, :func:`no_downloads` turns every download pyiqa / torchvision could start
into :class:`DownloadBlocked` and :func:`torch_home` points their caches at it.

A core module (standard library, :mod:`cgdm.download`, :mod:`cgdm.imageio`): the learned metrics
(:mod:`cgdm.evaluation.metrics`, :mod:`cgdm.evaluation.fid`) and the decoder trainer's optional LPIPS-VGG
loss (:mod:`cgdm.train_diffusion`) share it; ``python -m cgdm.evaluation.weights`` is its command line.

Cache layout (``cache`` is a ``TORCH_HOME``-like folder, so the files land exactly where torchvision and
pyiqa look for them when ``TORCH_HOME=cache``)::

    <cache>/hub/checkpoints/alexnet-owt-7be5be79.pth     torchvision AlexNet (LPIPS backbone)
    <cache>/hub/checkpoints/vgg16-397923af.pth           torchvision VGG16 (DISTS backbone)
    <cache>/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth       LPIPS v0.1 linear layers (AlexNet)
    <cache>/hub/pyiqa/DISTS_weights-f5e65c96.pth         DISTS alpha/beta
    <cache>/cleanfid/inception-2015-12-05.pt             clean-fid Inception (TorchScript)

The default cache is ``$CGDM_WEIGHTS_CACHE``, else ``$TORCH_HOME``, else ``~/.cache/torch`` (torch's own
default, so weights fetched earlier by torchvision or pyiqa are found). Offline machines: copy the five
files into that layout (sha256 below), or serve them from a folder / URL given as ``--mirror``.

Checksums: the torchvision files are named by their sha256 prefix (torch hub convention); the pyiqa
LPIPS / DISTS files are byte copies of the authors' ``alex.pth`` (richzhang/PerceptualSimilarity) and
``weights.pt`` (dingkeyan93/DISTS), whose sha256 prefixes the pyiqa file names carry; the Inception
file is the StyleGAN2-ADA TorchScript translation of the TensorFlow 2015-12-05 Inception used by
clean-fid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from cgdm.download import DownloadError, download, sha256_file
from cgdm.imageio import atomic_write_bytes


class WeightsError(RuntimeError):
    """A weight file could not be fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class WeightFile:
    key: str
    filename: str
    subdir: str  # relative to the cache root
    urls: tuple[str, ...]  # tried in order
    sha256: str
    size: int | None  # bytes, when known (a cheap first check)
    description: str

    def path(self, cache: str | os.PathLike | None = None) -> Path:
        return Path(cache or default_cache()) / self.subdir / self.filename


_IQA_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
_IQA_GH = "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights"

#: every weight file a default metric needs
WEIGHTS: dict[str, WeightFile] = {
    w.key: w
    for w in [
        WeightFile(
            key="lpips_alex_v0.1",
            filename="LPIPS_v0.1_alex-df73285e.pth",
            subdir="hub/pyiqa",
            urls=(f"{_IQA_HF}/LPIPS_v0.1_alex-df73285e.pth", f"{_IQA_GH}/LPIPS_v0.1_alex-df73285e.pth",
                  "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"),
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            size=6009,
            description="LPIPS v0.1 linear layers on AlexNet features (Zhang et al. 2018), BSD-2-Clause",
        ),
        WeightFile(
            key="lpips_vgg_v0.1",
            filename="LPIPS_v0.1_vgg-a78928a0.pth",
            subdir="hub/pyiqa",
            urls=(f"{_IQA_HF}/LPIPS_v0.1_vgg-a78928a0.pth", f"{_IQA_GH}/LPIPS_v0.1_vgg-a78928a0.pth"),
            # only the sha256 prefix in pyiqa's file name is published (torch hub's convention); the
            # full digest could not be taken here (offline)
            sha256="a78928a0",
            size=None,
            description="LPIPS v0.1 linear layers on VGG16 features (Zhang et al. 2018), BSD-2-Clause; "
                        "the decoder's training loss, not a test metric",
        ),
        WeightFile(
            key="alexnet",
            filename="alexnet-owt-7be5be79.pth",
            subdir="hub/checkpoints",
            urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            size=244_408_911,
            description="torchvision AlexNet IMAGENET1K_V1 (LPIPS backbone), BSD-3-Clause",
        ),
        WeightFile(
            key="dists",
            filename="DISTS_weights-f5e65c96.pth",
            subdir="hub/pyiqa",
            urls=(f"{_IQA_HF}/DISTS_weights-f5e65c96.pth", f"{_IQA_GH}/DISTS_weights-f5e65c96.pth",
                  "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt"),
            sha256="f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
            size=None,
            description="DISTS alpha/beta (Ding et al. 2020), MIT",
        ),
        WeightFile(
            key="vgg16",
            filename="vgg16-397923af.pth",
            subdir="hub/checkpoints",
            urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553_433_881,
            description="torchvision VGG16 IMAGENET1K_V1 (DISTS backbone), BSD-3-Clause",
        ),
        WeightFile(
            key="inception",
            filename="inception-2015-12-05.pt",
            subdir="cleanfid",
            urls=("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",),
            sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
            size=95_607_719,
            description="Inception-v3 (TF 2015-12-05) as TorchScript, used by clean-fid for FID/KID",
        ),
    ]
}

#: weight files each metric needs (metrics absent here need none, or are generic pyiqa metrics)
METRIC_WEIGHTS: dict[str, tuple[str, ...]] = {
    "psnr": (),
    "ms_ssim": (),
    "lpips": ("lpips_alex_v0.1", "alexnet"),
    "dists": ("dists", "vgg16"),
    "lpips-vgg": ("lpips_vgg_v0.1", "vgg16"),
    "fid": ("inception",),
    "kid": ("inception",),
}


def default_cache() -> Path:
    """``$CGDM_WEIGHTS_CACHE``, else ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch`` / ``~/.cache/torch``."""
    for var in ("CGDM_WEIGHTS_CACHE", "TORCH_HOME"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "torch"


# Hashing the ~0.9 GB of backbones costs about a second; do it once per process and file version.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def check_file(w: WeightFile, cache: str | os.PathLike | None = None) -> str | None:
    """``None`` when the file is present and verified, else the reason it is not usable."""
    path = w.path(cache)
    if not path.is_file():
        return f"{w.filename} missing (expected at {path})"
    if w.size is not None and path.stat().st_size != w.size:
        return f"{path} has {path.stat().st_size} bytes, expected {w.size} (incomplete or wrong file)"
    digest = _file_sha256(path)
    # a pin shorter than 64 hex digits is a published prefix (see lpips_vgg_v0.1)
    if digest != w.sha256 and not (len(w.sha256) < 64 and digest.startswith(w.sha256)):
        return f"{path} has sha256 {digest[:16]}..., expected {w.sha256[:16]}... (wrong or corrupt file)"
    return None


def fetch_hint(cache: str | os.PathLike | None = None) -> str:
    cache = Path(cache or default_cache())
    return (f"fetch with `python -m cgdm.evaluation.weights --fetch --cache {cache}` "
            "(offline: copy the files of `--list` there)")


def status(metric: str, cache: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Can ``metric`` run from ``cache`` without downloading? ``(True, "ok")`` or ``(False, reason)``.

    Metrics unknown to :data:`METRIC_WEIGHTS` (optional pyiqa no-reference metrics) report ``True``:
    their files are checked when pyiqa builds them, with downloads blocked (see :func:`no_downloads`).
    """
    cache = Path(cache or default_cache())
    files = [WEIGHTS[k] for k in METRIC_WEIGHTS.get(metric, ())]
    missing = [w.filename for w in files if not w.path(cache).is_file()]
    wrong = [r for w in files if w.path(cache).is_file() and (r := check_file(w, cache))]
    if not (missing or wrong):
        return True, "ok"
    parts = [f"missing {', '.join(missing)} in {cache}"] if missing else []
    return False, f"{metric} weights not available: {'; '.join(parts + wrong)}; {fetch_hint(cache)}"


def weights_id(metric: str) -> str:
    """Short identity of the weights a metric uses (sha256 prefixes), for logs and provenance."""
    keys = METRIC_WEIGHTS.get(metric, ())
    return "+".join(f"{k}:{WEIGHTS[k].sha256[:12]}" for k in keys) if keys else "none"


# -- no downloads while a network is built from the cache -------------------------------------------
class DownloadBlocked(RuntimeError):
    """A metric tried to download a file while downloads are blocked."""

    def __init__(self, url: str, dst: str | None = None):
        self.url, self.dst = url, dst
        where = f" to {dst}" if dst else ""
        super().__init__(f"would download {url}{where}")


@contextlib.contextmanager
def no_downloads():
    """Make every download path pyiqa / torchvision / clip use raise :class:`DownloadBlocked` at once.

    Offline machines must never hang on a download, and a metric must never silently fall back to
    random weights; the missing file becomes an ``unavailable`` row instead.
    """
    import torch.hub  # lazy: the table and the file checks need no torch (the workflow's state checks use them)

    def blocked_download(url, dst=None, *args, **kwargs):
        raise DownloadBlocked(str(url), str(dst) if dst else None)

    def blocked_urlopen(url, *args, **kwargs):
        raise DownloadBlocked(getattr(url, "full_url", str(url)))

    patches = [mock.patch.object(torch.hub, "download_url_to_file", blocked_download),
               mock.patch("urllib.request.urlopen", blocked_urlopen),
               mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})]
    try:
        import pyiqa.utils.download_util as du  # lazy: pyiqa is slow to import; only its downloads are patched

        patches.append(mock.patch.object(du, "download_url_to_file", blocked_download))
    except ImportError:  # pragma: no cover - pyiqa is a dependency
        pass
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield


@contextlib.contextmanager
def torch_home(cache: Path):
    """Point torch hub (torchvision backbones) and pyiqa's cache at ``cache`` while metrics are built."""
    patches = [mock.patch.dict(os.environ, {"TORCH_HOME": str(cache)})]
    try:
        import pyiqa.utils.download_util as du  # lazy: pyiqa is slow to import; only its cache folder is patched

        # pyiqa computes its cache folder at import time; follow the cache we were given instead.
        patches.append(mock.patch.object(du, "DEFAULT_CACHE_DIR", str(cache / "hub" / "pyiqa")))
    except ImportError:  # pragma: no cover
        pass
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield



def _urls(w: WeightFile, mirror: str | None) -> list[str]:
    if not mirror:
        return list(w.urls)
    if "://" not in mirror:  # local folder
        return [Path(mirror).resolve().joinpath(w.filename).as_uri()]
    return [mirror.rstrip("/") + "/" + w.filename]


def fetch(cache: str | os.PathLike | None = None, keys: list[str] | None = None, mirror: str | None = None,
          timeout: float = 60.0) -> list[Path]:
    """Download (when missing or wrong) and verify the weight files ``keys`` (default: all) into ``cache``.

    Raises :class:`WeightsError` naming every file that could not be fetched, its URLs, its sha256 and
    where to put it by hand. Files already present and verified are not downloaded again.
    """
    cache = Path(cache or default_cache())
    keys = list(keys or WEIGHTS)
    unknown = [k for k in keys if k not in WEIGHTS]
    if unknown:
        raise WeightsError(f"unknown weight keys {unknown}; known: {sorted(WEIGHTS)}")
    done, failures = [], []
    for key in keys:
        w = WEIGHTS[key]
        dest = w.path(cache)
        if check_file(w, cache) is None:
            done.append(dest)
            continue
        errors = []
        for url in _urls(w, mirror):
            try:
                download(url, dest, sha256=w.sha256, timeout=timeout, desc=w.filename)
                break
            except DownloadError as exc:
                if exc.digest is None:  # offline, HTTP error, timeout
                    errors.append(str(exc))
                else:
                    errors.append(f"{w.filename} from {url}: sha256 {exc.digest} does not match the expected "
                                  f"{w.sha256}; the file was discarded")
        if check_file(w, cache) is None:
            done.append(dest)
        else:
            failures.append(f"{w.filename} (sha256 {w.sha256}) -> {dest}: " + " | ".join(errors))
    if failures:
        raise WeightsError("could not fetch metric weights:\n  " + "\n  ".join(failures)
                           + "\nDownload them elsewhere and copy them to the paths above (or pass --mirror "
                           "DIR_OR_URL serving them by file name); the affected metrics are reported as "
                           "unavailable until then.")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cgdm.evaluation.weights",
                                description="Fetch, verify or list the weight files of the learned metrics.")
    p.add_argument("--cache", type=Path, default=None,
                   help="TORCH_HOME-like cache folder (default: $CGDM_WEIGHTS_CACHE, $TORCH_HOME or ~/.cache/torch)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fetch", action="store_true", help="download missing files and verify all")
    mode.add_argument("--list", action="store_true", help="print the table of files (URL, sha256, path)")
    p.add_argument("--keys", default="", help="comma-separated subset of weight keys (default: all)")
    p.add_argument("--mirror", default=None, help="folder or base URL serving the files by name (offline clusters)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per connection attempt")
    p.add_argument("--marker", type=Path, default=None, help="file written after success (workflow output)")
    args = p.parse_args(argv)
    cache = args.cache or default_cache()
    keys = [k for k in args.keys.split(",") if k] or None

    if args.list:
        for w in WEIGHTS.values():
            print(f"{w.key}\n  file:   {w.path(cache)}\n  sha256: {w.sha256}\n  urls:   " + "\n          ".join(w.urls))
        return 0
    if args.fetch:
        try:
            paths = fetch(cache, keys, mirror=args.mirror, timeout=args.timeout)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for path in paths:
            print(f"ok  {path}")
        if args.marker:  # sha256sum-style list of what was verified
            # atomic: a workflow output
            atomic_write_bytes(args.marker, "".join(f"{_file_sha256(path)}  {path}\n" for path in paths).encode())
        return 0
    for metric in METRIC_WEIGHTS:  # default: status of every metric
        ok, reason = status(metric, cache)
        print(f"{metric:8s} {'ok' if ok else reason}")
    return 0
