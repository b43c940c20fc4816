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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SyntaxFeatureFusion"]


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
