"""uint8 images <-> float tensors, and the replicate padding of the decoders: the conversions every codec
module shares (:mod:`cgdm.coder`, :mod:`cgdm.model`, :mod:`cgdm.online`).

torch is imported inside the functions: :mod:`cgdm.coder` imports this module, and ``cgdm info`` /
a refused ``cgdm decompress`` answer without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["image_to_tensor", "pad_to", "tensor_to_image"]


def image_to_tensor(image: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1]."""
    import torch  # lazy: see the module docstring (cgdm.coder must not load torch at import)

    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 array of shape (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}; "
                         "load images with cgdm.imageio.load_image")
    if not image.flags.writeable:  # e.g. np.asarray(PIL image): torch warns on read-only memory
        image = image.copy()
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """float (1, 3, H, W) in [0, 1] -> uint8 (H, W, 3), rounding to nearest."""
    # clamp copies; the rest works in place on that copy (one float temporary, not three)
    return x[0].clamp(0, 1).mul_(255).round_().byte().permute(1, 2, 0).cpu().numpy()


def pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate-pad (B, C, h, w) on the right/bottom to (height, width)."""
    import torch.nn.functional as F  # lazy: see the module docstring

    ph, pw = height - x.shape[-2], width - x.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to the smaller {(height, width)}")
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
