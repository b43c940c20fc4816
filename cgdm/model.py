"""CGDM = base codec (:mod:`cgdm.codec`) + diffusion decoder, with the ablation switches.

Two objects, one concept each:

* :class:`CGDMDecoder` (``nn.Module``): the learned post-processor: consistency branch
  (:mod:`cgdm.consistency`), conditional U-Net (:mod:`cgdm.diffusion.unet`) and SFF
  (:mod:`cgdm.fusion`). Trained by :mod:`cgdm.train_diffusion`; saved alone.
* :class:`CGDM` (``nn.Module``): a frozen :class:`~cgdm.codec.BaseCodec` plus a :class:`CGDMDecoder`
  plus the weight-free sampler settings. ``compress(image, rate_idx) -> bytes`` and
  ``decompress(bytes) -> image`` use the ``.cgdm`` container (:mod:`cgdm.bitstream`).

Its workflow codec is :class:`cgdm.harness.cgdm_codecs.CGDMCodec`; its command line is :mod:`cgdm.cli_cgdm`.

Ablation switches and where they act:

==================  ==========================================================  ======================
switch              effect                                                      where recorded
==================  ==========================================================  ======================
``no_consistency``  no consistency branch: no consistency features, no          decoder checkpoint
                    consistency loss, no sampling guidance, no fusion            + ``NO_CONSISTENCY``
``no_sff``          fixed fusion (gate 0.5), the syntax vector is unused         decoder checkpoint
                                                                                 + ``NO_SFF``
``no_boundary``     independent non-overlapping patches, independent noise      ``NO_BOUNDARY`` (decode
                                                                                 option, same weights)
==================  ==========================================================  ======================

Decoding settings (steps, t0, seed, tile, overlap, guidance) are stored in the file's ``decoder``
section (:class:`SamplingOptions`, 16 bytes), so a file decodes the same way wherever it is decoded.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cgdm import bitstream as bs
from cgdm.boundary import Box, Tiling, sample_global, sample_independent
from cgdm.consistency import ConsistencyBranch, ConsistencyGuidance
from cgdm.decode_checks import check_decode_resources
from cgdm.diffusion.resshift import ResShiftSampler, ResShiftSchedule
from cgdm.diffusion.scheduler import DDIMSampler, NoiseSchedule
from cgdm.diffusion.unet import ConditionalUNet
from cgdm.fusion import SyntaxFeatureFusion
from cgdm.tensors import image_to_tensor, pad_to, tensor_to_image  # also importable from here, as before
from cgdm.zoo import CheckpointError, load_checkpoint, resolve_model, weights_sha256

__all__ = [
    "CGDM",
    "DECODER_ARCH",
    "VARIANTS",
    "CGDMDecoder",
    "DecoderConfig",
    "SamplingOptions",
    "Variant",
    "load_base",
    "load_decoder",
    "state_dict_sha256",
]

DECODER_ARCH = "cgdm-decoder"
MODEL_ID = "cgdm"


# ---------------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """Which CGDM components are on. ``consistency`` and ``sff`` change the trained decoder;
    ``boundary`` only changes decoding."""

    consistency: bool = True
    sff: bool = True
    boundary: bool = True

    @classmethod
    def from_name(cls, name: str) -> Variant:
        """``full``, ``no_consistency``, ``no_sff``, ``no_boundary`` or a ``+``-joined combination."""
        v = cls()
        for part in str(name).split("+"):
            part = part.strip()
            if part == "full":
                continue
            key = part.removeprefix("no_")
            if not part.startswith("no_") or key not in ("consistency", "sff", "boundary"):
                raise ValueError(f"unknown CGDM variant {name!r}; use one of {sorted(VARIANTS)} (or join with '+')")
            v = replace(v, **{key: False})
        return v

    @property
    def name(self) -> str:
        off = [f"no_{k}" for k in ("consistency", "sff", "boundary") if not getattr(self, k)]
        return "+".join(off) or "full"

    @property
    def flags(self) -> int:
        return ((0 if self.consistency else bs.NO_CONSISTENCY) | (0 if self.sff else bs.NO_SFF)
                | (0 if self.boundary else bs.NO_BOUNDARY))

    @classmethod
    def from_flags(cls, flags: int) -> Variant:
        return cls(consistency=not flags & bs.NO_CONSISTENCY, sff=not flags & bs.NO_SFF,
                   boundary=not flags & bs.NO_BOUNDARY)


VARIANTS = {name: Variant.from_name(name) for name in ("full", "no_consistency", "no_sff", "no_boundary")}


# ---------------------------------------------------------------------------------------------------
# the learned decoder
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# sampling options (the file's decoder section)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingOptions:
    """How a file is decoded; written into its ``decoder`` section.

    Args:
        steps: sampler steps (denoiser evaluations), 1..255.
        t0: start timestep (< the decoder's num_train_timesteps); None = the decoder's default start.
        seed: decode seed (uint32): all sampling noise comes from a generator seeded with it.
        tile: patch size in pixels (multiple of the decoder's padding multiple, 16 by default).
        overlap: patch overlap in pixels (globally uniform mode).
        guidance: consistency-guidance strength in [0, 1] (stored in 1/255 units).
        bound: allowed low-frequency deviation from the consistency reconstruction (stored in 1e-4 units).
        eta: scale of the sampler's fresh noise per step in [0, 1] (stored in 1/255 units): 1 = the
            residual-shifting posterior (or DDPM-like DDIM), 0 = deterministic steps after the start noise.
    """

    steps: int = 4
    t0: int | None = None
    seed: int = 0
    tile: int = 512
    overlap: int = 64
    guidance: float = 1.0
    bound: float = 0.02
    eta: float = 1.0

    # version 1 (DDIM decoders, eta 0) had no eta byte; t0 = 0xFFFF stores None
    _STRUCTS = {1: struct.Struct(">BBHIHHBH"), 2: struct.Struct(">BBHIHHBHB")}
    VERSION = 2
    _T0_DEFAULT = 0xFFFF

    def __post_init__(self):
        if not 1 <= self.steps <= 255:
            raise ValueError(f"steps must be in 1..255, got {self.steps}")
        if self.t0 is not None and (not 0 <= self.t0 < self._T0_DEFAULT or self.t0 < self.steps - 1):
            raise ValueError(f"t0 must be >= steps - 1 and below 65535, got t0={self.t0}, steps={self.steps}")
        if not 0 <= self.seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be a 32-bit unsigned integer, got {self.seed}")
        if not 1 <= self.tile <= 0xFFFF or not 0 <= self.overlap < self.tile:
            raise ValueError(f"need 0 <= overlap < tile <= 65535, got tile={self.tile}, overlap={self.overlap}")
        if not 0.0 <= self.guidance <= 1.0:
            raise ValueError(f"guidance must be in [0, 1], got {self.guidance}")
        if not 0.0 <= self.bound <= 6.5535:
            raise ValueError(f"bound must be in [0, 6.5535], got {self.bound}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def quantized(self) -> SamplingOptions:
        """The options as they come back from a file (guidance and bound rounded to their units)."""
        return SamplingOptions.unpack(self.pack())

    def pack(self) -> bytes:
        t0 = self._T0_DEFAULT if self.t0 is None else self.t0
        return self._STRUCTS[self.VERSION].pack(self.VERSION, self.steps, t0, self.seed, self.tile, self.overlap,
                                                round(self.guidance * 255), round(self.bound * 1e4),
                                                round(self.eta * 255))

    @classmethod
    def unpack(cls, data: bytes) -> SamplingOptions:
        version = data[0] if data else None
        layout = cls._STRUCTS.get(version)
        if layout is None:
            raise bs.UnsupportedVersion(f"decoder section version {version} is unknown to this build "
                                        f"(reads {sorted(cls._STRUCTS)}); upgrade cgdm-suite")
        if len(data) != layout.size:
            raise bs.CorruptedFile(f"decoder section v{version} has {len(data)} bytes, expected {layout.size}")
        _, steps, t0, seed, tile, overlap, g, b, *eta = layout.unpack(data)
        try:
            return cls(steps, None if t0 == cls._T0_DEFAULT else t0, seed, tile, overlap, g / 255, b / 1e4,
                       eta[0] / 255 if eta else 0.0)
        except ValueError as exc:
            raise bs.CorruptedFile(f"invalid decoder settings in file: {exc}") from exc


# ---------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------
def state_dict_sha256(module: nn.Module) -> str:
    """Weights hash of a module (:func:`cgdm.zoo.weights_sha256` of its state dict)."""
    return weights_sha256(module.state_dict())


def load_base(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Base codec checkpoint (or zoo name) -> ``(BaseCodec, meta)``, hash-verified (:mod:`cgdm.zoo`)."""
    return resolve_model(path, device)


def base_lambdas(meta: dict) -> list[float] | None:
    """Training lambda per rate index recorded in a base checkpoint's meta, if any."""
    for d in (meta, meta.get("params") or {}, meta.get("train") or {}):
        if isinstance(d, dict) and d.get("lambdas"):
            return [float(v) for v in d["lambdas"]]
    return None


def load_decoder(path: str | Path, device: str = "cpu") -> tuple[CGDMDecoder, dict]:
    """Decoder checkpoint written by :mod:`cgdm.train_diffusion` -> ``(CGDMDecoder, meta)``, hash-verified."""
    ckpt = load_checkpoint(path, arch=DECODER_ARCH)
    meta = ckpt["meta"]
    decoder = CGDMDecoder(DecoderConfig.from_dict(meta["config"]))
    try:
        decoder.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {DECODER_ARCH} with {meta['config']}: {exc}") from exc
    return decoder.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------------
# the codec
# ---------------------------------------------------------------------------------------------------
def _to_unit_range(out: Tensor, size: tuple[int, int]) -> Tensor:
    """Sampler output in [-1, 1] -> [0, 1], cropped to ``size``; in place: the sampler's output is ours,
    and three image-sized temporaries are 1.2 GB at 7680x4320."""
    H, W = size
    return out[..., :H, :W].add_(1).div_(2).clamp_(0, 1)


class CGDM(nn.Module):
    """Base codec + diffusion decoder.

    Args:
        base: a :class:`~cgdm.codec.BaseCodec` (CDFs updated; frozen here).
        decoder: a :class:`CGDMDecoder` built for ``base`` (same ``num_rates``, feature channels, syntax size).
        options: default :class:`SamplingOptions` for files written by :meth:`compress`.
        boundary: False = the ``no_boundary`` ablation for files written by :meth:`compress`.
        batch: patches per network call when tiling (memory vs speed; does not change the output).
        lambdas: the base codec's training lambda per rate index (the default trade-off of online mode).
    """

    def __init__(self, base: nn.Module, decoder: CGDMDecoder, options: SamplingOptions | None = None,
                 boundary: bool = True, batch: int = 4, lambdas: list[float] | None = None):
        super().__init__()
        c = decoder.config
        if (c.num_rates, c.feature_channels, c.syntax_dim) != (base.num_rates, base.N, base.syntax_dim):
            raise ValueError(
                f"decoder was built for a base codec with num_rates={c.num_rates}, N={c.feature_channels}, "
                f"syntax_dim={c.syntax_dim}; this base has {base.num_rates}, {base.N}, {base.syntax_dim}: "
                "train the decoder on this base checkpoint")
        self.base = base.eval().requires_grad_(False)
        self.decoder = decoder.eval().requires_grad_(False)
        self.options = options or SamplingOptions()
        self.boundary = boundary
        self.batch = batch
        self.lambdas = list(lambdas) if lambdas else None
        self._check_options(self.options)
        self.weights_hash = hashlib.sha256(
            bytes.fromhex(state_dict_sha256(base)) + bytes.fromhex(state_dict_sha256(decoder))).digest()[:8]

    @classmethod
    def from_checkpoints(cls, base: str | Path, decoder: str | Path, device: str = "cpu", **kwargs) -> CGDM:
        """Load a base checkpoint (:mod:`cgdm.train`) and a decoder checkpoint (:mod:`cgdm.train_diffusion`)."""
        dec, _ = load_decoder(decoder, device)
        base_model, base_meta = load_base(base, device)
        kwargs.setdefault("lambdas", base_lambdas(base_meta))
        return cls(base_model, dec, **kwargs).to(device)

    @property
    def variant(self) -> Variant:
        return replace(self.decoder.config.variant, boundary=self.boundary)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def _check_options(self, options: SamplingOptions) -> None:
        """ValueError if this decoder cannot run ``options`` (tile alignment, steps and start)."""
        m = self.decoder.multiple
        if options.tile % m or options.overlap % m:
            raise ValueError(f"tile ({options.tile}) and overlap ({options.overlap}) must be multiples of {m}")
        self.decoder.sampler(options.steps, options.t0, options.eta)

    # -- the decoder path ---------------------------------------------------------------------------
    @torch.no_grad()
    def postprocess(self, x_hat: Tensor, features: Tensor, syntax: Tensor, rate_idx: int,
                    options: SamplingOptions | None = None, boundary: bool | None = None,
                    progress: bool = False) -> Tensor:
        """Diffusion post-processing of one decoded image: ``x_hat`` (1, 3, H, W) in [0, 1] -> [0, 1]."""
        options = options or self.options
        boundary = self.boundary if boundary is None else boundary
        self._check_options(options)
        dec = self.decoder
        H, W = x_hat.shape[-2:]
        m = dec.multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        s = dec.config.feature_stride
        xb = pad_to(x_hat.clamp(0, 1) * 2 - 1, Hp, Wp)
        if not boundary:
            return self._sample_local(xb, pad_to(features, Hp // s, Wp // s), syntax, rate_idx, options, progress,
                                      (H, W))
        feat, x_c = dec.condition(pad_to(features, Hp // s, Wp // s), xb, strip=options.tile)
        # the base features (N channels at half resolution: ~0.5 GB at 3840x2160) are not needed for
        # sampling; drop this reference so callers that hand them over (decompress) free them now
        del features, x_hat
        guide = self._guidance(x_c, options)
        del x_c  # only its block means (in guide) are needed from here on
        return self._sample(xb, feat, guide, syntax, rate_idx, options, progress, (H, W))

    def _guidance(self, x_c: Tensor | None, options: SamplingOptions) -> ConsistencyGuidance | None:
        if x_c is None or options.guidance <= 0:
            return None
        # block size 2 x unshuffle (8 px for the quick model): coarse enough that the texture the
        # diffusion model adds is left alone; the training deviation loss uses the same blocks
        return ConsistencyGuidance(x_c, options.guidance, options.bound, factor=2 * self.decoder.config.unshuffle)

    @torch.no_grad()
    def postprocess_latents(self, y_hat: Tensor, syntax_hat: Tensor, size: tuple[int, int], rate_idx: int,
                            options: SamplingOptions | None = None, boundary: bool | None = None,
                            progress: bool = False) -> Tensor:
        """:meth:`postprocess` of an image given by its decoded latents (``BaseCodec.decompress(...,
        synthesize=False)``), for large images: the base synthesis and the consistency branch run together
        strip by strip (strips of ``BaseCodec.synthesis_strip_rows``), so neither the base features (N
        channels at 1/2 resolution: 2.1 GB at 7680x4320) nor the branch's activations ever exist for the
        whole image. Equals ``postprocess(base.synthesize(...))`` up to float summation order."""
        options = options or self.options
        boundary = self.boundary if boundary is None else boundary
        self._check_options(options)
        if not boundary:
            # the no_boundary ablation conditions each patch on its own base features, which this
            # strip-wise path never holds for the whole image
            raise bs.ResourceLimit("the no_boundary ablation decodes only images whose base synthesis runs in "
                                   "one piece (cgdm.codec.SYNTHESIS_STRIP_PIXELS); this one is larger")
        dec, base = self.decoder, self.base
        H, W = size
        m, s = dec.multiple, dec.config.feature_stride
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        rows = base.synthesis_strip_rows(tuple(y_hat.shape[-2:])) or Hp
        xb = y_hat.new_empty((y_hat.shape[0], 3, Hp, Wp))
        with_features = dec.consistency is not None

        def source(a: int, b: int) -> tuple[Tensor | None, Tensor]:
            # rows [a, b) of the decoder's padded input: synthesised rows below H, replicate padding beyond,
            # exactly as postprocess pads decompress's outputs
            e = min(b, H)
            x, f = base.synthesize_rows(y_hat, syntax_hat, a, e + e % 2, features=with_features)
            x = pad_to(x[..., :e - a, :W].clamp_(0, 1).mul_(2).sub_(1), b - a, Wp)
            xb[..., a:b, :] = x
            if f is not None:
                f = pad_to(f[..., : -(-W // 2)], (b - a) // s, Wp // s)
            return f, x

        if with_features:
            feat, x_c = dec.consistency.forward_source(source, Hp, rows)
        else:
            feat = x_c = None
            for top in range(0, Hp, rows):
                source(top, min(Hp, top + rows))
        guide = self._guidance(x_c, options)
        del x_c
        return self._sample(xb, feat, guide, syntax_hat.flatten(1), rate_idx, options, progress, (H, W))

    def _sample_local(self, xb: Tensor, features: Tensor, syntax: Tensor, rate_idx: int, options: SamplingOptions,
                      progress: bool, size: tuple[int, int]) -> Tensor:
        """``no_boundary``: non-overlapping patches, each with its own noise *and* its own conditioning
        (consistency branch and guidance computed from the patch's base features and reconstruction
        alone), as a decoder that knew nothing of its neighbours would do."""
        dec = self.decoder
        s = dec.config.feature_stride
        rate = torch.tensor([rate_idx], device=xb.device)
        local: dict = {}  # the current patch's conditioning; patches are sampled one after the other

        def condition(box: Box) -> tuple:
            if local.get("box") != box:
                tp, lf, h, w = box
                f, x_c = dec.condition(features[..., tp // s:(tp + h) // s, lf // s:(lf + w) // s],
                                       xb[..., tp:tp + h, lf:lf + w])
                local.update(box=box, features=f, guide=self._guidance(x_c, options))
            return local["features"], local["guide"]

        def predict(x_t: Tensor, t: int, boxes: list) -> Tensor:
            (tp, lf, h, w), = boxes
            f, _ = condition(boxes[0])
            return dec(x_t, t, xb[..., tp:tp + h, lf:lf + w], rate, f, syntax)

        def guide(x0: Tensor, box: Box) -> Tensor:
            g = condition(box)[1]
            return x0 if g is None else g(x0)

        sampler, gen = self._sampler(options, xb.device)
        return _to_unit_range(sample_independent(sampler, xb, predict, gen, options.tile, guide, progress), size)

    def _sampler(self, options: SamplingOptions, device: torch.device) -> tuple:
        """``(sampler, generator)`` of a decode: the decoder's sampler and the seeded decode generator."""
        sampler = self.decoder.sampler(options.steps, options.t0, options.eta)
        return sampler, torch.Generator(device=device).manual_seed(options.seed)

    def _sample(self, xb: Tensor, feat: Tensor | None, guide: ConsistencyGuidance | None, syntax: Tensor,
                rate_idx: int, options: SamplingOptions, progress: bool, size: tuple[int, int]) -> Tensor:
        """Globally uniform diffusion sampling (boundary control) from the padded base reconstruction ``xb``
        in [-1, 1] -> [0, 1], cropped to ``size`` (``no_boundary`` is :meth:`_sample_local`)."""
        dec = self.decoder
        m = dec.multiple
        r = dec.config.unshuffle
        rate = torch.tensor([rate_idx], device=xb.device)

        def predict(x_t: Tensor, t: int, boxes: list) -> Tensor:
            n = x_t.shape[0]
            base = torch.cat([xb[..., tp:tp + h, lf:lf + w] for tp, lf, h, w in boxes])
            f = None if feat is None else torch.cat(
                [feat[..., tp // r:(tp + h) // r, lf // r:(lf + w) // r] for tp, lf, h, w in boxes])
            return dec(x_t, t, base, rate.expand(n), f, syntax.expand(n, -1))

        sampler, gen = self._sampler(options, xb.device)
        tiling = Tiling(options.tile, options.overlap, self.batch, align=m)
        return _to_unit_range(sample_global(sampler, xb, predict, gen, tiling, guide, progress), size)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, rate_idx: int, **kwargs) -> Tensor:
        """Decoder output for ``x`` (1, 3, H, W) in [0, 1] without entropy coding (same pixels as a
        round trip through bytes: the base forward pass in eval mode equals its decompress)."""
        out = self.base(x, rate_idx)
        return self.postprocess(out["x_hat"], out["features"], out["syntax"], rate_idx, **kwargs)

    # -- bytes ---------------------------------------------------------------------------------------
    def _flags(self, height: int, width: int, options: SamplingOptions, online: bool) -> int:
        flags = bs.DIFFUSION | self.variant.flags | (bs.ONLINE if online else 0)
        if self.boundary and (height > options.tile or width > options.tile):
            flags |= bs.TILED
        return flags

    def compress(self, image: np.ndarray, rate_idx: int, online_steps: int = 0,
                 options: SamplingOptions | None = None, **online_kwargs: Any) -> bytes:
        """Encode uint8 (H, W, 3) at rate index ``rate_idx`` to ``.cgdm`` bytes.

        ``online_steps > 0`` refines the latent and the syntax for this image first (:mod:`cgdm.online`).
        """
        options = (options or self.options).quantized()
        self._check_options(options)
        x = image_to_tensor(image, self.device)
        rate_idx = int(rate_idx)
        if not 0 <= rate_idx < self.base.num_rates:
            raise ValueError(f"rate index {rate_idx} out of range: this model has rates 0..{self.base.num_rates - 1}")
        if online_steps > 0:
            from cgdm.online import online_compress  # lazy: cgdm.online imports CompressAI (seconds)

            enc = online_compress(self, x, rate_idx, steps=online_steps, **online_kwargs)["compressed"]
        else:
            enc = self.base.compress(x, rate_idx)
        h, w = image.shape[:2]
        header = bs.CGDMHeader(MODEL_ID, self.weights_hash, w, h, rate_idx,
                               self._flags(h, w, options, online_steps > 0))
        st = enc["strings"]
        return bs.write_cgdm(header, {"main": st["y"][0], "hyper": st["z"][0], "syntax": st["syntax"][0],
                                      "decoder": options.pack()})

    def decode_extra_bytes(self, height: int, width: int) -> int:
        """Memory (bytes) the diffusion post-processing must hold at once on top of the base decode,
        counted low so that a refusal is always right: the padded base image, the sample being denoised
        and the blended prediction (3 float images, 36 B per pixel)."""
        m = self.decoder.multiple
        return 36 * (-(-height // m) * m) * (-(-width // m) * m)

    def decompress(self, data: bytes, progress: bool = False, max_pixels: int | None = bs.MAX_PIXELS) -> np.ndarray:
        """Decode ``.cgdm`` bytes written by :meth:`compress` (with these weights) to uint8 (H, W, 3).

        ``max_pixels``: refuse files declaring larger images (None: no limit). Everything that can be
        checked without decoding is checked first (:func:`cgdm.decode_checks.check_decode_resources`), and the
        entropy decoder must end exactly at the end of each stream (:mod:`cgdm.rans_guard`); errors are
        :class:`~cgdm.bitstream.BitstreamError`."""
        header, sections = bs.read_cgdm(data)
        bs.check_pixel_budget(header, max_pixels)
        bs.check_model(header, MODEL_ID, self.weights_hash, self.base.num_rates)
        missing = {"main", "hyper", "syntax", "decoder"} - set(sections)
        if missing:
            raise bs.CorruptedFile(f"corrupted file: missing section(s) {sorted(missing)}")
        if not header.flags & bs.DIFFUSION:
            raise bs.CorruptedFile("corrupted file: a 'cgdm' file must have the DIFFUSION flag")
        file_variant = Variant.from_flags(header.flags)
        ours = self.decoder.config.variant
        if (file_variant.consistency, file_variant.sff) != (ours.consistency, ours.sff):
            raise bs.ModelMismatch(
                f"file was encoded for variant {replace(file_variant, boundary=True).name!r} but the decoder "
                f"checkpoint is {ours.name!r}: decode with the matching decoder checkpoint")
        options = SamplingOptions.unpack(sections["decoder"])
        try:
            self._check_options(options)
        except ValueError as exc:
            raise bs.CorruptedFile(f"corrupted file: {exc}") from exc
        # features=False: large images never hold the whole feature map (strip-wise path below)
        check_decode_resources(self.base, header, sections, max_pixels, features=False,
                               extra_bytes=self.decode_extra_bytes(header.height, header.width))
        size = (header.height, header.width)
        strings = {"y": [sections["main"]], "z": [sections["hyper"]], "syntax": [sections["syntax"]]}
        if self.base.synthesis_strip_rows(self.base.latent_shapes(size)[0]) is not None:
            # large image: synthesis and consistency branch strip by strip (memory bounded by the strip)
            lat = self.base.decompress(strings, header.rate_idx, size, synthesize=False)
            out = self.postprocess_latents(lat.pop("y_hat"), lat["syntax_hat"], size, header.rate_idx, options,
                                           boundary=file_variant.boundary, progress=progress)
        else:
            dec = self.base.decompress(strings, header.rate_idx, size)
            # pop: postprocess frees the large base outputs once the consistency branch has used them
            out = self.postprocess(dec.pop("x_hat"), dec.pop("features"), dec["syntax"], header.rate_idx, options,
                                   boundary=file_variant.boundary, progress=progress)
        return tensor_to_image(out)
