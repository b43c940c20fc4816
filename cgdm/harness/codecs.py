"""The one codec interface of the suite.

Every codec (CGDM, each ablation, every baseline) is a subclass of :class:`Codec` and one entry in the
config's ``codecs:`` table::

    codecs:
      jpeg:
        class: baselines.classical.JPEG     # dotted path of the class
        rates: [10, 20, 40, 60, 80, 95]     # one value per rate point, codec-specific meaning
        params: {subsampling: "4:2:0"}      # keyword arguments of the constructor
        models: {net: hyperprior_small}     # optional: trained models (config ``models:``) it needs

The workflow never special-cases a codec by name: it builds the class with :func:`make_codec`, calls
:meth:`Codec.encode` and writes the bytes to a file, and computes bpp from the size of that file
(:func:`write_bitstream`), never from an estimate.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cgdm.imageio import atomic_write_bytes


class CodecUnavailable(RuntimeError):
    """The codec cannot run here (binary not installed, weights not reachable); the message says why
    and how to fix it. The workflow records the codec as skipped instead of failing."""


class Codec(ABC):
    """Base class: encode an 8-bit RGB image to bytes, decode bytes back to an image."""

    #: "classical", "learned", "cgdm" or "published"
    kind: ClassVar[str] = "classical"
    #: file suffix of the bitstream written to disk
    extension: ClassVar[str] = ".bin"
    #: True for codecs that hit any target bpp on an image (``encode(image, {"bpp": target})`` searches
    #: their quality parameter; they expose ``levels`` and ``last_quality``): the report's crops
    #: rate-match them (:mod:`cgdm.evaluation.crops`). Set by :class:`baselines.classical.ClassicalCodec`.
    rate_matchable: ClassVar[bool] = False

    def __init__(self, name: str, models: dict[str, str] | None = None, device: str = "cpu", **params: Any):
        self.name = name
        self.models = dict(models or {})
        self.device = device
        self.params = params

    # -- identity --------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Version of the implementation (library version, binary version, ...)."""
        return "unknown"

    @property
    def weights(self) -> str:
        """Where the weights came from: ``none``, ``pretrained:<sha256>``,
        ``trained-here:<steps>:<sha>[:losses=...]`` or ``published``."""
        return "none"

    def check_available(self) -> None:  # noqa: B027 -- optional hook: the default (always available) is a no-op
        """Raise :class:`CodecUnavailable` when the codec cannot run on this machine."""

    # -- coding ----------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        """Encode uint8 (H, W, 3) at the rate point ``rate`` (a value from the config's ``rates``)."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes produced by :meth:`encode` back to uint8 (H, W, 3)."""


@dataclass(frozen=True)
class BitstreamInfo:
    path: Path
    num_bytes: int
    num_pixels: int

    @property
    def bpp(self) -> float:
        return 8.0 * self.num_bytes / self.num_pixels


def write_bitstream(path: str | os.PathLike, data: bytes, image_shape: tuple[int, ...]) -> BitstreamInfo:
    """Write ``data`` to ``path`` and measure the rate from the file on disk."""
    path = Path(path)
    atomic_write_bytes(path, data)
    h, w = image_shape[:2]
    return BitstreamInfo(path=path, num_bytes=os.path.getsize(path), num_pixels=h * w)


def import_object(dotted: str) -> Any:
    """``package.module.Name`` (or ``package.module:Name``) -> object."""
    if ":" in dotted:
        mod, _, attr = dotted.partition(":")
    else:
        mod, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"cannot import {dotted!r}: {exc}") from exc


def make_codec(name: str, entry: dict, model_paths: dict[str, str] | None = None, device: str = "cpu") -> Codec:
    """Build the codec of one config entry. ``model_paths`` maps the entry's model roles to files."""
    cls = import_object(entry["class"])
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise TypeError(f"codec {name!r}: {entry['class']} is not a cgdm.harness.codecs.Codec subclass")
    return cls(name, models=model_paths, device=device, **entry.get("params", {}))
