"""Images <-> ``.cgdm`` files with the base codec: high-level API, ``cgdm compress|decompress|info``,
and the workflow codec class :class:`CGDMBaseCodec`.

A .cgdm file of the base codec holds three sections: ``main`` (y), ``hyper`` (z) and ``syntax``
(see :mod:`cgdm.bitstream`). Full CGDM (diffusion decoder) is :mod:`cgdm.model`'s: ``cgdm compress``
with ``--decoder`` and ``cgdm decompress`` of a file with model id ``cgdm`` hand their arguments to
``cgdm.model.compress_main`` / ``decompress_main``.

torch is imported inside the functions that need it (here, in :mod:`cgdm.tensors` and in
:mod:`cgdm.decode_checks`), and so is :mod:`cgdm.zoo`, which imports it: ``cgdm info`` answers without
loading torch. Full CGDM shares the checks before decoding (:mod:`cgdm.decode_checks`), the command-line
pieces (:mod:`cgdm.cli_util`) and the tensor conversions (:mod:`cgdm.tensors`); the names of theirs this
module exported before (``check_decode_resources``, ``estimate_decode_bytes``, ``image_to_tensor``,
``tensor_to_image``) are still importable from here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cgdm import __version__
from cgdm.bitstream import (
    HEADER_SIZE,
    MAX_PIXELS,
    SECTION_TYPES,
    BitstreamError,
    CGDMHeader,
    ModelMismatch,
    check_model,
    check_pixel_budget,
    flag_names,
    read_cgdm,
    write_cgdm,
)
from cgdm.cli_util import add_max_pixels_argument, fail, one_line, write_and_report
from cgdm.decode_checks import BASE_STREAMS, check_decode_resources, estimate_decode_bytes
from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.imageio import ImageReadError, load_image, save_png
from cgdm.tensors import image_to_tensor, tensor_to_image

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


class BaseCoder:
    """A loaded base codec plus the identity written into / checked against file headers."""

    def __init__(self, model, meta: dict | None = None, device: str | torch.device = "cpu"):
        """``meta``: the checkpoint's meta; None for an in-memory model (its weights are hashed here)."""
        import torch  # lazy: see the module docstring

        if meta is None:
            from cgdm.zoo import weights_sha256  # lazy: cgdm.zoo imports torch

            meta = {"weights_sha256": weights_sha256(model.state_dict()), "steps": 0}
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.weights_hash = bytes.fromhex(meta["weights_sha256"])[:8]

    @classmethod
    def from_checkpoint(cls, spec: str | os.PathLike, device: str | torch.device = "cpu") -> BaseCoder:
        """``spec``: a checkpoint path or a zoo name (:mod:`cgdm.zoo`)."""
        from cgdm.zoo import resolve_model  # lazy: cgdm.zoo imports torch

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
        sections = {name: enc["strings"][stream][0] for name, stream in BASE_STREAMS.items()}
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
        strings = {stream: [sections[name]] for name, stream in BASE_STREAMS.items()}
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
            from cgdm.zoo import CheckpointError  # lazy: cgdm.zoo imports torch

            try:
                self._coder = BaseCoder.from_checkpoint(spec, self.device)
            except CheckpointError as exc:
                raise CodecUnavailable(f"codec {self.name!r}: {exc}") from exc
        return self._coder

    def check_available(self) -> None:
        self._load()

    @property
    def version(self) -> str:
        return f"cgdm-suite {__version__} ({MODEL_ID})"

    @property
    def weights(self) -> str:
        meta = self._load().meta
        return f"trained-here:{meta['steps']}:{meta['weights_sha256'][:12]}"

    def encode(self, image: np.ndarray, rate) -> bytes:
        return self._load().encode(image, int(rate))

    def decode(self, data: bytes) -> np.ndarray:
        return self._load().decode(data)


# -- CLI ----------------------------------------------------------------------------------------------
def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BitstreamError(f"{path}: cannot read ({exc.strerror})") from exc


def _full_cgdm(command: str):
    """``cgdm.model``'s CLI function for full-CGDM files (imported only when needed)."""
    # lazy: cgdm.model imports torch and the diffusion decoder; base-codec files never need it
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
    from cgdm.zoo import CheckpointError  # lazy: cgdm.zoo imports torch (not before --help / bad arguments)

    try:
        image = load_image(args.input)
        coder = BaseCoder.from_checkpoint(args.model, args.device)
        t0 = time.perf_counter()
        data = coder.encode(image, args.rate)
        seconds = time.perf_counter() - t0
    except (ImageReadError, CheckpointError, CodecUnavailable, ValueError) as exc:
        return fail(str(exc))
    write_and_report(args.output, data, image.shape, args.rate, seconds)
    return 0


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
        return fail(str(exc))
    if header.model_id != MODEL_ID:
        if not any(a == "--decoder" or a.startswith("--decoder=") for a in extra):
            return fail(f"{args.input} is a full-CGDM file (model {header.model_id!r}): pass the diffusion decoder "
                        "checkpoint that encoded it with --decoder (and the base codec with --model)")
        return _full_cgdm("decompress_main")(argv)
    if extra:
        # one line like every other refusal: the file, not the command line, decides which options apply
        return fail(f"unrecognized arguments for a base-codec file: {' '.join(extra)} ({args.input} was written "
                    f"by the base codec {MODEL_ID!r}, which has no diffusion decoder options)")
    # CompressAI's import-time torch.jit deprecation notice is not ours to report
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    from cgdm import zoo  # lazy: cgdm.zoo imports torch (not before the header checks above)

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
        return fail(str(exc))
    except MemoryError:
        return fail(f"out of memory decoding the {header.width}x{header.height} image; free memory or lower "
                    "the limit that stopped it")
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: exit 2 and one line, never a traceback
        return fail(one_line(exc))
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
        return fail(str(exc))
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
