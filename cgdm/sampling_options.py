"""How a full-CGDM file is decoded: :class:`SamplingOptions` and its byte packing, the ``decoder``
section of a ``.cgdm`` file (:mod:`cgdm.bitstream`).

Decoding settings (steps, t0, seed, tile, overlap, guidance, bound, eta) are stored in the file (16 bytes,
section version 2), so a file decodes the same way wherever it is decoded. :mod:`cgdm.redecode` rewrites
them without re-encoding; :class:`cgdm.model.CGDM` writes and reads them.

Imports no torch: :mod:`cgdm.redecode` reads and rewrites the settings without loading it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cgdm import bitstream as bs

__all__ = ["SamplingOptions"]


@dataclass(frozen=True)
class SamplingOptions:
    """How a file is decoded; written into its ``decoder`` section.

    Args:
        steps: sampler steps (denoiser evaluations), 1..255.
        t0: start timestep (< the decoder's num_train_timesteps); None = the decoder's default start.
        seed: decode seed (uint32): all sampling noise comes from a generator seeded with it.
        tile: patch size in pixels (multiple of the decoder's padding multiple, 16 by default).
        overlap: patch overlap in pixels (globally uniform mode).
        guidance: consistency-guidance strength in [0, 1] (stored in 1/255 units).
        bound: allowed low-frequency deviation from the consistency reconstruction (stored in 1e-4 units).
        eta: scale of the sampler's fresh noise per step in [0, 1] (stored in 1/255 units): 1 = the
            residual-shifting posterior (or DDPM-like DDIM), 0 = deterministic steps after the start noise.
    """

    steps: int = 4
    t0: int | None = None
    seed: int = 0
    tile: int = 512
    overlap: int = 64
    guidance: float = 1.0
    bound: float = 0.02
    eta: float = 1.0

    # version 1 (DDIM decoders, eta 0) had no eta byte; t0 = 0xFFFF stores None
    _STRUCTS = {1: struct.Struct(">BBHIHHBH"), 2: struct.Struct(">BBHIHHBHB")}
    VERSION = 2
    _T0_DEFAULT = 0xFFFF

    def __post_init__(self):
        if not 1 <= self.steps <= 255:
            raise ValueError(f"steps must be in 1..255, got {self.steps}")
        if self.t0 is not None and (not 0 <= self.t0 < self._T0_DEFAULT or self.t0 < self.steps - 1):
            raise ValueError(f"t0 must be >= steps - 1 and below 65535, got t0={self.t0}, steps={self.steps}")
        if not 0 <= self.seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be a 32-bit unsigned integer, got {self.seed}")
        if not 1 <= self.tile <= 0xFFFF or not 0 <= self.overlap < self.tile:
            raise ValueError(f"need 0 <= overlap < tile <= 65535, got tile={self.tile}, overlap={self.overlap}")
        if not 0.0 <= self.guidance <= 1.0:
            raise ValueError(f"guidance must be in [0, 1], got {self.guidance}")
        if not 0.0 <= self.bound <= 6.5535:
            raise ValueError(f"bound must be in [0, 6.5535], got {self.bound}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def quantized(self) -> SamplingOptions:
        """The options as they come back from a file (guidance and bound rounded to their units)."""
        return SamplingOptions.unpack(self.pack())

    def pack(self) -> bytes:
        t0 = self._T0_DEFAULT if self.t0 is None else self.t0
        return self._STRUCTS[self.VERSION].pack(self.VERSION, self.steps, t0, self.seed, self.tile, self.overlap,
                                                round(self.guidance * 255), round(self.bound * 1e4),
                                                round(self.eta * 255))

    @classmethod
    def unpack(cls, data: bytes) -> SamplingOptions:
        version = data[0] if data else None
        layout = cls._STRUCTS.get(version)
        if layout is None:
            raise bs.UnsupportedVersion(f"decoder section version {version} is unknown to this build "
                                        f"(reads {sorted(cls._STRUCTS)}); upgrade cgdm-suite")
        if len(data) != layout.size:
            raise bs.CorruptedFile(f"decoder section v{version} has {len(data)} bytes, expected {layout.size}")
        _, steps, t0, seed, tile, overlap, g, b, *eta = layout.unpack(data)
        try:
            return cls(steps, None if t0 == cls._T0_DEFAULT else t0, seed, tile, overlap, g / 255, b / 1e4,
                       eta[0] / 255 if eta else 0.0)
        except ValueError as exc:
            raise bs.CorruptedFile(f"invalid decoder settings in file: {exc}") from exc
