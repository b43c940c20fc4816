"""Conditional patch discriminator for the decoder's adversarial loss (training only; never in a file).

Why adversarial: a denoiser trained with MSE alone predicts the posterior *mean*, a blurrier image than
the decoded one's original, so a few sampling steps with it cannot add realistic detail. A discriminator
that judges local patches (pix2pix's PatchGAN, as in HiFiC and MS-ILLM) asks for detail whose statistics
match real images', and it needs no downloaded weights, so it works offline.

It is *conditional*: it sees the base reconstruction next to the image it judges, so "realistic" means
"a plausible original of this decoded image", not any realistic texture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["PatchDiscriminator", "discriminator_loss", "generator_loss"]


class PatchDiscriminator(nn.Module):
    """Logit map (B, 1, H/8, W/8): is each ~46-pixel patch of ``x`` an original, given ``condition``?

    Args:
        channels: width of the first layer (doubled per layer).
        layers: stride-2 4x4 convolutions (each halves the resolution).
    """

    def __init__(self, channels: int = 32, layers: int = 3, in_channels: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        c_in = 2 * in_channels  # image + condition
        for i in range(layers):
            c_out = channels * 2**i
            # spectral norm: a 1-Lipschitz critic keeps the few CPU training steps stable (Miyato et al. 2018)
            mods += [spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        mods.append(spectral_norm(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        return self.net(torch.cat([x, condition], dim=1))


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``-log D(fake)`` (Goodfellow et al. 2014; HiFiC's choice)."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``-log D(real) - log(1 - D(fake))``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
