"""Consistency-guided feature branch: what the diffusion output must stay consistent with.

A small network reads the base decoder's features (the synthesis features before its last layer) and the
base reconstruction, and predicts

* ``features``: consistency features at the diffusion network's working resolution, used as
  conditioning (input of the U-Net, and fused into its last stage by SFF, :mod:`cgdm.fusion`);
* ``x_c``: a fidelity-oriented reconstruction (base reconstruction + predicted residual), trained with
  MSE against the original. It is the content the perceptual output must not drift from.

``x_c`` is used in two more places:

* **training loss** (:func:`deviation_loss`): the low-frequency deviation of the denoiser's ``x0``
  prediction from ``x_c`` is penalised beyond a bound, so realism is bought with high-frequency detail,
  not with shifted colours or moved edges;
* **sampling guidance** (:class:`ConsistencyGuidance`): at each DDIM step the predicted ``x0`` is pulled
  back so that its low-frequency deviation from ``x_c`` stays within the same bound.

All tensors here are in the diffusion value range [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConsistencyBranch", "ConsistencyGuidance", "block_means", "deviation_loss"]


class _ConvBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConsistencyBranch(nn.Module):
    """Base decoder features (B, C, H/s, W/s) + base reconstruction -> (features, x_c).

    Args:
        in_channels: channels ``C`` of the base decoder features.
        out_channels: channels of the consistency features given to the diffusion network.
        unshuffle: working resolution of the diffusion network (H / unshuffle).
        feature_stride: resolution of the base decoder features (H / feature_stride).
        hidden: width of the branch.
        blocks: number of residual blocks.
    """

    def __init__(self, in_channels: int, out_channels: int = 32, unshuffle: int = 4, feature_stride: int = 2,
                 hidden: int = 64, blocks: int = 2):
        super().__init__()
        if unshuffle < feature_stride or unshuffle % feature_stride or not _is_pow2(unshuffle // feature_stride):
            raise ValueError(f"unshuffle ({unshuffle}) must be feature_stride ({feature_stride}) times a power of 2")
        self.unshuffle = unshuffle
        self.feature_stride = feature_stride
        # receptive field radius in working-resolution positions: down convs (<= 1), merge (1), blocks (2
        # each), output conv (1); used as the halo of strip-wise evaluation
        self.radius = 3 + 2 * blocks
        pix = 3 * unshuffle * unshuffle
        down = []
        c = in_channels
        for _ in range(int(math.log2(unshuffle // feature_stride))):
            down += [nn.Conv2d(c, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True)]
            c = hidden
        self.down = nn.Sequential(*down, nn.Conv2d(c, hidden, 1))
        self.merge = nn.Conv2d(hidden + pix, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[_ConvBlock(hidden) for _ in range(blocks)])
        self.to_features = nn.Conv2d(hidden, out_channels, 1)
        self.to_image = nn.Conv2d(out_channels, pix, 3, padding=1)

    def forward(self, base_features: Tensor, x_base: Tensor) -> tuple[Tensor, Tensor]:
        r = self.unshuffle
        f = self.down(base_features)
        xb = F.pixel_unshuffle(x_base, r)
        if f.shape[-2:] != xb.shape[-2:]:
            raise ValueError(
                f"base features {tuple(base_features.shape[-2:])} do not match the image "
                f"{tuple(x_base.shape[-2:])} at stride {r}: pad the image and the features consistently"
            )
        h = self.blocks(F.leaky_relu(self.merge(torch.cat([f, xb], dim=1)), 0.1))
        features = self.to_features(h)
        x_c = x_base + F.pixel_shuffle(self.to_image(features), r)
        return features, x_c


    def forward_strips(self, base_features: Tensor, x_base: Tensor, rows: int = 256) -> tuple[Tensor, Tensor]:
        """:meth:`forward` on horizontal strips of ``rows`` pixels (plus a halo covering the receptive
        field, so the result equals the whole-image one up to float rounding). Bounds the branch's
        intermediate activations (hidden channels at 1/4 resolution: ~0.5 GB each at 3840x2160)."""
        H = x_base.shape[-2]
        if H <= max(self.unshuffle, rows // self.unshuffle * self.unshuffle):
            return self.forward(base_features, x_base)
        s = self.feature_stride
        return self.forward_source(lambda a, b: (base_features[..., a // s:b // s, :], x_base[..., a:b, :]), H, rows)

    def forward_source(self, source: Callable[[int, int], tuple[Tensor, Tensor]], height: int,
                       rows: int = 256) -> tuple[Tensor, Tensor]:
        """Strip-wise :meth:`forward` on inputs made on demand: ``source(a, b)`` returns the base features
        and base reconstruction of image rows ``[a, b)`` (``a``, ``b`` multiples of ``unshuffle``). Decoding
        of large images synthesises them per strip, so the full-resolution base features never exist.
        The outputs are written into preallocated tensors (no second copy from concatenation)."""
        r = self.unshuffle
        rows = max(r, rows // r * r)
        halo = (self.radius + 1) * r
        feats = images = None
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            a, b = max(0, top - halo), min(height, bottom + halo)
            f, x_c = self.forward(*source(a, b))
            if feats is None:
                feats = f.new_empty((*f.shape[:2], height // r, f.shape[-1]))
                images = x_c.new_empty((*x_c.shape[:2], height, x_c.shape[-1]))
            feats[..., top // r:bottom // r, :] = f[..., (top - a) // r:(bottom - a) // r, :]
            images[..., top:bottom, :] = x_c[..., top - a:bottom - a, :]
            del f, x_c
        return feats, images


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def block_means(x: Tensor, factor: int) -> Tensor:
    """Low-frequency content: means over ``factor`` x ``factor`` blocks (H and W multiples of ``factor``)."""
    return F.avg_pool2d(x, factor) if factor > 1 else x


def deviation_loss(x0_pred: Tensor, x_c: Tensor, bound: float, factor: int) -> Tensor:
    """Mean squared excess of the low-frequency deviation of ``x0_pred`` from ``x_c`` over ``bound``.

    Low frequency = block means over ``factor`` x ``factor`` pixels, the quantity that sampling guidance
    bounds. ``x_c`` is detached: this loss shapes the diffusion output, not the consistency branch (which
    has its own MSE loss).
    """
    d = block_means(x0_pred - x_c.detach(), factor)
    return F.relu(d.abs() - bound).pow(2).mean()


class ConsistencyGuidance:
    """Sampling-time guidance ``x0 -> x0'`` keeping the low-frequency deviation from ``x_c`` within bound.

    With ``d`` the deviation of the block means (``factor`` x ``factor``) of ``x0`` from those of ``x_c``,
    the excess ``e = d - clamp(d, -bound, bound)`` is removed: ``x0' = x0 - strength * up(e)``, ``up``
    being bilinear upsampling. A deviation inside the bound is left alone (the diffusion model may add
    detail and texture); only the excess of the block means moves, smoothly, so high-frequency detail is
    never removed. Everything but the final subtraction runs at 1/factor^2 of the pixels, which matters
    because guidance runs on the whole image at every step.

    Args:
        x_c: consistency reconstruction of the whole image.
        strength: 0 = no guidance, 1 = full projection into the bound.
        bound: allowed deviation of block means (diffusion range units; 0.02 ~ 2.5/255).
        factor: block size; patch boxes given to :meth:`__call__` must be aligned to it.
    """

    def __init__(self, x_c: Tensor, strength: float = 1.0, bound: float = 0.02, factor: int = 8):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"guidance strength must be in [0, 1], got {strength}")
        if bound < 0:
            raise ValueError("guidance bound must be >= 0")
        self.x_c_means = block_means(x_c, factor)
        self.strength = strength
        self.bound = bound
        self.factor = factor

    def __call__(self, x0: Tensor, box: tuple[int, int, int, int] | None = None) -> Tensor:
        """Guide a prediction of the whole image, or of the region ``box = (top, left, h, w)``."""
        if self.strength == 0:
            return x0
        k = self.factor
        ref = self.x_c_means
        if box is not None:
            top, left, h, w = box
            if top % k or left % k or h % k or w % k:
                raise ValueError(f"patch {box} is not aligned to the guidance block size {k}")
            ref = ref[..., top // k:(top + h) // k, left // k:(left + w) // k]
        d = block_means(x0, k).sub_(ref)
        excess = d.sub_(d.clamp(-self.bound, self.bound)).mul_(self.strength)
        if k > 1:
            excess = F.interpolate(excess, scale_factor=float(k), mode="bilinear", align_corners=False)
        return x0.sub_(excess)  # x0 is a fresh prediction owned by the sampler
