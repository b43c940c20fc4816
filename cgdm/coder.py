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
    SECTION_TYPES,
    BitstreamError,
    CGDMHeader,
    CorruptedFile,
    ModelMismatch,
    check_model,
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
    "compress_main",
    "decompress_main",
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

    def decode_tensors(self, data: bytes) -> tuple[CGDMHeader, dict]:
        """.cgdm bytes -> ``(header, {"x_hat", "features", "syntax"})``; every check happens before
        entropy decoding."""
        header, sections = read_cgdm(data)
        check_model(header, MODEL_ID, self.weights_hash, self.num_rates)
        missing = [name for name in _STREAMS if name not in sections]
        if missing:
            raise CorruptedFile(f"file lacks the sections {missing} that the base codec needs")
        for name in _STREAMS:
            # CompressAI's rANS coder writes whole 32-bit words; anything else would make it read past
            # the end of the string
            if len(sections[name]) < 4 or len(sections[name]) % 4:
                raise CorruptedFile(f"section {name!r} has {len(sections[name])} bytes; a range-coded stream is "
                                    "a positive number of 4-byte words")
        strings = {stream: [sections[name]] for name, stream in _STREAMS.items()}
        dec = self.model.decompress(strings, header.rate_idx, (header.height, header.width))
        return header, dec

    def decode(self, data: bytes) -> np.ndarray:
        """.cgdm bytes -> uint8 (H, W, 3)."""
        return tensor_to_image(self.decode_tensors(data)[1]["x_hat"])


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


def decompress_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="cgdm decompress", description="Decode a .cgdm file to PNG. Files of full "
                                "CGDM (diffusion decoder) are passed on to cgdm.model with all their options.")
    p.add_argument("input", help=".cgdm file")
    p.add_argument("output", help="output PNG")
    p.add_argument("--model", help="checkpoint path or zoo name (default: the zoo model whose weights hash "
                                   "is in the file header)")
    p.add_argument("--device", default="cpu")
    # the full-CGDM decoder has more options (--decoder, ...): keep them until the header says who decodes
    args, extra = p.parse_known_args(argv)
    from cgdm import zoo

    try:
        data = _read_bytes(args.input)
        header, _ = read_cgdm(data)
        if header.model_id != MODEL_ID:
            return _full_cgdm("decompress_main")(argv)
        if extra:
            p.error(f"unrecognized arguments for a base-codec file: {' '.join(extra)}")
        spec = args.model
        if spec is None:
            entry = zoo.find_by_weights_hash(header.weights_hash)
            if entry is None:
                raise ModelMismatch(f"{args.input} was written by weights {header.weights_hash.hex()}, which are "
                                    "not in the zoo: pass the checkpoint that encoded it with --model")
            spec = entry.name
        coder = BaseCoder.from_checkpoint(spec, args.device)
        t0 = time.perf_counter()
        image = coder.decode(data)
        seconds = time.perf_counter() - t0
    except (BitstreamError, zoo.CheckpointError, CodecUnavailable) as exc:
        return _fail(str(exc))
    save_png(args.output, image)
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
