"""Images <-> ``.cgdm`` files with the base codec: high-level API, ``cgdm compress|decompress|info``,
and the workflow codec class :class:`CGDMBaseCodec`.

A .cgdm file of the base codec holds three sections: ``main`` (y), ``hyper`` (z) and ``syntax``
(see :mod:`cgdm.bitstream`). Full CGDM (diffusion decoder) is :mod:`cgdm.model`'s: ``cgdm compress``
with ``--decoder`` and ``cgdm decompress`` of a file with model id ``cgdm`` hand their arguments to
``cgdm.model.compress_main`` / ``decompress_main``.

torch is imported inside the functions that need it, so ``cgdm info`` answers without loading it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from baselines.base import Codec, CodecUnavailable
from cgdm.bitstream import (
    HEADER_SIZE,
    MAX_PIXELS,
    SECTION_TYPES,
    BitstreamError,
    CGDMHeader,
    CorruptedFile,
    ModelMismatch,
    ResourceLimit,
    check_model,
    check_pixel_budget,
    flag_names,
    read_cgdm,
    write_cgdm,
)
from cgdm.imageio import ImageReadError, load_image, save_png

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_ID",
    "BaseCoder",
    "CGDMBaseCodec",
    "check_decode_resources",
    "compress_main",
    "decompress_main",
    "estimate_decode_bytes",
    "image_to_tensor",
    "info_main",
    "tensor_to_image",
]

#: model identifier written in the header of base-codec files
MODEL_ID = "cgdm-base-vr-mshp"
_STREAMS = {"main": "y", "hyper": "z", "syntax": "syntax"}  # section name -> BaseCodec stream name


def image_to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    import torch

    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"expected a uint8 (H, W, 3) array, got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}; read files with cgdm.imageio.load_image")
    return torch.from_numpy(image.copy()).to(device).permute(2, 0, 1)[None].float().div(255.0)


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), rounding to nearest."""
    import torch

    return x[0].clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# -- checks before decoding a file ------------------------------------------------------------------
def _min_bits_per_symbol(entropy_model) -> list[float]:
    """Per distribution (CDF row) of a CompressAI entropy model: the fewest bits any symbol can cost,
    log2(2^16 / largest quantised frequency)."""
    import torch

    cdf = entropy_model._quantized_cdf.long()
    lengths = entropy_model._cdf_length.long()
    freqs = cdf[:, 1:] - cdf[:, :-1]
    valid = torch.arange(freqs.shape[1])[None, :] < (lengths[:, None] - 1)
    top = torch.where(valid, freqs, torch.zeros_like(freqs)).amax(1).clamp_min(1).double()
    return (16 - torch.log2(top)).tolist()


