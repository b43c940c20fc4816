"""The .cgdm container: layout, round trip, and a specific error for every damaged file."""

from __future__ import annotations

import random
import struct
import time
import zlib

import numpy as np
import pytest
import torch

from cgdm import bitstream as bs
from cgdm.bitstream import (
    BadMagic,
    BitstreamError,
    CGDMHeader,
    CorruptedFile,
    ModelMismatch,
    TruncatedFile,
    UnsupportedVersion,
    read_cgdm,
    read_header,
    write_cgdm,
)

HASH = bytes(range(8))


def _header(**kw) -> CGDMHeader:
    base = {"model_id": "cgdm-base-vr-mshp", "weights_hash": HASH, "width": 768, "height": 512, "rate_idx": 2,
            "flags": bs.ONLINE | bs.TILED}
    return CGDMHeader(**{**base, **kw})


SECTIONS = {"main": b"\x01\x02\x03" * 100, "hyper": b"zz" * 70, "syntax": b"s" * 9}


def test_round_trip_and_layout():
    data = write_cgdm(_header(), SECTIONS)
    header, sections = read_cgdm(data)
    assert header == _header()
    assert sections == SECTIONS
    assert data[:4] == b"CGDM" and data[4] == bs.FORMAT_VERSION
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])
    # the container costs the 21-byte header, 2-3 bytes of framing per section and the CRC
    overhead = len(data) - sum(map(len, SECTIONS.values()))
    assert bs.HEADER_SIZE == 22
    assert overhead == 22 + (1 + 2) + (1 + 2) + (1 + 1) + 4
    assert read_header(data) == header


def test_sections_written_in_type_order_and_decoder_section_kept():
    data = write_cgdm(_header(flags=bs.DIFFUSION), {"decoder": b"\x07" * 5, "syntax": b"a", "main": b"b"})
    _, sections = read_cgdm(data)
    assert list(sections) == ["main", "syntax", "decoder"]
    types = [data[bs.HEADER_SIZE], data[bs.HEADER_SIZE + 3], data[bs.HEADER_SIZE + 6]]
    assert types == [1, 3, 4]


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 70000])
def test_varint_lengths(n):
    data = write_cgdm(_header(), {"main": bytes(n)})
    assert read_cgdm(data)[1]["main"] == bytes(n)
    assert bs._read_varint(bs._varint(n), 0, 10)[0] == n


@pytest.mark.parametrize("kw, match", [
    ({"width": 0}, "image size"), ({"height": 70000}, "image size"), ({"rate_idx": 256}, "one byte"),
    ({"flags": 1 << 9}, "flag"), ({"weights_hash": b"abc"}, "8 bytes"), ({"model_id": "x"}, "model_id"),
])
def test_write_rejects_bad_header(kw, match):
    with pytest.raises(ValueError, match=match):
        write_cgdm(_header(**kw), SECTIONS)


def test_write_rejects_unknown_section():
    with pytest.raises(ValueError, match="unknown section"):
        write_cgdm(_header(), {"extra": b""})


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def test_specific_errors():
    data = write_cgdm(_header(), SECTIONS)
    with pytest.raises(TruncatedFile, match="empty"):
        read_cgdm(b"")
    with pytest.raises(BadMagic, match="not a .cgdm file"):
        read_cgdm(b"\x89PNG\r\n\x1a\n" + data[8:])
    with pytest.raises(UnsupportedVersion, match="format version 9"):
        read_cgdm(data[:4] + b"\x09" + data[5:])
    for cut in range(len(data)):
        with pytest.raises(TruncatedFile):
            read_cgdm(data[:cut])
    with pytest.raises(CorruptedFile, match="CRC32"):
        read_cgdm(data[:30] + bytes([data[30] ^ 4]) + data[31:])


def test_errors_after_a_valid_crc():
    """Files a foreign/newer writer could produce: the CRC holds, the content is still refused."""
    body = write_cgdm(_header(), SECTIONS)[:-4]
    unknown_flag = body[:19] + struct.pack(">H", 1 << 12) + body[21:]
    more = body[:21] + bytes([body[21] + 1]) + body[22:]
    with pytest.raises(UnsupportedVersion, match="flag bits 0x1000"):
        read_cgdm(_recrc(unknown_flag))
    with pytest.raises(UnsupportedVersion, match="unknown type 9"):
        read_cgdm(_recrc(more + b"\x09\x01x"))
    with pytest.raises(CorruptedFile, match="repeated or out of order"):
        read_cgdm(_recrc(more + b"\x01\x01x"))
    with pytest.raises(CorruptedFile, match="4 sections, the header announces 3"):
        read_cgdm(_recrc(body + b"\x03\x01x"))
    with pytest.raises(UnsupportedVersion, match="model identifier 77"):
        read_cgdm(_recrc(body[:5] + b"\x4d" + body[6:]))
    with pytest.raises(CorruptedFile, match="image size"):
        read_cgdm(_recrc(body[:14] + b"\x00\x00" + body[16:]))
    with pytest.raises(CorruptedFile, match="non-canonical"):
        read_cgdm(_recrc(body[:22] + b"\x01\x80\x00"))
    with pytest.raises(CorruptedFile, match="longer than"):
        read_cgdm(_recrc(body[:22] + b"\x01\xff\xff\xff\xff\x01"))


