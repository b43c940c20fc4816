"""Keep CompressAI's rANS decoder inside its input, and check that it consumed exactly that input.

CompressAI's ``RansDecoder.decode_with_indexes`` (``compressai/cpp_exts/rans/rans_interface.cpp``, ryg_rans'
``rans64.h``) trusts its input completely:

* it reads the 64-bit initial state as two 32-bit words (``Rans64DecInit``): a string shorter than
  8 bytes is read past its end;
* it never looks at the string's length: each symbol's ``Rans64DecAdvance`` may pull one more word, and
  an escape (bypass) symbol pulls words in ``Rans64DecGetBits`` for as long as the bits say so. A file
  that declares more symbols than its stream holds (a larger image size, a shortened or zeroed
  section) makes it read the heap behind the string: garbage, or SIGSEGV at the end of a mapping;
* its ``assert`` checks are compiled out (``-DNDEBUG``), so nothing stops either.

:class:`GuardedDecoder` wraps it (installed on an entropy model by :func:`guard`):

1. **Length**: a stream must be whole 32-bit words, at least two (what ``Rans64EncFlush`` writes).
2. **Zero tail**: the decoder gets a copy of the stream followed by ``PROBE_WORDS`` known words and
   ``n + 2 + 64`` zero words (``n`` = symbols to decode). A non-escape symbol reads at most one word
   (``Rans64DecAdvance`` renormalises at most once), so ``n`` symbols without escapes plus the probe
   cannot leave the copy, whatever the stream holds. Escape (bypass) symbols can read more: a bypass
   whose length nibbles come from zero words stops after one more nibble (a zero word makes the
   state's low 32 bits zero), so in the tail one reads a few dozen words at most, but a long run of
   escapes could in principle outrun the slack. This is the one case the guard does not bound
   by construction; escapes are the far tails of the distributions (a few in 2^16 per symbol), and
   the fuzz tests (tests/test_hostile.py) and random / constant streams of every length found none
   that left the copy.
3. **Exact end**: after the real symbols the decoder decodes ``PROBE_SYMBOLS`` symbols of a known
   8-bit CDF. For a stream written by CompressAI's encoder the decoder ends in exactly the encoder's
   initial state ``RANS64_L`` = 2^31 with its pointer exactly at the end of the stream (rANS decoding
   is the encoder run backwards), so the probe symbols are a known function of the first probe words;
   :func:`_expected_probe` simulates them. The 16 probe symbols read back 128 bits of end state and
   following words, so any other end state or position (the stream ran out early, was not fully
   consumed, or the decoder read into the tail) changes them unless 128 bits agree by chance, and
   the stream is refused with :class:`~cgdm.bitstream.CorruptedFile`. This is also what catches
   random, zeroed, shortened or lengthened payloads and declared sizes that do not match the streams.
"""

from __future__ import annotations

import struct

from cgdm.bitstream import CorruptedFile

__all__ = ["PROBE_SYMBOLS", "GuardedDecoder", "guard"]

_PRECISION = 16          # rans_interface.cpp: precision
_BYPASS_BITS = 4         # rans_interface.cpp: bypass_precision
_RANS64_L = 1 << 31      # rans64.h: lower bound of the normalisation interval
_MASK64 = (1 << 64) - 1
#: probe CDF: 8 bits per symbol (256 bins of 256), the last bin split so the escape symbol exists
_PROBE_CDF = [256 * k for k in range(256)] + [(1 << _PRECISION) - 1, 1 << _PRECISION]
PROBE_SYMBOLS = 16       # 128 bits read back: the 64-bit end state and the first two probe words
PROBE_WORDS = 4
#: fixed pseudo-random probe words (any fixed values work; these are the first words of sha256(b"cgdm"))
_PROBE_TAIL = bytes.fromhex("5a3d6c1e9b27f4088e61c0d3a7b5f912")


def _expected_probe(tail_words: list[int]) -> list[int]:
    """The probe symbols a decoder in state RANS64_L at the start of ``tail_words`` decodes
    (a transcription of RansDecoder::decode_with_indexes for one CDF, offset 0)."""
    cdf = _PROBE_CDF
    max_value = len(cdf) - 2
    words = iter(tail_words)
    x = _RANS64_L

    def get_bits(x: int, n: int) -> tuple[int, int]:
        val = x & ((1 << n) - 1)
        x >>= n
        if x < _RANS64_L:
            x = ((x << 32) | next(words)) & _MASK64
        return x, val

    out = []
    for _ in range(PROBE_SYMBOLS):
        cum = x & ((1 << _PRECISION) - 1)
        s = next(i for i, v in enumerate(cdf) if v > cum) - 1
        x = (cdf[s + 1] - cdf[s]) * (x >> _PRECISION) + cum - cdf[s]
        if x < _RANS64_L:
            x = ((x << 32) | next(words)) & _MASK64
        value = s
        if value == max_value:  # bypass, as in the C++ code
            x, val = get_bits(x, _BYPASS_BITS)
            n_bypass = val
            while val == (1 << _BYPASS_BITS) - 1:
                x, val = get_bits(x, _BYPASS_BITS)
                n_bypass += val
            raw = 0
            for j in range(n_bypass):
                x, val = get_bits(x, _BYPASS_BITS)
                raw |= val << (j * _BYPASS_BITS)
            value = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + max_value
        out.append(value)
    return out


_TAIL_WORDS = list(struct.unpack("<4I", _PROBE_TAIL)) + [0] * 64
_EXPECTED = _expected_probe(_TAIL_WORDS)


class GuardedDecoder:
    """Drop-in for CompressAI's ``_EntropyCoder`` (``name``, ``encode_with_indexes``,
    ``decode_with_indexes``) whose decoding is bounded and end-checked (see the module docstring)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    def encode_with_indexes(self, *args, **kwargs):
        return self.inner.encode_with_indexes(*args, **kwargs)

    def decode_with_indexes(self, string: bytes, indexes: list[int], cdfs: list[list[int]],
                            cdf_lengths: list[int], offsets: list[int]) -> list[int]:
        string = bytes(string)
        if len(string) < 8 or len(string) % 4:
            raise CorruptedFile(f"corrupted file: a range-coded stream of {len(string)} bytes; CompressAI's "
                                "coder writes whole 32-bit words, at least two")
        if not (len(cdfs) == len(cdf_lengths) == len(offsets)):
            raise ValueError("cdfs, cdf_lengths and offsets must have one entry per distribution")
        n = len(indexes)
        padded = string + _PROBE_TAIL + bytes(4 * (n + 2 + 64))
        probe = len(cdfs)
        values = self.inner.decode_with_indexes(
            padded, list(indexes) + [probe] * PROBE_SYMBOLS, list(cdfs) + [_PROBE_CDF],
            list(cdf_lengths) + [len(_PROBE_CDF)], list(offsets) + [0])
        if list(values[n:]) != _EXPECTED:
            raise CorruptedFile(f"corrupted file: a range-coded stream of {len(string)} bytes does not hold "
                                f"the {n} symbols the header's image size implies (the decoder did not end "
                                "exactly at the end of the stream); re-encode the file")
        return values[:n]


def guard(*entropy_models) -> None:
    """Make these CompressAI entropy models decode through :class:`GuardedDecoder` (idempotent)."""
    for em in entropy_models:
        if not isinstance(em.entropy_coder, GuardedDecoder):
            em.entropy_coder = GuardedDecoder(em.entropy_coder)
