"""Re-decode a ``.cgdm`` file with other decoding settings, without re-encoding it.

A full-CGDM file carries its diffusion decoder's settings (:class:`cgdm.sampling_options.SamplingOptions`: seed,
guidance, bound, tile, overlap, steps, t0, ...) in its ``decoder`` section; the entropy-coded image is in
the ``main``, ``hyper`` and ``syntax`` sections. :func:`override_decoder_options` rewrites the settings
and nothing else, so the same bitstream can be decoded with another seed or another
distortion-perception trade-off::

    from cgdm.redecode import override_decoder_options
    new = override_decoder_options(data, {"seed": 3, "guidance": 0.5})
    image = model.decompress(new)          # cgdm.model.CGDM

What stays and what changes:

* ``main``, ``hyper`` and ``syntax`` are byte-identical, and so is the header except the ``TILED`` flag,
  which is updated when a ``tile`` override changes whether the image is coded in several tiles (the
  flag is informational: decoding reads the settings). The container's CRC is recomputed by
  :func:`cgdm.bitstream.write_cgdm`.
* The ``decoder`` section is ``dataclasses.replace(SamplingOptions.unpack(section), **overrides).pack()``:
  no field is named here, so options added to :class:`~cgdm.sampling_options.SamplingOptions` later work unchanged.
  Its size is that of the current section layout: a file written with an older layout (an older
  section version) comes back in the current one, which may differ by a byte or two. Measure bpp from
  the bytes written, as everywhere in the suite.
* Values are stored as the file stores them (guidance in 1/255, bound in 1e-4 units): ask
  :func:`decoder_options` for what a decoder will use.

No override (an empty mapping) returns the input unchanged. Command line: ``cgdm redecode IN OUT --set
seed=3 --set guidance=0.5``.

This module is part of the codec: it imports no workflow or evaluation code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cgdm import bitstream as bs
from cgdm.sampling_options import SamplingOptions

__all__ = ["decode_key", "decoder_options", "override_decoder_options", "option_names"]


def option_names() -> list[str]:
    """The settings a ``decoder`` section holds (the fields of :class:`~cgdm.sampling_options.SamplingOptions`)."""
    return [f.name for f in dataclasses.fields(SamplingOptions)]


def _sections(data: bytes) -> tuple[bs.CGDMHeader, dict[str, bytes]]:
    header, sections = bs.read_cgdm(data)
    if "decoder" not in sections:
        raise ValueError(f"the file (model {header.model_id!r}) has no decoder section: only full-CGDM files "
                         "carry decoding settings (a base-codec file decodes without any)")
    return header, sections


def decoder_options(data: bytes):
    """The :class:`~cgdm.sampling_options.SamplingOptions` stored in a ``.cgdm`` file."""
    return SamplingOptions.unpack(_sections(data)[1]["decoder"])


def override_decoder_options(data: bytes, overrides: Mapping[str, Any]) -> bytes:
    """``.cgdm`` bytes with the ``decoder`` section's settings replaced by ``overrides`` (field -> value of
    :class:`~cgdm.sampling_options.SamplingOptions`); everything else as in ``data`` (see the module docstring).

    Raises :class:`cgdm.bitstream.BitstreamError` for a damaged file, ValueError for a file without
    decoder settings, an unknown field or a value the options refuse.
    """
    overrides = dict(overrides)
    if not overrides:
        return bytes(data)
    header, sections = _sections(data)
    options = SamplingOptions.unpack(sections["decoder"])
    unknown = sorted(set(overrides) - set(option_names()))
    if unknown:
        raise ValueError(f"unknown decoder setting(s) {unknown}; the decoder section holds {option_names()}")
    try:
        new = dataclasses.replace(options, **overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid decoder settings {overrides}: {exc}") from exc
    sections = dict(sections, decoder=new.pack())
    flags = header.flags
    tile = getattr(new, "tile", None)
    if "tile" in overrides and tile and not flags & bs.NO_BOUNDARY:
        # the writer's rule (cgdm.model.CGDM._flags): TILED when boundary control is on and a side exceeds the tile
        tiled = header.height > tile or header.width > tile
        flags = (flags | bs.TILED) if tiled else (flags & ~bs.TILED)
    return bs.write_cgdm(dataclasses.replace(header, flags=flags), sections)


def decode_key(data: bytes) -> tuple:
    """What determines a file's decoded pixels besides its image sections: the variant flags and the
    decoder settings that take effect. Two files with the same image sections and the same key decode to
    the same pixels, so a study needs to decode only one of them.

    Settings without effect are left out, following :meth:`cgdm.model.CGDM._guidance`: without the
    consistency branch (``NO_CONSISTENCY``) there is no guidance, so ``guidance`` and ``bound`` do not
    matter; with ``guidance`` 0 the guidance is off and ``bound`` does not matter.
    """
    header, sections = _sections(data)
    options = dataclasses.asdict(SamplingOptions.unpack(sections["decoder"]))
    variant = header.flags & (bs.NO_CONSISTENCY | bs.NO_SFF | bs.NO_BOUNDARY)
    if header.flags & bs.NO_CONSISTENCY:
        options.pop("guidance", None)
        options.pop("bound", None)
    elif options.get("guidance", 1) <= 0:
        options.pop("bound", None)
    return (variant, tuple(sorted(options.items())))


def _value(text: str) -> Any:
    """``--set`` value: JSON (``3``, ``0.5``, ``null``) or else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """``cgdm redecode IN.cgdm OUT.cgdm --set seed=3 [--set guidance=0.5 ...]``"""
    p = argparse.ArgumentParser(prog="cgdm redecode",
                                description="Rewrite the decoding settings of a full-CGDM .cgdm file (seed, "
                                            "guidance, bound, tile, ...) without re-encoding it.")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="sets",
                   help="a setting to replace (repeatable); VALUE is JSON: seed=3, guidance=0.5, t0=null")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.sets:
        if "=" not in item:
            p.error(f"--set takes FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _value(value.strip())
    try:
        data = Path(args.input).read_bytes()
        new = override_decoder_options(data, overrides)
        before, after = decoder_options(data), decoder_options(new)
    except OSError as exc:
        print(f"cgdm redecode: error: {args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (bs.BitstreamError, ValueError) as exc:
        print(f"cgdm redecode: error: {exc}", file=sys.stderr)
        return 2
    from cgdm.imageio import atomic_write_bytes

    atomic_write_bytes(args.output, new)
    changed = {k: v for k, v in dataclasses.asdict(after).items() if dataclasses.asdict(before).get(k) != v}
    print(f"{args.output}: {len(new)} bytes (was {len(data)}); settings changed: {changed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
