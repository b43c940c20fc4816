"""Conditional denoising U-Net of the CGDM post-processor (the network only; no schedule, no sampler).

The network denoises at reduced resolution: the noisy image and the base reconstruction are
pixel-unshuffled by ``unshuffle`` (x4 by default: a 768x512 Kodak image becomes 192x128 positions with
48 channels) and everything runs there; the output is pixel-shuffled back. Measured on 2 CPU cores, a
0.6 M-parameter 48-channel U-Net in pixel space costs ~1.4 s per step on a Kodak image; at 1/4
resolution the same budget affords a deeper network and several steps.

Conditioning:

* **base reconstruction** (concatenated to the input, and the anchor of the output: the network predicts
  ``x0 = x_base + residual``, so an untrained or uncertain network stays at the decoded image);
* **consistency features** (optional, concatenated to the input and fused into the last decoder stage
  by the ``fusion`` module, see :mod:`cgdm.fusion`, and, with ``inner_fusion``, into every other decoder
  stage too, average-pooled to that stage's resolution);
* **rate index** (learned embedding: one network shared by all rate points);
* **timestep** (sinusoidal embedding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConditionalUNet", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim) (as in DDPM / diffusers)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ChannelNorm(nn.Module):
    """Layer norm over channels at each position.

    Not GroupNorm: GroupNorm's statistics span the whole spatial extent, so a patch would be normalised
    differently from the same region inside the full image and tiled decoding (:mod:`cgdm.boundary`)
    could not match untiled decoding. A per-position norm keeps the network local and
    translation-equivariant: a patch differs from the full image only within the receptive field of
    its border, which the blending window down-weights.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # one fused layer_norm over the last dim of the NHWC view (the network runs channels_last, where
        # this view is contiguous); several times faster on CPU than mean/var written out
        return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """Norm-SiLU-conv residual block with a scale/shift from the (time + rate) embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = ChannelNorm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = ChannelNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class ConditionalUNet(nn.Module):
    """Small conditional U-Net predicting the clean image ``x0``.

    Args:
        num_rates: number of rate indices of the base codec (size of the rate embedding table).
        feature_channels: channels of the conditioning features at the working resolution (0 = none).
        channels: width of each level, e.g. ``(32, 64, 96)``; each further level halves the resolution.
        unshuffle: pixel-unshuffle factor of the working resolution.
        emb_dim: width of the time/rate embedding.
        fusion: optional module ``(h, features, syntax) -> h`` applied to the last decoder stage (SFF).
        inner_fusion: optional modules of the same kind for the other decoder stages, deepest first
            (``len(channels) - 1`` of them, for widths ``channels[-1], ..., channels[1]``).
        refine_channels: width of a full-resolution head after the pixel shuffle (0 = none). Without it every
            output pixel of a ``unshuffle`` x ``unshuffle`` block comes from one low-resolution position, so
            detail the network adds (adversarial training asks for detail) is locked to that block grid.
    """

    def __init__(self, num_rates: int, feature_channels: int = 0, channels: tuple[int, ...] = (32, 64, 96),
                 unshuffle: int = 4, emb_dim: int = 128, fusion: nn.Module | None = None,
                 refine_channels: int = 0, inner_fusion: list[nn.Module] | None = None):
        super().__init__()
        if num_rates < 1:
            raise ValueError("num_rates must be >= 1")
        self.num_rates = num_rates
        self.unshuffle = unshuffle
        self.channels = tuple(channels)
        self.emb_dim = emb_dim
        self.feature_channels = feature_channels
        pix = 3 * unshuffle * unshuffle

        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.rate_emb = nn.Embedding(num_rates, emb_dim)

        c0 = channels[0]
        # input: noisy image + base reconstruction (+ consistency features), all at working resolution
        self.conv_in = nn.Conv2d(2 * pix + feature_channels, c0, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, c in enumerate(channels):
            cin = channels[i - 1] if i else c0
            self.down.append(ResBlock(cin, c, emb_dim))
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(channels[-1], channels[-1], emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channels))):
            # input: the level's own width (after mid / after the upsampling conv) + the skip
            self.up.append(ResBlock(2 * channels[i], channels[i], emb_dim))
            if i > 0:
                self.upsample.append(nn.Conv2d(channels[i], channels[i - 1], 3, padding=1))
        self.fusion = fusion
        if inner_fusion is not None and (fusion is None or len(inner_fusion) != len(channels) - 1):
            raise ValueError(f"inner_fusion needs a last-stage fusion and {len(channels) - 1} modules, one per "
                             "other decoder stage")
        self.inner_fusion = nn.ModuleList(inner_fusion) if inner_fusion is not None else None
        self.norm_out = ChannelNorm(c0)
        self.conv_out = nn.Conv2d(c0, pix, 3, padding=1)
        if refine_channels:
            # input: the low-resolution prediction and the noisy image at full resolution (the noise is the
            # sampler's source of texture); output: a residual, zero at init so training starts from the
            # pixel-shuffled prediction
            self.refine = nn.Sequential(nn.Conv2d(6, refine_channels, 3, padding=1), nn.SiLU(),
                                        nn.Conv2d(refine_channels, 3, 3, padding=1))
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)
        else:
            self.refine = None

    @property
    def multiple(self) -> int:
        """Height and width of the input must be multiples of this (pixel units)."""
        return self.unshuffle * 2 ** (len(self.channels) - 1)

    def forward(self, x_t: Tensor, t: Tensor, x_base: Tensor, rate_idx: Tensor,
                features: Tensor | None = None, syntax: Tensor | None = None) -> Tensor:
        """Predict ``x0`` (B, 3, H, W) from the noisy image ``x_t`` at step ``t`` (B,).

        ``features`` are at the working resolution (H / unshuffle); ``syntax`` (B, D) is only passed on
        to the fusion module.
        """
        m = self.multiple
        if x_t.shape[-2] % m or x_t.shape[-1] % m:
            raise ValueError(f"input size {tuple(x_t.shape[-2:])} must be a multiple of {m}; pad first")
        if (features is None) != (self.feature_channels == 0):
            raise ValueError("features must be given exactly when the network was built with feature_channels > 0")
        r = self.unshuffle
        parts = [F.pixel_unshuffle(x_t, r), F.pixel_unshuffle(x_base, r)]
        if features is not None:
            parts.append(features)
        # channels_last: faster oneDNN convolutions on CPU and contiguous per-pixel norms (ChannelNorm)
        h = self.conv_in(torch.cat(parts, dim=1).contiguous(memory_format=torch.channels_last))
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.rate_emb(rate_idx)

        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if self.inner_fusion is not None and j < len(self.inner_fusion):
                # stage j works at 1 / 2^(L-1-j) of the working resolution; the pooling windows line up
                # with the tiles, whose sides are multiples of `multiple`
                k = 2 ** (len(self.up) - 1 - j)
                h = self.inner_fusion[j](h, F.avg_pool2d(features, k), syntax)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        if self.fusion is not None:
            h = self.fusion(h, features, syntax)
        residual = self.conv_out(F.silu(self.norm_out(h))).contiguous()
        x0 = x_base + F.pixel_shuffle(residual, r)
        if self.refine is not None:
            x0 = x0 + self.refine(torch.cat([x0, x_t], dim=1))
        return x0
