"""Sliced Wasserstein distance (SWD) on Laplacian-pyramid patch descriptors: a realism measure that needs
no downloaded weights.

Protocol (Karras et al., "Progressive Growing of GANs", ICLR 2018, Sec. 5, and their public
``metrics/sliced_wasserstein.py``; re-implemented here), applied to the set of reconstructions vs the set
of originals of one (dataset, codec, rate point):

1. Each image (float, [0, 255]) gets a Laplacian pyramid: 5x5 binomial filter ``[1, 4, 6, 4, 1] / 16``
   (separable, "mirror" borders), decimation by 2, up-sampling by zero insertion + the same filter x 4.
   Levels run from full resolution down to the last level whose short side is still >= 16 px; the
   coarsest level is the low-pass residual (Karras: 1024 px ... 16 px).
2. From every level of every image, 128 random 7x7 neighbourhoods (all 3 channels: a 147-d descriptor).
3. Per set and level, every colour channel of the descriptors is normalised to zero mean and unit
   standard deviation (over all descriptors and the 49 positions), as in Karras' ``finalize_descriptors``.
4. SWD per level: 4 repeats x 128 random unit directions; project both sets, sort, mean absolute difference
   of the sorted projections (the 1-D Wasserstein-1 distance), averaged over directions and repeats.
   Reported x 1e3 (Karras' convention). The single number is the mean over levels.

Choices made here (Karras used large sets of unpaired images):

* Everything is seeded by an explicit ``numpy.random.Generator``: neighbourhood positions depend only on
  (seed, level, image index, image size), so the reconstructions and originals -- and every codec and
  rate point -- are sampled at the same positions (common random numbers: identical sets give exactly 0,
  and codecs are compared on the same sample). Directions depend on (seed, level).
* Confidence interval: paired bootstrap over images (the same resampled images on both sides, ``n_boot =
  100`` resamples), normal interval ``swd +- 1.96 sd`` (clipped at 0). A resample reuses the images'
  descriptors, the normalisation of the full sets and the first 32 directions, and gets its 1-D distances
  from the jointly sorted projections (the integral of ``|F_rec - F_orig|``), so it costs no sorting. The
  normal interval, not the percentile one: resampling with replacement leaves fewer distinct images, which
  biases a distance upwards, so the resampled values sit above the estimate; their spread is what is used.
  :func:`paired_difference` turns the samples of two such SWDs (same originals, same seed) into an
  interval of their difference, averaged over repeats such as decode seeds.
* Because each set is normalised by its own statistics (step 3), SWD ignores a per-channel affine change
  of a pyramid level (e.g. a global contrast change); it measures the *shape* of the local-patch
  distribution: blur, ringing, blocking and noise all change it. Lower is better.

SWD is a set-level measure like FID/KID: on Kodak's 24 images it estimates the distance between the patch
statistics of the codec's output and those of the originals, not per-image fidelity. Rows use
``image = DATASET_IMAGE``; metric names are ``swd`` (mean over levels), ``swd_ci_low`` / ``swd_ci_high``
(its bootstrap interval) and ``swd_l0`` ... (per level, ``l0`` = full resolution).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.stats import norm

NHOOD_SIZE = 7
NHOODS_PER_IMAGE = 128
DIR_REPEATS = 4
DIRS_PER_REPEAT = 128
MIN_LEVEL_SIDE = 16
SCALE = 1e3
N_BOOT = 100
BOOT_DIRS = 32
CI = 0.95
SEED = 0

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0

#: tidy metric names: the summary, its interval, and ``swd_l<k>`` per level
SWD = "swd"
SWD_CI = ("swd_ci_low", "swd_ci_high")
_LEVEL = re.compile(r"^swd_l(\d+)$")


def level_metric(level: int) -> str:
    return f"swd_l{level}"


def is_detail_metric(metric: str) -> bool:
    """Rows that qualify ``swd`` (its interval, its levels): kept in the tidy table, not given own panels."""
    return metric in SWD_CI or bool(_LEVEL.match(str(metric)))


def metric_names(levels: int) -> list[str]:
    """Every tidy metric an SWD computation with ``levels`` pyramid levels writes."""
    return [SWD, *SWD_CI, *(level_metric(k) for k in range(levels))]


class RealismError(ValueError):
    """Inputs SWD cannot be computed on (the message says what to change)."""


def num_levels(height: int, width: int, min_side: int = MIN_LEVEL_SIDE) -> int:
    """Pyramid levels of an image: full size down to the last level whose short side is >= ``min_side``."""
    side, levels = min(int(height), int(width)), 0
    while side >= min_side:
        levels += 1
        side = (side + 1) // 2  # size after [::2]
    return levels


def _filter(x: np.ndarray, axis: int, gain: float = 1.0) -> np.ndarray:
    """The 5-tap binomial filter along one axis ("mirror" borders, as Karras' ``scipy.ndimage.convolve``)."""
    return ndimage.correlate1d(x, (_BINOMIAL * gain).astype(x.dtype), axis=axis, mode="mirror")


def pyr_down(x: np.ndarray) -> np.ndarray:
    """5x5 binomial filter, then every second row and column (the separable filter is applied one axis at a
    time and decimated in between, which gives the same values at half the cost)."""
    return _filter(_filter(x, -1)[..., ::2], -2)[..., ::2, :]


def pyr_up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Up-sample by zero insertion + 5x5 binomial filter x 4 (x 2 per axis), cropped to ``shape``."""
    h, w = shape
    up = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    up[..., ::2] = x
    up = _filter(up, -1, gain=2.0)[..., :w]
    out = np.zeros(x.shape[:-2] + (2 * x.shape[-2], w), dtype=x.dtype)
    out[..., ::2, :] = up
    return _filter(out, -2, gain=2.0)[..., :h, :]


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of an (H, W, 3) image as ``levels`` float32 (3, h, w) arrays, finest first; the
    last one is the low-pass residual."""
    if image.ndim != 3:
        raise RealismError(f"expected an (H, W, C) image, got shape {image.shape}")
    pyramid = [np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))]
    for _ in range(1, levels):
        low = pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - pyr_up(low, pyramid[-1].shape[-2:])
        pyramid.append(low)
    return pyramid


