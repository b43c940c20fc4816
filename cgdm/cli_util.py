"""Pieces shared by the ``cgdm compress`` / ``cgdm decompress`` command lines of the base codec
(:mod:`cgdm.cli_codec`) and of full CGDM (:mod:`cgdm.cli_cgdm`): the one-line error exit, ``--max-pixels``,
the size report after writing a file. Imports nothing heavy (``cgdm info`` must not load torch).
"""

from __future__ import annotations

import argparse
import sys

from cgdm.bitstream import MAX_PIXELS
from cgdm.harness.codecs import write_bitstream

__all__ = ["add_max_pixels_argument", "fail", "one_line", "write_and_report"]


def fail(message: str) -> int:
    """Print ``cgdm: error: <message>`` on stderr and return the exit status 2."""
    print(f"cgdm: error: {message}", file=sys.stderr)
    return 2


def write_and_report(output, data: bytes, shape: tuple[int, ...], rate: int, seconds: float) -> None:
    """Write a compressed file and print its size as measured on disk (shared by both compress CLIs)."""
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
    """``--max-pixels``, shared by the base-codec and the full-CGDM ``cgdm decompress``."""
    p.add_argument("--max-pixels", type=_max_pixels, default=MAX_PIXELS, metavar="N",
                   help=f"refuse files that declare more than N pixels (default {MAX_PIXELS}, Pillow's "
                        "MAX_IMAGE_PIXELS; 0 = no limit). Checked before anything is allocated")


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line (``cgdm decompress`` never prints a traceback)."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"decoding failed ({type(exc).__name__}: {text[:500]}); the file is damaged or was not written by this model"
