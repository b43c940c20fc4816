"""Globally uniform boundary control: any image size, bounded memory, no seams.

Large images are denoised as overlapped patches, but the *sampling process stays global*:

1. the start noise is drawn once, for the whole image, from the decode generator;
2. at every step all patches are denoised (``batch`` at a time, so network memory is bounded by patch
   size x batch, not by image size) and their ``x0`` predictions are blended with a smooth window into
   one prediction of the whole image;
3. guidance and the DDIM update are applied once, to the whole image.

Every pixel therefore follows one trajectory, with the same noise wherever it lies, and neighbouring
patches agree on their overlap at every step: no seams. The ``no_boundary`` ablation
(:func:`sample_independent`) instead cuts the image into non-overlapping patches and runs a separate
sampler, with its own noise, on each.

:func:`seam_metric` measures what this buys: the mean absolute pixel step across patch borders divided
by the mean step elsewhere (1.0 = borders are invisible to the metric; seams push it above 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cgdm.diffusion.scheduler import Sampler

__all__ = [
    "Box",
    "Tiling",
    "blend_window",
    "predict_x0_tiled",
    "sample_global",
    "sample_independent",
    "seam_metric",
    "tile_boxes",
]

#: (top, left, height, width) of a patch in the image
Box = tuple[int, int, int, int]
#: ``(x_t patches (N, 3, h, w), t, boxes) -> x0 patches``: the denoiser, which slices its own conditioning
PredictPatches = Callable[[Tensor, int, list[Box]], Tensor]
#: ``(x0, box or None) -> x0``: guidance of a region (None = the whole image)
Guide = Callable[[Tensor, Box | None], Tensor]


@dataclass(frozen=True)
class Tiling:
    """Patch layout. ``patch`` (the largest patch side) and ``overlap`` are in pixels; ``batch`` patches go
    through the network at once; patch sides and positions are multiples of ``align``."""

    patch: int = 256
    overlap: int = 32
    batch: int = 4
    align: int = 1

    def __post_init__(self):
        if self.patch < 1 or self.batch < 1 or self.align < 1:
            raise ValueError("patch, batch and align must be >= 1")
        if not 0 <= self.overlap < self.patch:
            raise ValueError(f"overlap must be in [0, patch), got overlap={self.overlap}, patch={self.patch}")
        if self.patch % self.align:
            raise ValueError(f"patch ({self.patch}) must be a multiple of align ({self.align})")


def _positions(length: int, patch: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, size) of evenly spread patches covering ``length`` with at least ~``overlap`` overlap.

    The number of patches is the smallest that covers the length with patches of at most ``patch``;
    the patch size is then shrunk to the smallest aligned size that still covers it. Fixed-size patches
    with the last one shifted back would cost up to 2x the pixels on unlucky sizes (1920x1080 with
    512-pixel patches); even spreading keeps the overhead near ``(n - 1) * overlap / length``, so decode
    time stays proportional to the number of pixels.
    """
    if length <= patch:
        return [(0, length)]
    n = math.ceil((length - overlap) / (patch - overlap))
    size = min(patch, math.ceil((length + (n - 1) * overlap) / n / align) * align)
    span = length - size
    starts = [min(span, round(i * span / (n - 1) / align) * align) for i in range(n)]
    return [(st, size) for st in starts]


def tile_boxes(height: int, width: int, patch: int, overlap: int, align: int = 1) -> list[Box]:
    """Overlapped patches covering the image (see :func:`_positions`): at most ``patch`` x ``patch``,
    one size per axis. ``height`` and ``width`` should be multiples of ``align``."""
    rows = _positions(height, patch, overlap, align)
    cols = _positions(width, patch, overlap, align)
    return [(t, left, h, w) for t, h in rows for left, w in cols]


def grid_boxes(height: int, width: int, patch: int) -> list[Box]:
    """Non-overlapping partition into ``patch`` x ``patch`` cells (the last ones may be smaller)."""
    return [(t, left, min(patch, height - t), min(patch, width - left))
            for t in range(0, height, patch) for left in range(0, width, patch)]


