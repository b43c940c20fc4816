"""Tiny random CGDM parts shared by the diffusion-decoder tests (test_diffusion*, test_boundary*,
test_fusion*, test_online*, test_model*). Small enough that a test runs in well under a second."""

from __future__ import annotations

import numpy as np
import torch

from cgdm.codec import BaseCodec
from cgdm.diffusion_decoder import CGDMDecoder, DecoderConfig
from cgdm.model import CGDM
from cgdm.sampling_options import SamplingOptions

TINY_ARCH = {"channels": (8, 16), "emb_dim": 16, "consistency_channels": 8, "consistency_hidden": 8,
             "consistency_blocks": 1}


def tiny_base(seed: int = 0) -> BaseCodec:
    torch.manual_seed(seed)
    base = BaseCodec(N=16, M=24, num_rates=2, syntax_dim=8)
    base.update(force=True)
    return base.eval()


def tiny_decoder(seed: int = 1, **overrides) -> CGDMDecoder:
    """Random decoder whose output layers are *not* zero, so every input visibly changes the output."""
    torch.manual_seed(seed)
    cfg = DecoderConfig(**{"num_rates": 2, "feature_channels": 16, "syntax_dim": 8, **TINY_ARCH, **overrides})
    dec = CGDMDecoder(cfg)
    dec.update(force=True)  # the SFF stream's range-coder tables (no-op without a stream)
    return dec.eval()


def tiny_cgdm(seed: int = 1, options: SamplingOptions | None = None, boundary: bool = True,
              base: BaseCodec | None = None, **overrides) -> CGDM:
    options = options or SamplingOptions(steps=2, tile=64, overlap=16)
    return CGDM(base or tiny_base(), tiny_decoder(seed, **overrides), options, boundary=boundary, batch=2)


def test_image(h: int = 80, w: int = 112, seed: int = 0) -> np.ndarray:
    """Smooth image with some texture (random noise alone would make every metric degenerate)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 80 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)], axis=-1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


test_image.__test__ = False  # not a pytest test