def positions(shape: tuple[int, int], count: int, rng: np.random.Generator,
              size: int = NHOOD_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of ``count`` random ``size`` x ``size`` neighbourhoods inside a (h, w) level."""
    h, w = shape
    if h < size or w < size:
        raise RealismError(f"pyramid level of {w}x{h} px is smaller than the {size}x{size} neighbourhood")
    return rng.integers(0, h - size + 1, count), rng.integers(0, w - size + 1, count)


def neighbourhoods(level: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int = NHOOD_SIZE) -> np.ndarray:
    """(count, C, size, size) neighbourhoods of a (C, h, w) level at the given corners."""
    dy, dx = np.mgrid[0:size, 0:size]
    return level[:, ys[:, None, None] + dy, xs[:, None, None] + dx].transpose(1, 0, 2, 3)


def _normalise(desc: np.ndarray) -> np.ndarray:
    """Karras' ``finalize_descriptors``: per colour channel zero mean / unit std over the set, flattened."""
    desc = desc.astype(np.float64)
    desc = desc - desc.mean(axis=(0, 2, 3), keepdims=True)
    std = desc.std(axis=(0, 2, 3), keepdims=True)
    desc = desc / np.where(std > 0, std, 1.0)  # a flat channel (constant images) stays 0, not NaN
    return desc.reshape(len(desc), -1)


def directions(dim: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(dim, count) random unit vectors."""
    d = rng.standard_normal((dim, count))
    return d / np.linalg.norm(d, axis=0, keepdims=True)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, dirs: np.ndarray) -> float:
    """Mean over ``dirs`` (columns) of the 1-D Wasserstein-1 distance between the projections of the equal-
    size descriptor sets ``a`` and ``b`` (rows)."""
    if a.shape != b.shape:
        raise RealismError(f"descriptor sets differ in shape: {a.shape} vs {b.shape}")
    pa = np.sort(a @ dirs, axis=0)
    pb = np.sort(b @ dirs, axis=0)
    return float(np.abs(pa - pb).mean())


@dataclass
class SWDResult:
    """SWD (x 1e3) of two image sets: per level (finest first), their mean and its bootstrap interval."""

    levels: np.ndarray
    value: float
    ci_low: float
    ci_high: float
    n_images: int
    n_boot: int
    n_descriptors: int  # per set and level
    level_sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) of the first image's levels
    #: the ``n_boot`` bootstrap values behind the interval. Resample ``b`` weights the images the same way
    #: in every call with the same ``seed`` and number of images, so the samples of two results (e.g. two
    #: codecs on the same originals, images in the same order) are paired resample by resample:
    #: :func:`paired_difference` uses that.
    boot: np.ndarray = field(default_factory=lambda: np.empty(0))

    def as_metrics(self) -> dict[str, float]:
        out = {SWD: self.value, SWD_CI[0]: self.ci_low, SWD_CI[1]: self.ci_high}
        out.update({level_metric(k): float(v) for k, v in enumerate(self.levels)})
        return out


class _BootLevel:
    """One level's jointly sorted projections, ready for weighted (resampled) 1-D distances."""

    def __init__(self, pa: np.ndarray, pb: np.ndarray, image_of: np.ndarray):
        z = np.concatenate([pa, pb])  # (2N, D)
        order = np.argsort(z, axis=0, kind="stable")
        self.gaps = np.diff(np.take_along_axis(z, order, axis=0), axis=0)  # (2N - 1, D)
        image = np.concatenate([image_of, image_of])
        sign = np.concatenate([np.ones(len(pa)), -np.ones(len(pb))])
        self.image = image[order][:-1]  # the last cumulative sum is always 0
        self.sign = sign[order][:-1]

    def distance(self, weights: np.ndarray) -> float:
        """W1 averaged over directions, each image's descriptors weighted by ``weights[image]``, times the
        total weight of one set (the caller divides by it)."""
        w = self.sign * weights[self.image]
        cdf_gap = np.abs(np.cumsum(w, axis=0))  # |F_a - F_b| x total weight, between consecutive values
        return float((cdf_gap * self.gaps).sum(axis=0).mean())


def swd(reconstructions: list[np.ndarray], originals: list[np.ndarray], *, seed: int = SEED,
        nhoods_per_image: int = NHOODS_PER_IMAGE, dir_repeats: int = DIR_REPEATS,
        dirs_per_repeat: int = DIRS_PER_REPEAT, n_boot: int = N_BOOT, boot_dirs: int = BOOT_DIRS,
        ci: float = CI, max_levels: int | None = None, min_side: int = MIN_LEVEL_SIDE) -> SWDResult:
    """SWD between a set of reconstructions and the set of their originals (uint8 or float (H, W, 3)
    arrays in [0, 255], the i-th reconstruction the same size as the i-th original).

    Symmetric in its two arguments. See the module docstring for the protocol.
    """
    if len(reconstructions) != len(originals):
        raise RealismError(f"{len(reconstructions)} reconstructions but {len(originals)} originals")
    if not originals:
        raise RealismError("no images")
    for i, (r, o) in enumerate(zip(reconstructions, originals, strict=True)):
        if np.shape(r) != np.shape(o) or np.ndim(o) != 3:
            raise RealismError(f"image {i}: reconstruction shape {np.shape(r)} != original shape {np.shape(o)} "
                               "(both must be (H, W, C))")
    levels = min(num_levels(*np.shape(o)[:2], min_side=min_side) for o in originals)
    if max_levels:
        levels = min(levels, int(max_levels))
    if levels < 1:
        small = min(originals, key=lambda o: min(o.shape[:2])).shape
        raise RealismError(f"SWD needs images of at least {min_side}x{min_side} px; the smallest is "
                           f"{small[1]}x{small[0]}")

    n = len(originals)
    dim = NHOOD_SIZE * NHOOD_SIZE * np.shape(originals[0])[2]
    desc_a = [[] for _ in range(levels)]
    desc_b = [[] for _ in range(levels)]
    level_sizes = []
    for i, (r, o) in enumerate(zip(reconstructions, originals, strict=True)):
        pr, po = laplacian_pyramid(r, levels), laplacian_pyramid(o, levels)
        if i == 0:
            level_sizes = [tuple(x.shape[-2:]) for x in po]
        for k in range(levels):
            h, w = po[k].shape[-2:]
            rng = np.random.default_rng([seed, k, i, h, w])
            ys, xs = positions((h, w), nhoods_per_image, rng)
            desc_a[k].append(neighbourhoods(pr[k], ys, xs))
            desc_b[k].append(neighbourhoods(po[k], ys, xs))
    image_of = np.repeat(np.arange(n), nhoods_per_image)

    per_level, boot_levels = [], []
    for k in range(levels):
        a = _normalise(np.concatenate(desc_a[k]))
        b = _normalise(np.concatenate(desc_b[k]))
        dirs = directions(dim, dir_repeats * dirs_per_repeat, np.random.default_rng([seed, 1_000_003, k]))
        per_level.append(SCALE * np.mean([sliced_wasserstein(a, b, dirs[:, j * dirs_per_repeat:
                                                                             (j + 1) * dirs_per_repeat])
                                          for j in range(dir_repeats)]))
        if n_boot and n > 1:
            sub = dirs[:, :boot_dirs]
            boot = _BootLevel(a @ sub, b @ sub, image_of)
            boot_levels.append(boot)
    per_level = np.asarray(per_level)
    value = float(per_level.mean())

    ci_low = ci_high = np.nan
    if boot_levels:
        rng = np.random.default_rng([seed, 2_000_003])
        samples = np.empty(n_boot)
        for b in range(n_boot):
            weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
            total = weights.sum() * nhoods_per_image
            samples[b] = SCALE * np.mean([lv.distance(weights) / total for lv in boot_levels])
        half = float(norm.ppf(0.5 + ci / 2.0)) * float(samples.std(ddof=1))
        ci_low, ci_high = max(0.0, value - half), value + half
    return SWDResult(levels=per_level, value=value, ci_low=float(ci_low), ci_high=float(ci_high), n_images=n,
                     n_boot=n_boot if boot_levels else 0, n_descriptors=n * nhoods_per_image,
                     level_sizes=level_sizes, boot=samples if boot_levels else np.empty(0))


def dither(image: np.ndarray, sigma: float, key: str, seed: int = SEED) -> np.ndarray:
    """``image`` (uint8) plus white Gaussian noise of ``sigma`` grey levels, clipped and rounded to uint8:
    the noise-alone control of a realism claim (a little noise lowers SWD, see
    benchmarks/realism_calibration.py). The noise depends only on (seed, key), so one image gets the same
    field, scaled, at every ``sigma``."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    noise = rng.standard_normal(np.shape(image))
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) + sigma * noise), 0, 255).astype(np.uint8)


def paired_difference(values_a, boots_a, values_b, boots_b, *, ci: float = CI,
                      seed: int = SEED) -> tuple[float, float, float]:
    """SWD difference ``a - b`` averaged over repeats (e.g. decode seeds) with a normal ``ci`` interval.

    ``values_x[s]`` and ``boots_x[s]`` are the value and the bootstrap samples (:attr:`SWDResult.boot`) of
    repeat ``s``; ``a`` and ``b`` must be SWDs of the same originals, in the same order, computed with the
    same SWD ``seed``, so that bootstrap resample ``k`` of ``a`` and of ``b`` used the same images (the
    paired bootstrap of :func:`swd`). The interval combines both sources of variation:

    * images: the paired bootstrap (resample ``k`` of ``a`` minus resample ``k`` of ``b``), each repeat's
      differences centred on its own difference, as :func:`swd` centres its interval on the estimate;
    * repeats: for each resample ``k``, the repeats are drawn with replacement as well (a second-level
      bootstrap; with one repeat it is the image bootstrap alone).

    Returns ``(mean difference, low, high)``: the mean over repeats of ``value_a - value_b`` +- z x the
    standard deviation of the two-level bootstrap means. Without bootstrap samples (one image) the
    interval is NaN.
    """
    da = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    if da.ndim != 1 or not len(da):
        raise RealismError("paired_difference needs one value per repeat on both sides")
    mean = float(da.mean())
    if len(boots_a) != len(da) or len(boots_b) != len(da):
        return mean, np.nan, np.nan
    boots = [(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
             for x, y in zip(boots_a, boots_b, strict=True)]
    if any(len(x) == 0 or len(x) != len(y) for x, y in boots) or len({len(x) for x, _ in boots}) != 1:
        return mean, np.nan, np.nan
    diff = np.stack([x - y for x, y in boots])  # (repeats, n_boot), paired resample by resample
    centred = diff - diff.mean(axis=1, keepdims=True) + da[:, None]
    rng = np.random.default_rng([seed, 3_000_017])
    s, k = centred.shape
    pick = rng.integers(0, s, (k, s))  # the repeats drawn for each image resample
    samples = centred[pick, np.arange(k)[:, None]].mean(axis=1)
    half = float(norm.ppf(0.5 + ci / 2.0)) * float(samples.std(ddof=1))
    return mean, mean - half, mean + half