def test_every_single_bit_flip_is_caught():
    data = write_cgdm(_header(), {"main": b"ab", "hyper": b"c", "syntax": b"d"})
    for i in range(8 * len(data)):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            read_cgdm(bytes(bad))


def test_check_model():
    h = _header(rate_idx=3)
    bs.check_model(h, "cgdm-base-vr-mshp", HASH, num_rates=4)
    with pytest.raises(ModelMismatch, match="--model"):
        bs.check_model(h, "cgdm-base-vr-mshp", b"\xff" * 8)
    with pytest.raises(ModelMismatch):
        bs.check_model(h, "cgdm", HASH)
    with pytest.raises(CorruptedFile, match="rate index 3"):
        bs.check_model(h, "cgdm-base-vr-mshp", HASH, num_rates=3)


def test_errors_are_value_errors():
    # callers that catch ValueError (argparse-style CLIs) also catch every bitstream error
    for cls in (BadMagic, UnsupportedVersion, ModelMismatch, TruncatedFile, CorruptedFile):
        assert issubclass(cls, BitstreamError) and issubclass(BitstreamError, ValueError)


# -- fuzzing the whole decoder ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoded():
    from cgdm.codec import BaseCodec
    from cgdm.coder import BaseCoder

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = BaseCodec(N=16, M=24, num_rates=3)
    model.init_gains([0.001, 0.004, 0.016])
    with torch.no_grad():  # make y carry real information so the main section is not trivial
        model.log_gain.add_(3.0)
    model.update(force=True)
    coder = BaseCoder(model)
    rng = np.random.default_rng(0)
    image = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
    return coder, coder.encode(image, 1)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    b = bytearray(data)
    if kind == 0:  # truncation
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:  # a few bit flips anywhere
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(8 * len(b))
            b[i // 8] ^= 1 << (i % 8)
    elif kind == 2:  # bad magic
        b[rng.randrange(4)] ^= rng.randint(1, 255)
    elif kind == 3:  # bad version
        b[4] = rng.choice([0, 2, 3, 127, 255])
    elif kind == 4:  # bad section length (first section's varint)
        b[bs.HEADER_SIZE + 1 + rng.randrange(2)] = rng.randrange(256)
    elif kind == 5:  # random bytes overwritten in the payload
        i = rng.randrange(bs.HEADER_SIZE, len(b))
        b[i:i + 4] = rng.randbytes(4)
    elif kind == 6:  # bytes inserted or appended
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    else:  # header field changed (size, rate, flags, model), CRC left as is
        i = rng.randrange(5, bs.HEADER_SIZE)
        b[i] ^= rng.randint(1, 255)
    return bytes(b)


def _fuzz(encoded, n: int, seed: int):
    coder, data = encoded
    rng = random.Random(seed)
    kinds = {}
    for _ in range(n):
        bad = _mutate(data, rng)
        while bad == data:
            bad = _mutate(data, rng)
        t0 = time.perf_counter()
        with pytest.raises(BitstreamError) as info:
            coder.decode(bad)
        assert time.perf_counter() - t0 < 5.0
        kinds[type(info.value).__name__] = kinds.get(type(info.value).__name__, 0) + 1
    # every family of damage shows up with its own error
    assert {"TruncatedFile", "CorruptedFile", "BadMagic", "UnsupportedVersion"} <= set(kinds)


def test_fuzz_decoder_100(encoded):
    coder, data = encoded
    assert coder.decode(data).shape == (40, 56, 3)  # the unmutated file decodes
    _fuzz(encoded, 100, seed=1)


@pytest.mark.slow
def test_fuzz_decoder_1000(encoded):
    _fuzz(encoded, 1000, seed=2)


def test_pixel_budget():
    h = _header(width=65535, height=65535)
    with pytest.raises(bs.ResourceLimit, match="pixel budget") as info:
        bs.check_pixel_budget(h)
    assert "--max-pixels 4294836225" in str(info.value) and isinstance(info.value, BitstreamError)
    bs.check_pixel_budget(h, max_pixels=None)
    bs.check_pixel_budget(h, max_pixels=65535 * 65535)
    bs.check_pixel_budget(_header(width=9459, height=9459))  # 89.47 MP: Pillow's limit, inclusive
    with pytest.raises(bs.ResourceLimit):
        bs.check_pixel_budget(_header(width=9460, height=9459))