def min_stream_bytes(model, height: int, width: int) -> dict[str, int]:
    """A sound lower bound on the length of each stream of a ``height`` x ``width`` image, from the
    model's CDF tables: rANS encoding multiplies its state by at least 2^16 / freq >= 2^c_min per symbol
    (less a rounding loss < 5e-5 bits) and the final flush writes 64 bits, so a stream of n symbols has
    at least n * (c_min - 1e-4) - 64 bits. Usually weak (a flat image is legitimately tiny) but free."""
    (hy, wy), (hz, wz) = model.latent_shapes((height, width))
    z_cost = sum(_min_bits_per_symbol(model.entropy_bottleneck)) * hz * wz
    y_cost = max(0.0, min(_min_bits_per_symbol(model.gaussian_conditional)) - 1e-4) * model.M * hy * wy
    s_cost = sum(_min_bits_per_symbol(model.syntax.entropy_bottleneck))
    n = {"hyper": model.N * hz * wz, "main": model.M * hy * wy, "syntax": model.syntax_dim}
    bits = {"hyper": z_cost - 1e-4 * n["hyper"], "main": y_cost, "syntax": s_cost - 1e-4 * n["syntax"]}
    return {name: max(8, 4 * int((b - 64) // 32)) for name, b in bits.items()}


def estimate_decode_bytes(model, height: int, width: int, features: bool = False) -> int:
    """Memory (bytes) that :meth:`BaseCodec.decompress` plus the conversion to uint8 must hold at once,
    deliberately counted low so that a refusal is always right (the real peak is higher; see
    ``benchmarks/decode.py``): the float output and the uint8 image (15 B per pixel), the features
    (N / 4 floats per pixel) if kept, per latent symbol (M / 256 per padded pixel) the decoded value,
    mean and scale (12 B) and the index and value lists CompressAI builds in Python (>= 16 B), and
    300 MB for the runtime and weights."""
    from cgdm.codec import PAD_MULTIPLE

    hp, wp = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    total = 15 * height * width + 28 * model.M * hp * wp // 256
    if features:
        total += model.N * hp * wp
    return total + (300 << 20)


def available_memory() -> int | None:
    """Bytes this process may still allocate: the smaller of the free address space under RLIMIT_AS and
    the system's MemAvailable (None when neither is known)."""
    limits = []
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as f:
                vm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:")), 0)
            limits.append(soft - vm)
    except (ImportError, OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
        if avail is not None:
            limits.append(avail)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_decode_resources(model, header: CGDMHeader, sections: dict[str, bytes], max_pixels: int | None = MAX_PIXELS,
                           extra_bytes: int = 0, features: bool = False) -> None:
    """Everything that can be said about a file before decoding it, cheapest first; raises
    :class:`~cgdm.bitstream.ResourceLimit` or :class:`~cgdm.bitstream.CorruptedFile`.

    1. the pixel budget (:func:`~cgdm.bitstream.check_pixel_budget`);
    2. every stream is whole 32-bit words (CompressAI's coder writes nothing else) and at least as long
       as the fewest bytes that can hold the declared image's symbols (:func:`min_stream_bytes`);
    3. the memory the decode must hold at once (:func:`estimate_decode_bytes` + ``extra_bytes``, for the
       diffusion decoder) fits in :func:`available_memory`.
    """
    check_pixel_budget(header, max_pixels)
    missing = [name for name in _STREAMS if name not in sections]
    if missing:
        raise CorruptedFile(f"file lacks the sections {missing} that the base codec needs")
    for name in _STREAMS:
        n = len(sections[name])
        if n < 8 or n % 4:
            raise CorruptedFile(f"section {name!r} has {n} bytes; a range-coded stream is at least two 4-byte "
                                "words and a whole number of them")
    for name, least in min_stream_bytes(model, header.height, header.width).items():
        if len(sections[name]) < least:
            raise CorruptedFile(f"corrupted file: section {name!r} has {len(sections[name])} bytes, but a "
                                f"{header.width}x{header.height} image needs at least {least} with this model")
    need = estimate_decode_bytes(model, header.height, header.width, features) + extra_bytes
    free = available_memory()
    if free is not None and need > free:
        raise ResourceLimit(f"decoding the {header.width}x{header.height} image needs at least {need / 2**30:.1f} GiB, "
                            f"but only {free / 2**30:.1f} GiB are available (free memory / address-space limit)")


class BaseCoder:
    """A loaded base codec plus the identity written into / checked against file headers."""

    def __init__(self, model, meta: dict | None = None, device: str | torch.device = "cpu"):
        """``meta``: the checkpoint's meta; None for an in-memory model (its weights are hashed here)."""
        import torch

        if meta is None:
            from cgdm.zoo import weights_sha256

            meta = {"weights_sha256": weights_sha256(model.state_dict()), "steps": 0}
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.weights_hash = bytes.fromhex(meta["weights_sha256"])[:8]

    @classmethod
    def from_checkpoint(cls, spec: str | os.PathLike, device: str | torch.device = "cpu") -> BaseCoder:
        """``spec``: a checkpoint path or a zoo name (:mod:`cgdm.zoo`)."""
        from cgdm.zoo import resolve_model

        model, meta = resolve_model(spec, device)
        return cls(model, meta, device)

    @property
    def num_rates(self) -> int:
        return self.model.num_rates

    def encode(self, image: np.ndarray, rate_idx: int, flags: int = 0) -> bytes:
        """uint8 (H, W, 3) -> .cgdm bytes."""
        if not 0 <= int(rate_idx) < self.num_rates:
            raise ValueError(f"rate index {rate_idx} out of range: this model has rates 0..{self.num_rates - 1}")
        x = image_to_tensor(image, self.device)
        h, w = x.shape[-2:]
        header = CGDMHeader(MODEL_ID, self.weights_hash, width=w, height=h, rate_idx=int(rate_idx), flags=flags)
        header.validate()  # size limits, before spending time on the network
        enc = self.model.compress(x, int(rate_idx))
        sections = {name: enc["strings"][stream][0] for name, stream in _STREAMS.items()}
        return write_cgdm(header, sections)

    def decode_tensors(self, data: bytes, max_pixels: int | None = MAX_PIXELS,
                       features: bool = True) -> tuple[CGDMHeader, dict]:
        """.cgdm bytes -> ``(header, {"x_hat", "features", "syntax"})``.

        Every check that needs no decoding happens first (:func:`check_decode_resources`: pixel budget
        ``max_pixels``, stream lengths, memory); the entropy decoder then runs inside each stream and
        must end exactly at its end (:mod:`cgdm.rans_guard`). Errors are
        :class:`~cgdm.bitstream.BitstreamError`."""
        header, sections = read_cgdm(data)
        check_pixel_budget(header, max_pixels)
        check_model(header, MODEL_ID, self.weights_hash, self.num_rates)
        check_decode_resources(self.model, header, sections, max_pixels, features=features)
        strings = {stream: [sections[name]] for name, stream in _STREAMS.items()}
        dec = self.model.decompress(strings, header.rate_idx, (header.height, header.width), features=features)
        return header, dec

    def decode(self, data: bytes, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """.cgdm bytes -> uint8 (H, W, 3). ``max_pixels``: refuse larger declared images (None: no limit)."""
        return tensor_to_image(self.decode_tensors(data, max_pixels, features=False)[1]["x_hat"])


# -- workflow codec -----------------------------------------------------------------------------------
class CGDMBaseCodec(Codec):
    """The base codec alone (no diffusion decoder) as a workflow codec.

    Config entry::

        cgdm_base:
          class: cgdm.coder.CGDMBaseCodec
          rates: [0, 1, 2, 3]          # rate indices of the variable-rate model
          models: {base: cgdm_base}    # a trained model of the config's models: section (or a zoo name)
    """

    kind = "cgdm"
    extension = ".cgdm"

    def __init__(self, name: str, models: dict[str, str] | None = None, device: str = "cpu", **params):
        super().__init__(name, models=models, device=device, **params)
        self._coder: BaseCoder | None = None

    def _load(self) -> BaseCoder:
        if self._coder is None:
            spec = self.models.get("base")
            if not spec:
                raise CodecUnavailable(f"codec {self.name!r}: needs models: {{base: <trained model>}} in the config")
            from cgdm.zoo import CheckpointError

            try:
                self._coder = BaseCoder.from_checkpoint(spec, self.device)
            except CheckpointError as exc:
                raise CodecUnavailable(f"codec {self.name!r}: {exc}") from exc
        return self._coder

    def check_available(self) -> None:
        self._load()

    @property
    def version(self) -> str:
        import cgdm

        return f"cgdm-suite {cgdm.__version__} ({MODEL_ID})"

    @property
    def weights(self) -> str:
        meta = self._load().meta
        return f"trained-here:{meta['steps']}:{meta['weights_sha256'][:12]}"

    def encode(self, image: np.ndarray, rate) -> bytes:
        return self._load().encode(image, int(rate))

    def decode(self, data: bytes) -> np.ndarray:
        return self._load().decode(data)


# -- CLI ----------------------------------------------------------------------------------------------
def _fail(message: str) -> int:
    print(f"cgdm: error: {message}", file=sys.stderr)
    return 2


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BitstreamError(f"{path}: cannot read ({exc.strerror})") from exc


def _full_cgdm(command: str):
    """``cgdm.model``'s CLI function for full-CGDM files (imported only when needed)."""
    import importlib

    return getattr(importlib.import_module("cgdm.model"), command)


def compress_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="cgdm compress", description="Encode an image with the CGDM base codec; "
                                "with --decoder, with full CGDM (see `cgdm compress --decoder X --help`).")
    p.add_argument("input", help="image (PNG/JPEG/TIFF/...; gray, RGBA, 16-bit and palette are converted, "
                                 "see cgdm.imageio)")
    p.add_argument("output", help="output .cgdm file")
    p.add_argument("--model", required=True, help="checkpoint path or zoo name")
    p.add_argument("--rate", type=int, required=True, help="rate index (0 = lowest rate)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decoder", help="diffusion decoder checkpoint: encode for full CGDM (cgdm.model)")
    if any(a == "--decoder" or a.startswith("--decoder=") for a in argv):
        return _full_cgdm("compress_main")(argv)
    args = p.parse_args(argv)
    from cgdm.zoo import CheckpointError

    try:
        image = load_image(args.input)
        coder = BaseCoder.from_checkpoint(args.model, args.device)
        t0 = time.perf_counter()
        data = coder.encode(image, args.rate)
        seconds = time.perf_counter() - t0
    except (ImageReadError, CheckpointError, CodecUnavailable, ValueError) as exc:
        return _fail(str(exc))
    write_and_report(args.output, data, image.shape, args.rate, seconds)
    return 0


def write_and_report(output, data: bytes, shape: tuple[int, ...], rate: int, seconds: float) -> None:
    """Write a compressed file and print its size as measured on disk (shared by both compress CLIs)."""
    from baselines.base import write_bitstream

    info = write_bitstream(output, data, shape)
    print(f"{output}: {shape[1]}x{shape[0]}, rate {rate}, {info.num_bytes} bytes, "
          f"{info.bpp:.4f} bpp, {seconds:.2f} s")


def _max_pixels(text: str) -> int | None:
    """``--max-pixels``: a positive integer, or 0 / ``none`` for no limit."""
    if text.strip().lower() in ("0", "none"):
        return None
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return value


def add_max_pixels_argument(p: argparse.ArgumentParser) -> None:
    """``--max-pixels``, shared with the full-CGDM CLI (cgdm.model)."""
    p.add_argument("--max-pixels", type=_max_pixels, default=MAX_PIXELS, metavar="N",
                   help=f"refuse files that declare more than N pixels (default {MAX_PIXELS}, Pillow's "
                        "MAX_IMAGE_PIXELS; 0 = no limit). Checked before anything is allocated")


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line (``cgdm decompress`` never prints a traceback)."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"decoding failed ({type(exc).__name__}: {text[:500]}); the file is damaged or was not written by this model"


def decompress_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="cgdm decompress", description="Decode a .cgdm file to PNG. Files of full "
                                "CGDM (diffusion decoder) are passed on to cgdm.model with all their options. "
                                "Exit status 2 (one line on stderr) for any file that cannot be decoded.")
    p.add_argument("input", help=".cgdm file")
    p.add_argument("output", help="output PNG")
    p.add_argument("--model", help="checkpoint path or zoo name (default: the zoo model whose weights hash "
                                   "is in the file header)")
    p.add_argument("--device", default="cpu")
    add_max_pixels_argument(p)
    # the full-CGDM decoder has more options (--decoder, ...): keep them until the header says who decodes
    args, extra = p.parse_known_args(argv)
    try:
        data = _read_bytes(args.input)
        header, _ = read_cgdm(data)
        # before importing torch or loading a model: a 22-byte header can declare 65535 x 65535
        check_pixel_budget(header, args.max_pixels)
    except BitstreamError as exc:
        return _fail(str(exc))
    if header.model_id != MODEL_ID:
        if not any(a == "--decoder" or a.startswith("--decoder=") for a in extra):
            return _fail(f"{args.input} is a full-CGDM file (model {header.model_id!r}): pass the diffusion decoder "
                         "checkpoint that encoded it with --decoder (and the base codec with --model)")
        return _full_cgdm("decompress_main")(argv)
    if extra:
        # one line like every other refusal: the file, not the command line, decides which options apply
        return _fail(f"unrecognized arguments for a base-codec file: {' '.join(extra)} ({args.input} was written "
                     f"by the base codec {MODEL_ID!r}, which has no diffusion decoder options)")
    import warnings

    # CompressAI's import-time torch.jit deprecation notice is not ours to report
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    from cgdm import zoo

    try:
        spec = args.model
        if spec is None:
            entry = zoo.find_by_weights_hash(header.weights_hash)
            if entry is None:
                raise ModelMismatch(f"{args.input} was written by weights {header.weights_hash.hex()}, which are "
                                    "not in the zoo: pass the checkpoint that encoded it with --model")
            spec = entry.name
        coder = BaseCoder.from_checkpoint(spec, args.device)
        t0 = time.perf_counter()
        image = coder.decode(data, max_pixels=args.max_pixels)
        seconds = time.perf_counter() - t0
        save_png(args.output, image)
    except (BitstreamError, zoo.CheckpointError, CodecUnavailable) as exc:
        return _fail(str(exc))
    except MemoryError:
        return _fail(f"out of memory decoding the {header.width}x{header.height} image; free memory or lower "
                     "the limit that stopped it")
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: exit 2 and one line, never a traceback
        return _fail(one_line(exc))
    print(f"{args.output}: {image.shape[1]}x{image.shape[0]}, {seconds:.2f} s")
    return 0


def info_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cgdm info", description="Print the header and section sizes of a .cgdm file.")
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        data = _read_bytes(args.file)
        header, sections = read_cgdm(data)
    except BitstreamError as exc:
        return _fail(str(exc))
    pixels = header.width * header.height
    print(f"file:          {args.file}")
    print(f"format:        .cgdm version {header.version}")
    print(f"model:         {header.model_id} (weights {header.weights_hash.hex()})")
    print(f"image:         {header.width}x{header.height}")
    print(f"rate index:    {header.rate_idx}")
    print(f"flags:         {header.flags:#06x} {' '.join(flag_names(header.flags)) or '(none)'}")
    print(f"total:         {len(data)} bytes, {8 * len(data)} bits, {8 * len(data) / pixels:.5f} bpp")
    payload = sum(len(v) for v in sections.values())
    overhead = len(data) - payload
    print(f"  {'section':<9} {'bytes':>9} {'bits':>10} {'bpp':>9} {'share':>7}")
    for name in sorted(sections, key=SECTION_TYPES.__getitem__):
        n = len(sections[name])
        print(f"  {name:<9} {n:>9} {8 * n:>10} {8 * n / pixels:>9.5f} {100 * n / len(data):>6.2f}%")
    print(f"  {'container':<9} {overhead:>9} {8 * overhead:>10} {8 * overhead / pixels:>9.5f} "
          f"{100 * overhead / len(data):>6.2f}%  (header {HEADER_SIZE}, framing, CRC32)")
    return 0
