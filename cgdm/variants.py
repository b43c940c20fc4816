"""CGDM's ablation variants: which components are on (:class:`Variant`), and their header flags.

==================  ==========================================================  ======================
switch              effect                                                      where recorded
==================  ==========================================================  ======================
``no_consistency``  no consistency branch: no consistency features, no          decoder checkpoint
                    consistency loss, no sampling guidance, no fusion            + ``NO_CONSISTENCY``
``no_sff``          fixed fusion (gate 0.5): no SFF stream (the file lacks its   decoder checkpoint
                    ``sff`` section), the syntax vector is unused                + ``NO_SFF``
``no_boundary``     independent non-overlapping patches, independent noise      ``NO_BOUNDARY`` (decode
                                                                                 option, same weights)
==================  ==========================================================  ======================

The decoder switches are architecture fields of :class:`cgdm.diffusion_decoder.DecoderConfig`; the
boundary switch is a decode path of :class:`cgdm.model.CGDM`. Each is written into a ``.cgdm`` file's
header flags (:mod:`cgdm.bitstream`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cgdm import bitstream as bs

__all__ = ["VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    """Which CGDM components are on. ``consistency`` and ``sff`` change the trained decoder;
    ``boundary`` only changes decoding."""

    consistency: bool = True
    sff: bool = True
    boundary: bool = True

    @classmethod
    def from_name(cls, name: str) -> Variant:
        """``full``, ``no_consistency``, ``no_sff``, ``no_boundary`` or a ``+``-joined combination."""
        v = cls()
        for part in str(name).split("+"):
            part = part.strip()
            if part == "full":
                continue
            key = part.removeprefix("no_")
            if not part.startswith("no_") or key not in ("consistency", "sff", "boundary"):
                raise ValueError(f"unknown CGDM variant {name!r}; use one of {sorted(VARIANTS)} (or join with '+')")
            v = replace(v, **{key: False})
        return v

    @property
    def name(self) -> str:
        off = [f"no_{k}" for k in ("consistency", "sff", "boundary") if not getattr(self, k)]
        return "+".join(off) or "full"

    @property
    def flags(self) -> int:
        return ((0 if self.consistency else bs.NO_CONSISTENCY) | (0 if self.sff else bs.NO_SFF)
                | (0 if self.boundary else bs.NO_BOUNDARY))

    @classmethod
    def from_flags(cls, flags: int) -> Variant:
        return cls(consistency=not flags & bs.NO_CONSISTENCY, sff=not flags & bs.NO_SFF,
                   boundary=not flags & bs.NO_BOUNDARY)


VARIANTS = {name: Variant.from_name(name) for name in ("full", "no_consistency", "no_sff", "no_boundary")}
