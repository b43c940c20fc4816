"""CGDM = base codec (:mod:`cgdm.codec`) + diffusion decoder (:mod:`cgdm.diffusion_decoder`).

* :class:`CGDM` (``nn.Module``): a frozen :class:`~cgdm.codec.BaseCodec` plus a
  :class:`~cgdm.diffusion_decoder.CGDMDecoder` plus the weight-free sampler settings
  (:class:`~cgdm.sampling_options.SamplingOptions`). ``compress(image, rate_idx) -> bytes`` and
  ``decompress(bytes) -> image`` use the ``.cgdm`` container (:mod:`cgdm.bitstream`).
* The checkpoint loaders it is built from: :func:`load_base`, :func:`load_decoder` (and
  :func:`base_lambdas`, :func:`state_dict_sha256`).

Its workflow codec is :class:`cgdm.harness.cgdm_codecs.CGDMCodec`; its command line is :mod:`cgdm.cli_cgdm`.

The ablation switches (:mod:`cgdm.variants`) act here as follows: ``no_consistency`` and ``no_sff`` come
with their decoder checkpoint; ``no_boundary`` (the ``boundary`` argument) samples independent
non-overlapping patches with the same weights. Each is written into the file's header flags, and the
sampler settings into its ``decoder`` section, so a file decodes the same way wherever it is decoded.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cgdm import bitstream as bs
from cgdm.boundary import Box, Tiling, sample_global, sample_independent
from cgdm.consistency import ConsistencyGuidance
from cgdm.decode_checks import check_decode_resources
from cgdm.diffusion_decoder import DECODER_ARCH, CGDMDecoder, DecoderConfig
from cgdm.sampling_options import SamplingOptions
from cgdm.tensors import image_to_tensor, pad_to, tensor_to_image
from cgdm.variants import Variant
from cgdm.zoo import CheckpointError, load_checkpoint, resolve_model, weights_sha256

__all__ = [
    "CGDM",
    "load_base",
    "load_decoder",
    "state_dict_sha256",
]

MODEL_ID = "cgdm"


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
                    progress: bool = False, sff: Tensor | None = None) -> Tensor:
        """Diffusion post-processing of one decoded image: ``x_hat`` (1, 3, H, W) in [0, 1] -> [0, 1].
        ``sff``: the decoded SFF stream (:meth:`sff_vector`), for decoders that have one."""
        syntax = self.decoder.fusion_syntax(syntax, sff)
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
                            progress: bool = False, sff: Tensor | None = None) -> Tensor:
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
        return self._sample(xb, feat, guide, dec.fusion_syntax(syntax_hat, sff), rate_idx, options, progress,
                            (H, W))

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
    def sff_vector(self, x: Tensor, x_hat: Tensor) -> Tensor | None:
        """The SFF stream's vector (B, dim) for image ``x`` and its base reconstruction ``x_hat`` (both in
        [0, 1]) as the decoder will decode it; None for decoders without a stream."""
        stream = self.decoder.sff_stream
        return None if stream is None else stream(x * 2 - 1, x_hat.clamp(0, 1) * 2 - 1)[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, rate_idx: int, **kwargs) -> Tensor:
        """Decoder output for ``x`` (1, 3, H, W) in [0, 1] without entropy coding (same pixels as a
        round trip through bytes: the base forward pass in eval mode equals its decompress)."""
        out = self.base(x, rate_idx)
        return self.postprocess(out["x_hat"], out["features"], out["syntax"], rate_idx,
                                sff=self.sff_vector(x, out["x_hat"]), **kwargs)

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

            enc = online_compress(self, x, rate_idx, steps=online_steps, options=options,
                                  **online_kwargs)["compressed"]
        else:
            enc = self.base.compress(x, rate_idx)
        h, w = image.shape[:2]
        header = bs.CGDMHeader(MODEL_ID, self.weights_hash, w, h, rate_idx,
                               self._flags(h, w, options, online_steps > 0))
        st = enc["strings"]
        sections = {"main": st["y"][0], "hyper": st["z"][0], "syntax": st["syntax"][0], "decoder": options.pack()}
        if self.decoder.sff_stream is not None:
            # the stream describes the image against the base reconstruction the decoder will have: the
            # coded latents decoded (after online optimisation these are not the analysis transform's)
            with torch.no_grad():
                x_hat = self.base.decompress({k: v[:1] for k, v in st.items()}, rate_idx, (h, w),
                                             features=False)["x_hat"]
                sections["sff"] = self.decoder.sff_stream.compress(x * 2 - 1, x_hat * 2 - 1)[0]
        return bs.write_cgdm(header, sections)

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
        stream = self.decoder.sff_stream
        missing = {"main", "hyper", "syntax", "decoder"} - set(sections)
        if stream is not None and "sff" not in sections:
            missing.add("sff")
        if missing:
            raise bs.CorruptedFile(f"corrupted file: missing section(s) {sorted(missing)}")
        if stream is None and "sff" in sections:
            raise bs.CorruptedFile("corrupted file: an 'sff' section, but this decoder has no SFF stream")
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
        # the SFF stream first: a few symbols, and a damaged one is refused before the image work
        sff = None if stream is None else stream.decompress([sections["sff"]]).to(self.device)
        strings = {"y": [sections["main"]], "z": [sections["hyper"]], "syntax": [sections["syntax"]]}
        if self.base.synthesis_strip_rows(self.base.latent_shapes(size)[0]) is not None:
            # large image: synthesis and consistency branch strip by strip (memory bounded by the strip)
            lat = self.base.decompress(strings, header.rate_idx, size, synthesize=False)
            out = self.postprocess_latents(lat.pop("y_hat"), lat["syntax_hat"], size, header.rate_idx, options,
                                           boundary=file_variant.boundary, progress=progress, sff=sff)
        else:
            dec = self.base.decompress(strings, header.rate_idx, size)
            # pop: postprocess frees the large base outputs once the consistency branch has used them
            out = self.postprocess(dec.pop("x_hat"), dec.pop("features"), dec["syntax"], header.rate_idx, options,
                                   boundary=file_variant.boundary, progress=progress, sff=sff)
        return tensor_to_image(out)
