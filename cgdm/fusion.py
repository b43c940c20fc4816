"""Syntax-driven Feature Fusion (SFF).

The last decoder stage of the diffusion U-Net (``h``, realism-oriented) and the consistency features
(``c``, fidelity-oriented) are fused by a per-channel, per-position gate::

    gate = sigmoid(global(syntax) + local([h, c]))
    out  = (1 - gate) * h + gate * proj(c)

``global`` is a small MLP on the decoded neural-syntax vector: the encoder saw the whole image and the
syntax tells the decoder, per image, how much to trust the consistency features (e.g. more on text and
faces, less on foliage). ``local`` is a 3x3 convolution on both feature maps so the balance also varies
across the image.

With ``syntax_driven=False`` (the ``no_sff`` ablation) the fusion is fixed: ``gate = 0.5`` everywhere,
the syntax is not used and there are no gate parameters.

**The SFF stream** (:class:`SFFStream`, decoders with ``sff_stream_dim > 0``). The base codec's syntax is
trained for the base codec's own 1x1 modulation and knows nothing of the fusion. The SFF stream is the
"extra ultra-low-rate bitstream from the encoding end" that steers the fusion: a small encoder of the
decoder stage reads the original image *and* the base reconstruction it will be fused with (so it can
describe what the base codec lost: how much texture, where the consistency features should win),
summarises them in ``sff_stream_dim`` numbers, and an entropy bottleneck codes them as the file's own
``sff`` section. It is trained jointly with the fusion (the base codec frozen), its bits priced at the
base codec's lambda of the rate point. The fusion then reads the base syntax followed by this vector, at
every decoder stage of the U-Net (:class:`cgdm.diffusion.unet.ConditionalUNet`, ``inner_fusion``), not only
the last. ``no_sff`` has no stream: its files are smaller by exactly the ``sff`` section.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from torch import Tensor, nn

from cgdm.rans_guard import guard
from cgdm.syntax import code_vector

__all__ = ["SFFStream", "SyntaxFeatureFusion"]


class SyntaxFeatureFusion(nn.Module):
    """Fuse diffusion features ``h`` (B, C, H, W) and consistency features (B, F, H, W) under syntax control.

    Args:
        channels: channels ``C`` of the diffusion features (and of the output).
        feature_channels: channels ``F`` of the consistency features.
        syntax_dim: length of the decoded syntax vector.
        syntax_driven: False = the ``no_sff`` fixed fusion.
        hidden: width of the syntax MLP.
    """

    def __init__(self, channels: int, feature_channels: int, syntax_dim: int = 16, syntax_driven: bool = True,
                 hidden: int = 64):
        super().__init__()
        self.syntax_driven = syntax_driven
        self.syntax_dim = syntax_dim
        self.proj = nn.Conv2d(feature_channels, channels, 1)
        if syntax_driven:
            self.global_gate = nn.Sequential(nn.Linear(syntax_dim, hidden), nn.SiLU(), nn.Linear(hidden, channels))
            self.local_gate = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def gate(self, h: Tensor, c: Tensor, syntax: Tensor | None) -> Tensor:
        """The fusion weight of the consistency features, in (0, 1), broadcastable to ``h``."""
        if not self.syntax_driven:
            return torch.full((1, 1, 1, 1), 0.5, dtype=h.dtype, device=h.device)
        if syntax is None:
            raise ValueError("SFF needs the decoded syntax vector (B, syntax_dim)")
        syntax = syntax.reshape(syntax.shape[0], -1)
        if syntax.shape[1] != self.syntax_dim:
            raise ValueError(f"syntax vector has {syntax.shape[1]} values, SFF expects {self.syntax_dim}")
        g = self.global_gate(syntax.to(h.dtype))[:, :, None, None]
        return torch.sigmoid(g + self.local_gate(torch.cat([h, c], dim=1)))

    def forward(self, h: Tensor, features: Tensor, syntax: Tensor | None = None) -> Tensor:
        c = self.proj(features)
        g = self.gate(h, c, syntax)
        return (1 - g) * h + g * c


class SFFStream(nn.Module):
    """The SFF stream: encoder (image + base reconstruction -> ``dim`` numbers) and its entropy model.

    Args:
        dim: length of the coded vector.
        hidden: width of the encoder.

    The encoder is a 4x4 patchify convolution (stride 4) and a strided 3x3 convolution, then the mean and
    standard deviation of each channel over the whole image (a global summary of any size, like the base
    codec's syntax) and a two-layer MLP. Its input is ``x - x_base`` (what the base codec lost) and
    ``x_base``, both in [-1, 1].
    """

    def __init__(self, dim: int = 8, hidden: int = 32):
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(nn.Conv2d(6, hidden, 4, stride=4), nn.SiLU(),
                                      nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.entropy_bottleneck = EntropyBottleneck(dim)

    def analyse(self, x: Tensor, x_base: Tensor) -> Tensor:
        """Original and base reconstruction (B, 3, H, W) in [-1, 1] -> unquantised vector (B, dim, 1, 1)."""
        if x.shape != x_base.shape or x.shape[-2] < 4 or x.shape[-1] < 4:
            raise ValueError(f"the SFF stream needs an image and its base reconstruction of the same size, at "
                             f"least 4x4 (got {tuple(x.shape)} and {tuple(x_base.shape)})")
        f = self.features(torch.cat([x - x_base, x_base], dim=1))
        stats = torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3), correction=0)], dim=1)
        return self.head(stats)[:, :, None, None]

    def forward(self, x: Tensor, x_base: Tensor) -> tuple[Tensor, Tensor]:
        """``(vector (B, dim) as the decoder will get it, likelihoods)`` (:func:`cgdm.syntax.code_vector`)."""
        s_hat, likelihoods = code_vector(self.entropy_bottleneck, self.analyse(x, x_base), self.training)
        return s_hat.flatten(1), likelihoods

    def compress(self, x: Tensor, x_base: Tensor) -> list[bytes]:
        """One ``sff`` section payload per image."""
        return self.entropy_bottleneck.compress(self.analyse(x, x_base))

    def decompress(self, strings: list[bytes]) -> Tensor:
        """Payloads -> vectors (B, dim); equal to :meth:`forward`'s in eval mode. Each payload must hold
        exactly its ``dim`` symbols (:mod:`cgdm.rans_guard`), or :class:`~cgdm.bitstream.CorruptedFile`."""
        guard(self.entropy_bottleneck)
        return self.entropy_bottleneck.decompress(strings, (1, 1)).flatten(1)
