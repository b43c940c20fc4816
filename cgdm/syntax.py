"""Neural syntax: a tiny per-image side stream that adapts the decoder.

After Wang et al., "Neural Data-Dependent Transform for Learned Image Compression" (CVPR 2022). The
encoder summarises the whole latent in a short global vector (``syntax_dim`` numbers), quantises it and
entropy-codes it with its own :class:`~compressai.entropy_models.EntropyBottleneck` as a separate
stream (a few dozen bits per image). On the decoder side a small network turns the decoded vector into
the weights and bias of a 1x1 convolution that is applied, as a residual, to the features of the last
synthesis stage: the decoder's transform becomes image-dependent at negligible rate.

The decoded vector (``syntax_hat``) is also exposed as is, because the fusion module of the diffusion
decoder conditions on it.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.ops import quantize_ste
from torch import Tensor, nn

__all__ = ["NeuralSyntax", "code_vector"]


def code_vector(entropy_bottleneck: EntropyBottleneck, s: Tensor, training: bool) -> tuple[Tensor, Tensor]:
    """A global vector ``s`` (B, D, 1, 1) through its entropy bottleneck -> ``(s_hat, likelihoods)``.

    Training: the likelihoods use additive noise (CompressAI's relaxation) while the decoder sees the
    straight-through rounded vector, so it is trained on the values it will get at test time.
    Eval: both are the dequantised values, identical to the entropy bottleneck's ``decompress``.
    """
    s_noisy, likelihoods = entropy_bottleneck(s, training=training)
    if training:
        medians = entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        return quantize_ste(s - medians) + medians, likelihoods
    return s_noisy, likelihoods


class NeuralSyntax(nn.Module):
    """Syntax encoder (latent -> vector), its entropy model, and the decoder-side parameter generator.

    Args:
        latent_channels: channels M of the latent ``y``.
        feature_channels: channels N of the synthesis features that are modulated.
        syntax_dim: length of the coded vector.
        pool_channels: how many leading latent channels are pooled (the rest is not looked at; the
            syntax is a coarse global summary, not a second copy of the latent).
        hidden: width of the parameter generator's hidden layer.
    """

    def __init__(self, latent_channels: int, feature_channels: int, syntax_dim: int = 16,
                 pool_channels: int | None = None, hidden: int = 64):
        super().__init__()
        pool_channels = latent_channels if pool_channels is None else pool_channels
        if not 0 < pool_channels <= latent_channels:
            raise ValueError(f"pool_channels must be in 1..{latent_channels}, got {pool_channels}")
        self.pool_channels = pool_channels
        self.syntax_dim = syntax_dim
        self.feature_channels = feature_channels

        # mean and standard deviation of each pooled channel: first- and second-order statistics are
        # what a data-dependent 1x1 transform can use (a mean alone misses contrast/texture energy).
        self.encoder = nn.Sequential(
            nn.Linear(2 * pool_channels, hidden),
            nn.LeakyReLU(inplace=True),
            nn.Linear(hidden, syntax_dim),
        )
        self.entropy_bottleneck = EntropyBottleneck(syntax_dim)
        n = feature_channels
        self.generator = nn.Sequential(
            nn.Linear(syntax_dim, hidden),
            nn.LeakyReLU(inplace=True),
            nn.Linear(hidden, n * n + n),
        )
        # Zero init: the dynamic 1x1 conv starts as the identity residual, so an untrained syntax
        # branch leaves the base decoder unchanged (and training starts from a plain hyperprior).
        nn.init.zeros_(self.generator[-1].weight)
        nn.init.zeros_(self.generator[-1].bias)

    # -- encoder side ------------------------------------------------------------------------------
    def analyse(self, y: Tensor) -> Tensor:
        """Latent (B, M, h, w) -> unquantised syntax vector shaped (B, syntax_dim, 1, 1)."""
        y = y[:, : self.pool_channels]
        stats = torch.cat([y.mean(dim=(2, 3)), y.std(dim=(2, 3), correction=0)], dim=1)
        return self.encoder(stats)[:, :, None, None]

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(syntax_hat (B, D, 1, 1), likelihoods)`` (see :func:`code_vector`)."""
        return code_vector(self.entropy_bottleneck, self.analyse(y), self.training)

    def decompress(self, strings: list[bytes]) -> Tensor:
        return self.entropy_bottleneck.decompress(strings, (1, 1))

    # -- decoder side ------------------------------------------------------------------------------
    def modulate(self, features: Tensor, syntax_hat: Tensor) -> Tensor:
        """Apply the per-image 1x1 convolution generated from ``syntax_hat`` as a residual."""
        b, n, h, w = features.shape
        params = self.generator(syntax_hat.flatten(1))
        weight = params[:, : n * n].view(b, n, n)
        bias = params[:, n * n:].view(b, n, 1)
        out = torch.baddbmm(bias, weight, features.reshape(b, n, h * w))
        return features + out.view(b, n, h, w)
