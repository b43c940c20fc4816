"""``cgdm compress``, ``cgdm decompress`` and ``cgdm info``: the command line of ``.cgdm`` files.

Base-codec files are handled here (:class:`cgdm.coder.BaseCoder`); ``cgdm compress`` with ``--decoder``
and ``cgdm decompress`` of a file with model id ``cgdm`` hand their arguments to :mod:`cgdm.cli_cgdm`
(full CGDM). torch is loaded only by the functions that need it (:mod:`cgdm.coder` imports it inside
them; :mod:`cgdm.zoo` and :mod:`cgdm.cli_cgdm`, which import it at the top, are imported here only when
needed): ``cgdm info`` and every refusal from the header alone answer without loading torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

from cgdm.bitstream import (
    HEADER_SIZE,
    SECTION_TYPES,
    BitstreamError,
    ModelMismatch,
    check_pixel_budget,
    flag_names,
    read_cgdm,
)
from cgdm.cli_util import add_max_pixels_argument, fail, one_line, write_and_report
from cgdm.coder import MODEL_ID, BaseCoder
from cgdm.imageio import ImageReadError, load_image, save_png

__all__ = ["compress_main", "decompress_main", "info_main"]


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise BitstreamError(f"{path}: cannot read ({exc.strerror})") from exc


def _full_cgdm(command: str):
    """:mod:`cgdm.cli_cgdm`'s CLI function for full-CGDM files (imported only when needed)."""
    # lazy: cgdm.cli_cgdm imports cgdm.model (torch, the diffusion decoder); base-codec files never need it
    return getattr(importlib.import_module("cgdm.cli_cgdm"), command)


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
    from cgdm.zoo import (  # lazy: cgdm.zoo imports torch (not before --help / bad arguments)
        CheckpointError,
        WeightsUnavailable,
    )

    try:
        image = load_image(args.input)
        coder = BaseCoder.from_checkpoint(args.model, args.device)
        t0 = time.perf_counter()
        data = coder.encode(image, args.rate)
        seconds = time.perf_counter() - t0
    except (ImageReadError, CheckpointError, WeightsUnavailable, ValueError) as exc:
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
    except (BitstreamError, zoo.CheckpointError, zoo.WeightsUnavailable) as exc:
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
