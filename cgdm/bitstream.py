"""The ``.cgdm`` container: a small fixed header, length-prefixed sections, CRC32.

Layout (all integers big-endian)::

    offset size  field
    0      4     magic  b"CGDM"
    4      1     format version (FORMAT_VERSION)
    5      1     model identifier (MODEL_IDS: which network family wrote the file)
    6      8     weights hash: first 8 bytes of the sha256 of the weights that wrote the file
    14     2     image width  (1..65535)
    16     2     image height (1..65535)
    18     1     rate index
    19     2     flags (bitfield, FLAGS)
    21     1     number of sections
    22     ...   sections: type (1 byte, SECTION_TYPES) | payload length (unsigned LEB128 varint) | payload
    end-4  4     CRC32 (zlib) of every byte before it

The header is 22 bytes; each section adds 2-4 bytes of framing; the CRC adds 4. Sections appear in type
order, each at most once. The section count makes truncation detectable even when a file is cut
exactly at a section boundary.

Reading validates everything before any entropy decoding: magic, version, framing within the file, CRC,
known section types and flags, non-zero image size. Every problem raises a :class:`BitstreamError`
subclass with a message that says what is wrong and what to do; no input makes the reader crash, hang
or allocate more than the file size. A valid container can still declare an image of up to
65535 x 65535: :func:`check_pixel_budget` (and the decoders' section and memory checks in
:mod:`cgdm.coder`) refuse that before anything is allocated, and :mod:`cgdm.rans_guard` keeps the
entropy decoder inside its streams.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "DIFFUSION",
    "FLAGS",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "KNOWN_FLAGS",
    "MAGIC",
    "MAX_PIXELS",
    "MODEL_IDS",
    "NO_BOUNDARY",
    "NO_CONSISTENCY",
    "NO_SFF",
    "ONLINE",
    "SECTION_TYPES",
    "TILED",
    "BadMagic",
    "BitstreamError",
    "CGDMHeader",
    "CorruptedFile",
    "ModelMismatch",
    "ResourceLimit",
    "TruncatedFile",
    "UnsupportedVersion",
    "check_model",
    "check_pixel_budget",
    "flag_names",
    "read_cgdm",
    "read_header",
    "write_cgdm",
]

MAGIC = b"CGDM"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBB8sHHBHB")
HEADER_SIZE = _HEADER.size  # 22
_CRC = struct.Struct(">I")
MAX_DIM = 0xFFFF
#: a section length varint has at most this many bytes (payloads < 256 MiB)
_MAX_VARINT_BYTES = 4

#: model identifier codes (byte 5). Append only: a code's meaning never changes.
MODEL_IDS: dict[str, int] = {
    "cgdm-base-vr-mshp": 1,  # cgdm.codec.BaseCodec alone (no diffusion decoder)
    "cgdm": 2,               # full CGDM: base codec + diffusion decoder (cgdm.model)
}
_MODEL_NAMES = {v: k for k, v in MODEL_IDS.items()}

#: section type codes. Append only.
SECTION_TYPES: dict[str, int] = {
    "main": 1,     # y: main latent (Gaussian conditional stream)
    "hyper": 2,    # z: hyper latent (entropy bottleneck stream)
    "syntax": 3,   # neural-syntax vector
    "decoder": 4,  # diffusion decoder settings (steps / t0 / seed struct), owned by the diffusion decoder
    "sff": 5,      # SFF stream: the vector that steers the diffusion decoder's fusion (cgdm.fusion.SFFStream)
}
_SECTION_NAMES = {v: k for k, v in SECTION_TYPES.items()}

# flag bits: how the file was produced / must be decoded
ONLINE = 1           # continuous online optimisation at encode time
TILED = 2            # coded in overlapping tiles (boundary control)
NO_CONSISTENCY = 4   # ablation: consistency-guided branch off
NO_SFF = 8           # ablation: SFF fusion off
NO_BOUNDARY = 16     # ablation: boundary control off
DIFFUSION = 32       # decode with the diffusion post-processor
FLAGS = {"ONLINE": ONLINE, "TILED": TILED, "NO_CONSISTENCY": NO_CONSISTENCY, "NO_SFF": NO_SFF,
         "NO_BOUNDARY": NO_BOUNDARY, "DIFFUSION": DIFFUSION}
KNOWN_FLAGS = 0
for _bit in FLAGS.values():
    KNOWN_FLAGS |= _bit


class BitstreamError(ValueError):
    """A .cgdm file that cannot be decoded. The message says why and what to do."""


class BadMagic(BitstreamError):
    """Not a .cgdm file."""


class UnsupportedVersion(BitstreamError):
    """Written by a different format version, or uses features this version does not know."""


class ModelMismatch(BitstreamError):
    """Written by another model than the one given for decoding."""


class TruncatedFile(BitstreamError):
    """The file ends before its content does."""


class CorruptedFile(BitstreamError):
    """CRC mismatch or inconsistent content."""


class ResourceLimit(BitstreamError):
    """The file declares an image larger than this decoder may allocate (pixel budget, memory)."""


#: default pixel budget of the decoders: Pillow's ``Image.MAX_IMAGE_PIXELS`` (its decompression-bomb
#: limit, 1024 * 1024 * 1024 // 4 // 3 pixels, 89.5 MP). A header is 22 bytes and can declare
#: 65535 x 65535 = 4.3 GP: the limit is checked before anything is allocated.
MAX_PIXELS = 89_478_485


def check_pixel_budget(header: CGDMHeader, max_pixels: int | None = MAX_PIXELS) -> None:
    """Raise :class:`ResourceLimit` if the declared image has more than ``max_pixels`` pixels
    (``None``: no limit)."""
    pixels = header.width * header.height
    if max_pixels is not None and pixels > max_pixels:
        raise ResourceLimit(f"the file declares a {header.width}x{header.height} image ({pixels / 1e6:.1f} MP), more "
                            f"than the decoder's pixel budget of {max_pixels / 1e6:.1f} MP; if you trust the "
                            f"file, raise the budget (cgdm decompress --max-pixels {pixels}, API: max_pixels=)")


@dataclass(frozen=True)
class CGDMHeader:
    """Header fields of a .cgdm file. ``model_id`` is a name of :data:`MODEL_IDS`."""

    model_id: str
    weights_hash: bytes  # 8 bytes
    width: int
    height: int
    rate_idx: int
    flags: int = 0
    version: int = FORMAT_VERSION

    def validate(self) -> None:
        """Raise ValueError for values that cannot be written."""
        if self.model_id not in MODEL_IDS:
            raise ValueError(f"unknown model_id {self.model_id!r}; known: {sorted(MODEL_IDS)}")
        if not isinstance(self.weights_hash, bytes) or len(self.weights_hash) != 8:
            raise ValueError("weights_hash must be 8 bytes (the first 8 bytes of the weights' sha256)")
        if not (1 <= self.width <= MAX_DIM and 1 <= self.height <= MAX_DIM):
            raise ValueError(f"image size {self.width}x{self.height} not supported: each side must be 1..{MAX_DIM}")
        if not 0 <= self.rate_idx <= 255:
            raise ValueError(f"rate index {self.rate_idx} does not fit in one byte")
        if self.flags & ~KNOWN_FLAGS or self.flags < 0:
            raise ValueError(f"unknown flag bits {self.flags & ~KNOWN_FLAGS:#x}")
        if self.version != FORMAT_VERSION:
            raise ValueError(f"this build writes format version {FORMAT_VERSION}, not {self.version}")


def flag_names(flags: int) -> list[str]:
    return [name for name, bit in FLAGS.items() if flags & bit]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise TruncatedFile(f"file is truncated: it ends inside a section length at byte {pos}; "
                                "re-copy or re-encode the file")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise CorruptedFile(f"corrupted file: non-canonical section length at byte {pos - 1}")
            return value, pos
    raise CorruptedFile(f"corrupted file: section length at byte {pos - _MAX_VARINT_BYTES} is longer than "
                        f"{_MAX_VARINT_BYTES} bytes")


def write_cgdm(header: CGDMHeader, sections: dict[str, bytes]) -> bytes:
    """Serialise a header and named sections (names of :data:`SECTION_TYPES`) to .cgdm bytes."""
    header.validate()
    unknown = set(sections) - set(SECTION_TYPES)
    if unknown:
        raise ValueError(f"unknown section names {sorted(unknown)}; known: {sorted(SECTION_TYPES)}")
    out = bytearray(_HEADER.pack(MAGIC, header.version, MODEL_IDS[header.model_id], header.weights_hash,
                                 header.width, header.height, header.rate_idx, header.flags, len(sections)))
    for name in sorted(sections, key=SECTION_TYPES.__getitem__):
        payload = bytes(sections[name])
        if len(payload) >= 1 << (7 * _MAX_VARINT_BYTES):
            raise ValueError(f"section {name!r} is too large ({len(payload)} bytes)")
        out += bytes([SECTION_TYPES[name]]) + _varint(len(payload)) + payload
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def _check_prefix(data: bytes) -> None:
    """Magic, version and minimum length: the checks that say *what* the file is."""
    if len(data) < len(MAGIC):
        if not data:
            raise TruncatedFile("file is empty (0 bytes): the encoder did not finish or the copy failed")
        if MAGIC.startswith(data):
            raise TruncatedFile(f"file is truncated: {len(data)} bytes, shorter than the magic number")
        raise BadMagic(f"not a .cgdm file: it starts with {data[:4]!r}, not {MAGIC!r}")
    if data[:4] != MAGIC:
        raise BadMagic(f"not a .cgdm file: it starts with {data[:4]!r}, not {MAGIC!r}")
    if len(data) < 5:
        raise TruncatedFile(f"file is truncated: {len(data)} bytes, the header needs {HEADER_SIZE}")
    if data[4] != FORMAT_VERSION:
        raise UnsupportedVersion(f"format version {data[4]}, but this build of cgdm-suite reads version "
                                 f"{FORMAT_VERSION}: decode it with the cgdm-suite release that wrote it (or, if "
                                 "this build wrote it, the file is damaged)")
    if len(data) < HEADER_SIZE + _CRC.size:
        raise TruncatedFile(f"file is truncated: {len(data)} bytes, a .cgdm file has at least "
                            f"{HEADER_SIZE + _CRC.size}")


def _parse_header(data: bytes) -> CGDMHeader:
    _, version, model_code, weights_hash, width, height, rate_idx, flags, _ = _HEADER.unpack_from(data)
    if model_code not in _MODEL_NAMES:
        raise UnsupportedVersion(f"model identifier {model_code} is unknown to this build (known: "
                                 f"{_MODEL_NAMES}): upgrade cgdm-suite (or, if this build wrote it, the file "
                                 "is damaged)")
    if width == 0 or height == 0:
        raise CorruptedFile(f"corrupted file: image size {width}x{height}")
    if flags & ~KNOWN_FLAGS:
        raise UnsupportedVersion(f"file uses flag bits {flags & ~KNOWN_FLAGS:#x} unknown to this build; "
                                 "upgrade cgdm-suite")
    return CGDMHeader(_MODEL_NAMES[model_code], weights_hash, width, height, rate_idx, flags, version)


def read_header(data: bytes) -> CGDMHeader:
    """Parse the fixed header only, without the CRC check (quick inspection of large files)."""
    data = bytes(data[: HEADER_SIZE + _CRC.size])
    _check_prefix(data)
    return _parse_header(data)


def read_cgdm(data: bytes) -> tuple[CGDMHeader, dict[str, bytes]]:
    """Parse and validate .cgdm bytes -> ``(header, {section name: payload})``.

    Order of checks: magic and version (so a foreign or newer file gets the right message), section
    framing within the file (truncation), CRC (corruption), then the meaning of the fields.
    """
    data = bytes(data)
    _check_prefix(data)
    end = len(data) - _CRC.size
    pos = HEADER_SIZE
    raw: list[tuple[int, bytes]] = []
    while pos < end:
        stype = data[pos]
        length, pos = _read_varint(data, pos + 1, end)
        if pos + length > end:
            raise TruncatedFile(f"file is truncated: section {_SECTION_NAMES.get(stype, stype)!r} declares "
                                f"{length} bytes but only {end - pos} remain before the checksum; "
                                "re-copy or re-encode the file")
        raw.append((stype, data[pos:pos + length]))
        pos += length
    declared = data[HEADER_SIZE - 1]
    if len(raw) < declared:
        raise TruncatedFile(f"file is truncated (or damaged): the header announces {declared} sections, only "
                            f"{len(raw)} are present; re-copy or re-encode the file")
    stored = _CRC.unpack_from(data, end)[0]
    if zlib.crc32(data[:end]) != stored:
        raise CorruptedFile("corrupted file: CRC32 mismatch; the file was damaged after encoding "
                            "(re-copy or re-encode it)")
    # past the CRC the bytes are what the writer wrote: remaining errors mean a foreign/newer writer
    header = _parse_header(data)
    if len(raw) != declared:
        raise CorruptedFile(f"corrupted file: {len(raw)} sections, the header announces {declared}")
    sections: dict[str, bytes] = {}
    last = 0
    for stype, payload in raw:
        if stype not in _SECTION_NAMES:
            raise UnsupportedVersion(f"file has a section of unknown type {stype}; upgrade cgdm-suite")
        if stype <= last:
            raise CorruptedFile(f"corrupted file: section {_SECTION_NAMES[stype]!r} is repeated or out of order")
        last = stype
        sections[_SECTION_NAMES[stype]] = payload
    return header, sections


def check_model(header: CGDMHeader, model_id: str, weights_hash: bytes, num_rates: int | None = None) -> None:
    """Raise :class:`ModelMismatch` unless the file was written by this model (and its rate exists)."""
    if header.model_id != model_id or header.weights_hash != weights_hash:
        raise ModelMismatch(
            f"file was written by model {header.model_id} with weights {header.weights_hash.hex()}, but the "
            f"model given is {model_id} with weights {weights_hash.hex()}: pass the checkpoint that encoded it "
            "(--model), or the zoo model with that hash")
    if num_rates is not None and header.rate_idx >= num_rates:
        raise CorruptedFile(f"rate index {header.rate_idx} does not exist in this model (0..{num_rates - 1})")