def _ramp(n: int, overlap: int) -> Tensor:
    """1-D window: raised-cosine ramps of length ``overlap`` at both ends, 1 in between, never 0."""
    w = torch.ones(n, dtype=torch.float32)
    k = min(overlap, n // 2)
    if k > 0:
        i = torch.arange(k, dtype=torch.float32)
        r = torch.sin(0.5 * math.pi * (i + 0.5) / k) ** 2
        w[:k] = r
        w[n - k:] = r.flip(0)
    return w


def blend_window(height: int, width: int, overlap: int) -> Tensor:
    """Separable smooth window (1, 1, h, w). Weights are normalised by their sum over patches, so a
    pixel covered by one patch (image border) gets that patch's value exactly."""
    return (_ramp(height, overlap)[:, None] * _ramp(width, overlap)[None, :])[None, None]


def predict_x0_tiled(x_t: Tensor, t: int, predict: PredictPatches, tiling: Tiling) -> Tensor:
    """One global ``x0`` prediction from overlapped patches blended with :func:`blend_window`."""
    if x_t.shape[0] != 1:
        raise ValueError("tiled prediction works on one image at a time")
    H, W = x_t.shape[-2:]
    boxes = tile_boxes(H, W, tiling.patch, tiling.overlap, tiling.align)
    acc = torch.zeros_like(x_t)
    wsum = torch.zeros((1, 1, H, W), dtype=x_t.dtype, device=x_t.device)
    windows: dict[tuple[int, int], Tensor] = {}
    for i in range(0, len(boxes), tiling.batch):
        chunk = boxes[i:i + tiling.batch]
        # patches of one chunk have one size except at the image border; group by size
        for size in dict.fromkeys((h, w) for _, _, h, w in chunk):
            group = [b for b in chunk if (b[2], b[3]) == size]
            xs = torch.cat([x_t[..., tp:tp + h, lf:lf + w] for tp, lf, h, w in group])
            x0 = predict(xs, t, group)
            if size not in windows:
                windows[size] = blend_window(*size, tiling.overlap).to(x_t.device, x_t.dtype)
            win = windows[size]
            for j, (tp, lf, h, w) in enumerate(group):
                acc[..., tp:tp + h, lf:lf + w] += x0[j:j + 1] * win
                wsum[..., tp:tp + h, lf:lf + w] += win
            del xs, x0
    return acc.div_(wsum)


def sample_global(sampler: Sampler, x_base: Tensor, predict: PredictPatches, generator: torch.Generator,
                  tiling: Tiling | None, guide: Guide | None = None, progress: bool = False) -> Tensor:
    """Globally uniform sampling: one noise draw, one global update per step, patches only inside the
    network call. ``tiling=None`` runs the network on the whole image at once."""
    H, W = x_base.shape[-2:]
    full = [(0, 0, H, W)]
    if tiling is None or (H <= tiling.patch and W <= tiling.patch):
        def pred(x, t):
            return predict(x, t, full)
    else:
        def pred(x, t):
            return predict_x0_tiled(x, t, predict, tiling)
    g = None if guide is None else (lambda x0: guide(x0, None))
    return sampler.sample(x_base, pred, generator, guide=g, progress=progress)


def sample_independent(sampler: Sampler, x_base: Tensor, predict: PredictPatches, generator: torch.Generator,
                       patch: int, guide: Guide | None = None, progress: bool = False) -> Tensor:
    """``no_boundary``: non-overlapping patches, each sampled on its own with its own noise.

    Each patch gets a generator seeded from ``generator`` (so the result is still a function of the
    decode seed), its own start noise and its own trajectory.
    """
    if x_base.shape[0] != 1:
        raise ValueError("patch-wise sampling works on one image at a time")
    H, W = x_base.shape[-2:]
    boxes = grid_boxes(H, W, patch)
    seeds = torch.randint(0, 2**62, (len(boxes),), generator=generator, device=generator.device).tolist()
    out = torch.empty_like(x_base)
    it = boxes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(boxes, desc="patches", leave=False)
    for box, seed in zip(it, seeds, strict=True):
        tp, lf, h, w = box
        g_patch = torch.Generator(device=generator.device).manual_seed(int(seed))
        xb = x_base[..., tp:tp + h, lf:lf + w]
        gp = None if guide is None else (lambda x0, b=box: guide(x0, b))
        out[..., tp:tp + h, lf:lf + w] = sampler.sample(xb, lambda x, t, b=box: predict(x, t, [b]), g_patch, guide=gp)
    return out


def _as_chw(image) -> Tensor:
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(image)).float()
        if t.dim() == 3 and t.shape[-1] in (1, 3):
            t = t.permute(2, 0, 1)
        return t
    t = image.detach().float()
    return t[0] if t.dim() == 4 else t


def seam_metric(image, period: int, offset: int = 0) -> float:
    """Gradient discontinuity at patch borders relative to the interior.

    Borders are between pixels ``offset + k * period - 1`` and ``offset + k * period`` (k >= 1), in both
    directions. Returns ``mean |step| across borders / mean |step| elsewhere``: about 1 for an image
    without seams, larger when borders show. ``image``: uint8/float (H, W, 3) array or (3, H, W) /
    (1, 3, H, W) tensor.
    """
    x = _as_chw(image)
    ratios = []
    for axis in (-1, -2):
        n = x.shape[axis]
        d = (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).abs()
        d = d.mean(dim=0)  # over channels -> (H, W-1) or (H-1, W)
        d = d.mean(dim=0 if axis == -1 else 1)  # profile along the axis
        first = offset + period - 1
        if first >= n - 1:
            continue
        border = torch.zeros(n - 1, dtype=torch.bool)
        idx = torch.arange(first, n - 1, period)
        border[idx] = True
        interior = d[~border].mean()
        ratios.append(float(d[border].mean() / interior.clamp_min(1e-12)))
    if not ratios:
        raise ValueError(f"no patch border inside an image of size {tuple(x.shape[-2:])} with period {period}")
    return float(np.mean(ratios))
