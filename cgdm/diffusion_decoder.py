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
from compressai.models.utils import update_registered_buffers
from torch import Tensor, nn

from cgdm.consistency import ConsistencyBranch
from cgdm.diffusion.resshift import ResShiftSampler, ResShiftSchedule
from cgdm.diffusion.scheduler import DDIMSampler, NoiseSchedule
from cgdm.diffusion.unet import ConditionalUNet
from cgdm.fusion import SFFStream, SyntaxFeatureFusion
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
    # length of the SFF stream (cgdm.fusion.SFFStream) that steers the fusion at every decoder stage;
    # 0 = none: the fusion reads the base codec's syntax at the last stage only (checkpoints before it)
    sff_stream_dim: int = 0

    def __post_init__(self):
        if self.formulation not in ("resshift", "ddim"):
            raise ValueError(f"unknown diffusion formulation {self.formulation!r}; use 'resshift' or 'ddim'")
        if self.sff_stream_dim < 0:
            raise ValueError(f"sff_stream_dim must be >= 0, got {self.sff_stream_dim}")

    @property
    def has_sff_stream(self) -> bool:
        """Whether files of this decoder carry an ``sff`` section (the stream needs SFF, so a fusion)."""
        return self.consistency and self.sff and self.sff_stream_dim > 0

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
    timestep, and there is nothing to fuse. With ``sff=False`` the fusion is the fixed average. With
    ``sff_stream_dim > 0`` (and SFF on) the encoder also sends the SFF stream (:attr:`sff_stream`), and the
    fusion, steered by it, acts at every decoder stage of the U-Net.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        c = config
        fusion = inner = None
        self.sff_stream = SFFStream(c.sff_stream_dim) if c.has_sff_stream else None
        if c.consistency:
            self.consistency = ConsistencyBranch(c.feature_channels, c.consistency_channels, c.unshuffle,
                                                 c.feature_stride, c.consistency_hidden, c.consistency_blocks)
            d = c.syntax_dim + (c.sff_stream_dim if c.has_sff_stream else 0)
            fusion = SyntaxFeatureFusion(c.channels[0], c.consistency_channels, d, syntax_driven=c.sff)
            if c.has_sff_stream:
                inner = [SyntaxFeatureFusion(ch, c.consistency_channels, d) for ch in reversed(c.channels[1:])]
        else:
            self.consistency = None
        self.unet = ConditionalUNet(c.num_rates, c.consistency_channels if c.consistency else 0, c.channels,
                                    c.unshuffle, c.emb_dim, fusion, c.refine_channels, inner)
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

    def fusion_syntax(self, syntax: Tensor, stream: Tensor | None) -> Tensor:
        """The vector the fusion reads: the base codec's ``syntax`` (B, D), followed by the decoded SFF
        ``stream`` (B, sff_stream_dim) for decoders that have one (None otherwise)."""
        syntax = syntax.reshape(syntax.shape[0], -1)
        if self.sff_stream is None:
            if stream is not None:
                raise ValueError("this decoder has no SFF stream, but a stream vector was given")
            return syntax
        if stream is None:
            raise ValueError("this decoder's fusion is steered by its SFF stream: pass the decoded stream "
                             "(the file's 'sff' section)")
        return torch.cat([syntax, stream.reshape(stream.shape[0], -1).to(syntax.dtype)], dim=1)

    def update(self, force: bool = False) -> None:
        """Build the SFF stream's range-coder tables (after training; a no-op without a stream)."""
        if self.sff_stream is not None:
            self.sff_stream.entropy_bottleneck.update(force=force)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # the SFF stream's CDF tables have data-dependent sizes: resize them to the stored ones first, as
        # CompressAI's models do (a state without them fails the strict load below with the missing keys)
        prefix = "sff_stream.entropy_bottleneck"
        if self.sff_stream is not None and f"{prefix}._quantized_cdf" in state_dict:
            update_registered_buffers(self.sff_stream.entropy_bottleneck, prefix,
                                      ["_quantized_cdf", "_offset", "_cdf_length"], state_dict, policy="resize")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

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
        """Predict ``x0`` from ``x_t`` (all at the same resolution, a multiple of :attr:`multiple`).
        ``syntax``: the fusion's vector, :meth:`fusion_syntax`."""
        b = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device).long()
        t = t.expand(b) if t.dim() == 0 else t
        r = torch.as_tensor(rate_idx, device=x_t.device).long()
        r = r.expand(b) if r.dim() == 0 else r
        if not self.config.sff:
            syntax = None  # no_sff: the syntax must not influence the output
        return self.unet(x_t, t, x_base, r, features, syntax)
