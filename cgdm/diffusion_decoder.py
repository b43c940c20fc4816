"""CGDM's diffusion decoder, the learned post-processor: :class:`CGDMDecoder` (``nn.Module``) and its
architecture, :class:`DecoderConfig`.

The decoder is the consistency branch (:mod:`cgdm.consistency`), the conditional U-Net
(:mod:`cgdm.diffusion.unet`) and SFF (:mod:`cgdm.fusion`), with the noise schedule of its diffusion
formulation (:mod:`cgdm.diffusion.resshift` or :mod:`cgdm.diffusion.scheduler`). It is trained by
:mod:`cgdm.train_diffusion` and saved alone (checkpoint architecture :data:`DECODER_ARCH`); its loader is
:func:`cgdm.model.load_decoder`, and :class:`cgdm.model.CGDM` runs it on a base codec's output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from cgdm.consistency import ConsistencyBranch
from cgdm.diffusion.resshift import ResShiftSampler, ResShiftSchedule
from cgdm.diffusion.scheduler import DDIMSampler, NoiseSchedule
from cgdm.diffusion.unet import ConditionalUNet
from cgdm.fusion import SyntaxFeatureFusion
from cgdm.variants import Variant

__all__ = ["DECODER_ARCH", "CGDMDecoder", "DecoderConfig"]

DECODER_ARCH = "cgdm-decoder"


@dataclass
class DecoderConfig:
    """Architecture of :class:`CGDMDecoder` (stored in its checkpoint). Defaults: quick profile."""

    num_rates: int
    feature_channels: int               # channels N of the base decoder features
    syntax_dim: int = 16
    feature_stride: int = 2             # base features are at H / feature_stride
    channels: tuple[int, ...] = (32, 64, 96)
    unshuffle: int = 4
    emb_dim: int = 128
    consistency_channels: int = 32
    consistency_hidden: int = 64
    consistency_blocks: int = 2
    consistency: bool = True
    sff: bool = True
    formulation: str = "resshift"       # "resshift" (cgdm.diffusion.resshift) or "ddim" (scheduler.py)
    schedule: str = "linear"            # ddim only: beta schedule
    num_train_timesteps: int = 4
    kappa: float = 0.2                  # resshift only: noise scale of the start y + kappa eps
    refine_channels: int = 0            # full-resolution output head (cgdm.diffusion.unet)

    def __post_init__(self):
        if self.formulation not in ("resshift", "ddim"):
            raise ValueError(f"unknown diffusion formulation {self.formulation!r}; use 'resshift' or 'ddim'")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DecoderConfig:
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        # checkpoints written before the residual-shifting formulation are DDIM decoders
        d.setdefault("formulation", "ddim")
        return cls(**d)

    @property
    def variant(self) -> Variant:
        return Variant(consistency=self.consistency, sff=self.sff)


class CGDMDecoder(nn.Module):
    """Consistency branch + conditional U-Net with SFF. Works in the diffusion range [-1, 1].

    With ``consistency=False`` there is no branch: the U-Net sees only the base reconstruction, rate and
    timestep, and there is nothing to fuse. With ``sff=False`` the fusion is the fixed average.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        c = config
        if c.consistency:
            self.consistency = ConsistencyBranch(c.feature_channels, c.consistency_channels, c.unshuffle,
                                                 c.feature_stride, c.consistency_hidden, c.consistency_blocks)
            fusion = SyntaxFeatureFusion(c.channels[0], c.consistency_channels, c.syntax_dim, syntax_driven=c.sff)
        else:
            self.consistency = None
            fusion = None
        self.unet = ConditionalUNet(c.num_rates, c.consistency_channels if c.consistency else 0, c.channels,
                                    c.unshuffle, c.emb_dim, fusion, c.refine_channels)
        if c.formulation == "resshift":
            self.schedule = ResShiftSchedule(c.num_train_timesteps, c.kappa)
        else:
            self.schedule = NoiseSchedule(c.num_train_timesteps, c.schedule)

    def training_input(self, x0: Tensor, x_base: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """The network's input at step(s) ``t`` during training. ResShift: the marginal between the clean
        image and the base reconstruction that the sampler visits; DDIM: the noised clean image (which the
        sampler, started from the noised base reconstruction, never visits: kept for old checkpoints)."""
        if isinstance(self.schedule, ResShiftSchedule):
            return self.schedule.add_noise(x0, x_base, noise, t)
        return self.schedule.add_noise(x0, noise, t)

    def sampler(self, steps: int, t0: int | None, eta: float) -> ResShiftSampler | DDIMSampler:
        """The sampler of this decoder's formulation; ``t0=None`` = its default start (ResShift: the last
        trained step, the exact start; DDIM: step 250). Raises ValueError for settings it cannot run."""
        if isinstance(self.schedule, ResShiftSchedule):
            return ResShiftSampler(self.schedule, steps, t0, eta)
        return DDIMSampler(self.schedule, steps, 250 if t0 is None else t0, eta)

    @property
    def multiple(self) -> int:
        """Image sides are padded to a multiple of this before denoising."""
        return self.unet.multiple

    def condition(self, base_features: Tensor, x_base: Tensor, strip: int | None = None
                  ) -> tuple[Tensor | None, Tensor | None]:
        """``(consistency features, x_c)`` or ``(None, None)`` without the branch. ``strip``: evaluate in
        horizontal strips of that many rows (decoding of large images; same result up to rounding)."""
        if self.consistency is None:
            return None, None
        if strip:
            return self.consistency.forward_strips(base_features, x_base, strip)
        return self.consistency(base_features, x_base)

    def forward(self, x_t: Tensor, t: Tensor | int, x_base: Tensor, rate_idx: Tensor | int,
                features: Tensor | None, syntax: Tensor | None) -> Tensor:
        """Predict ``x0`` from ``x_t`` (all at the same resolution, a multiple of :attr:`multiple`)."""
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).long()
        t = t.expand(b) if t.dim() == 0 else t
        r = torch.as_tensor(rate_idx, device=x_t.device).long()
        r = r.expand(b) if r.dim() == 0 else r
        if not self.config.sff:
            syntax = None  # no_sff: the syntax must not influence the output
        return self.unet(x_t, t, x_base, r, features, syntax)
