"""Reading and writing images with one documented conversion rule.

Every codec in the suite works on 8-bit RGB arrays of shape (H, W, 3), dtype uint8. Inputs are
converted as follows (the same rule for the CLI, the workflow and the tests):

* 8-bit RGB: used as is.
* Grayscale (L, 1-bit, I;16, I, F): replicated to three channels; 16-bit / 32-bit values are scaled to
  8 bits by ``round(v / max_of_type * 255)``.
* 16-bit RGB (PNG/TIFF): Pillow keeps the most significant byte (``v >> 8``).
* Palette (P, PA): expanded through the palette.
* With alpha (RGBA, LA, PA): alpha is **dropped** (not composited): codecs compress colour only, and the
  evaluation compares colour only. A warning says so.
* CMYK, YCbCr, LAB: converted to RGB by Pillow.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

SUPPORTED_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm"}


class ImageReadError(ValueError):
    """An input image that cannot be read or converted."""


def to_rgb8(im: Image.Image) -> np.ndarray:
    """Convert a Pillow image to uint8 (H, W, 3) following the module's rule."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA"):
        warnings.warn(f"image has an alpha channel ({mode}); alpha is dropped", stacklevel=2)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max() <= 65535) else float(arr.max() or 1)
        if mode == "F":
            peak = 1.0 if arr.max() <= 1.0 else float(arr.max())
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr8[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); raises ImageReadError with the reason."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb8(im)
    except ImageReadError:
        raise
    except Exception as exc:  # Pillow raises many types; one clear error for the caller
        raise ImageReadError(
            f"{path}: cannot read as an image ({exc}); supported: PNG, JPEG, TIFF, BMP, WebP"
        ) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file + rename so an interrupted job never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save a uint8 (H, W, 3) array as PNG, atomically."""
    import io

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file())
