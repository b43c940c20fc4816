"""Images <-> ``.cgdm`` bytes with the base codec: :class:`BaseCoder` (a loaded base codec plus the identity
written into and checked against file headers).

A .cgdm file of the base codec holds three sections: ``main`` (y), ``hyper`` (z) and ``syntax``
(see :mod:`cgdm.bitstream`). Full CGDM (diffusion decoder) is :mod:`cgdm.model`'s. The command line
(``cgdm compress|decompress|info``) is :mod:`cgdm.cli_codec`; the workflow codec is
:class:`cgdm.harness.cgdm_codecs.CGDMBaseCodec`.

torch is imported inside the functions that need it (here, in :mod:`cgdm.tensors` and in
:mod:`cgdm.decode_checks`), and so is :mod:`cgdm.zoo`, which imports it: ``cgdm info`` answers without
loading torch. Full CGDM shares the checks before decoding (:mod:`cgdm.decode_checks`) and the tensor
conversions (:mod:`cgdm.tensors`): import those from there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from cgdm.bitstream import (
    MAX_PIXELS,
    CGDMHeader,
    check_model,
    check_pixel_budget,
    read_cgdm,
    write_cgdm,
)
from cgdm.decode_checks import BASE_STREAMS, check_decode_resources
from cgdm.tensors import image_to_tensor, tensor_to_image

if TYPE_CHECKING:
    import torch

__all__ = ["MODEL_ID", "BaseCoder"]

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
