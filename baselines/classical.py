"""Classical image codecs: JPEG, WebP, AVIF, JPEG 2000 (through Pillow), HEVC intra in HEIF (through
pillow-heif: libheif + x265), JPEG XL (through imagecodecs: libjxl), BPG and VTM (through their
command-line programs).

Rate values
-----------
Every classical codec accepts the same rate-value format in the config's ``rates:`` list:

* a plain number — the codec's own quality parameter (see the table below), or, when the entry has
  ``params: {rate_mode: bpp}``, a target bpp;
* ``{quality: 75}`` — the quality parameter, whatever ``rate_mode`` says;
* ``{bpp: 0.25}``, or the strings ``"bpp=0.25"`` / ``"bpp:0.25"`` — a target rate: the quality parameter
  is searched per image (bisection over the ordered quality levels, each step a real encode whose size
  is measured) and the setting whose real size is closest to the target is kept
  (``params: {match: at_most}`` keeps the largest one that does not exceed it instead). Targets outside
  the codec's range give its lowest / highest setting; :attr:`ClassicalCodec.last_quality` says which
  setting was used.

======== ============================ ================== ===============================
codec    quality parameter            range              more bits when
======== ============================ ================== ===============================
JPEG     libjpeg quality              1 .. 100           higher
WebP     libwebp quality              0 .. 100           higher
AVIF     libavif quality              0 .. 100           higher
JPEG2000 compression ratio (24/bpp)   1 .. 2000          lower
HEIC     x265 QP (constant)           0 .. 51            lower
JPEGXL   Butteraugli distance         0.05 .. 25         lower
BPG      HEVC QP                      0 .. 51            lower
VTM      VVC QP                       0 .. 63            lower
======== ============================ ================== ===============================

BPG and VTM run external programs. When they are not installed, :meth:`Codec.check_available` raises
:class:`~cgdm.harness.codecs.CodecUnavailable` whose message says how to install them (see
``baselines/README.md``); the workflow then records the codec as skipped.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL
from PIL import Image, features

from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.imageio import load_image, to_rgb8

# -------------------------------------------------------------------------------------------------
# rate values
# -------------------------------------------------------------------------------------------------

_RATE_STRING = re.compile(r"^\s*(bpp|q|quality)\s*[=:]\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class RatePoint:
    """A parsed rate value: ``mode`` is ``"quality"`` (the codec's parameter) or ``"bpp"`` (a target)."""

    mode: str
    value: float


def parse_rate(rate: Any, default_mode: str = "quality") -> RatePoint:
    """Parse one rate value of the config (see the module docstring for the accepted forms)."""
    if default_mode not in ("quality", "bpp"):
        raise ValueError(f"rate_mode must be 'quality' or 'bpp', got {default_mode!r}")
    if isinstance(rate, RatePoint):
        return rate
    if isinstance(rate, dict):
        if len(rate) != 1 or next(iter(rate)) not in ("bpp", "quality"):
            raise ValueError(f"rate {rate!r}: a dict rate must be {{bpp: <target>}} or {{quality: <value>}}")
        (mode, value), = rate.items()
        return RatePoint(mode, float(value))
    if isinstance(rate, bool):
        raise ValueError(f"rate {rate!r} is not a number")
    if isinstance(rate, (int, float)):
        return RatePoint(default_mode, float(rate))
    if isinstance(rate, str):
        m = _RATE_STRING.match(rate)
        if m:
            return RatePoint("bpp" if m.group(1) == "bpp" else "quality", float(m.group(2)))
        try:
            return RatePoint(default_mode, float(rate))
        except ValueError:
            pass
    raise ValueError(f"rate {rate!r}: expected a number, {{bpp: x}}, {{quality: x}} or 'bpp=x'")


def check_rgb8(image: np.ndarray) -> np.ndarray:
    """The one input contract of every codec: uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 RGB array of shape (H, W, 3), got {image.dtype} {image.shape}; "
            "read images with cgdm.imageio.load_image, which converts grayscale/RGBA/16-bit input"
        )
    return np.ascontiguousarray(image)


# -------------------------------------------------------------------------------------------------
# the shared classical codec: fixed quality or searched quality
# -------------------------------------------------------------------------------------------------


class ClassicalCodec(Codec):
    """A codec driven by one quality parameter, with bpp matching by bisection over its levels.

    Subclasses define :attr:`levels` (every allowed value of the quality parameter, ordered from the
    fewest to the most bits) and :meth:`encode_quality`.
    """

    kind: ClassVar[str] = "classical"
    #: False for codecs whose size is not monotone in the quality parameter at fine steps (JPEG XL):
    #: bpp matching then also tries the two levels just outside the bisection's final bracket
    monotone_sizes: ClassVar[bool] = True
    #: bpp matching (:meth:`match_bpp`) lets the report's crops rate-match every classical codec
    rate_matchable: ClassVar[bool] = True

    def __init__(self, name: str, models=None, device: str = "cpu", rate_mode: str = "quality",
                 match: str = "closest", **params: Any):
        super().__init__(name, models=models, device=device, **params)
        if rate_mode not in ("quality", "bpp"):
            raise ValueError(f"codec {name!r}: rate_mode must be 'quality' or 'bpp', got {rate_mode!r}")
        if match not in ("closest", "at_most"):
            raise ValueError(f"codec {name!r}: match must be 'closest' or 'at_most', got {match!r}")
        self.rate_mode = rate_mode
        self.match = match
        #: quality parameter used by the last :meth:`encode` (after bpp matching), for the logs
        self.last_quality: float | None = None

    # -- to be defined by each codec ---------------------------------------------------------------
    @property
    @abstractmethod
    def levels(self) -> Sequence[float]:
        """Allowed quality values, ordered so that the encoded size grows along the sequence."""

    @abstractmethod
    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        """Encode at one value of the quality parameter."""

    # -- shared logic -------------------------------------------------------------------------------
    def check_quality(self, quality: float) -> float:
        lo, hi = min(self.levels), max(self.levels)
        if not lo <= quality <= hi:
            raise ValueError(f"codec {self.name!r}: quality {quality:g} outside [{lo:g}, {hi:g}]")
        return quality

    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        image = check_rgb8(image)
        point = parse_rate(rate, self.rate_mode)
        if point.mode == "quality":
            quality = self.check_quality(point.value)
            data = self.encode_quality(image, quality)
        else:
            quality, data = self.match_bpp(image, point.value)
        self.last_quality = quality
        return data

    def match_bpp(self, image: np.ndarray, target_bpp: float) -> tuple[float, bytes]:
        """Search the quality whose real encoded size is closest to (or at most) ``target_bpp``.

        Bisection over :attr:`levels` for the first level whose size reaches the target; then the
        level just below is compared with it. Sizes are cached so each level is encoded once.
        """
        if not target_bpp > 0:
            raise ValueError(f"codec {self.name!r}: target bpp must be > 0, got {target_bpp}")
        levels = list(self.levels)
        pixels = image.shape[0] * image.shape[1]
        cache: dict[int, bytes] = {}

        def bpp(i: int) -> float:
            if i not in cache:
                cache[i] = self.encode_quality(image, levels[i])
            return 8.0 * len(cache[i]) / pixels

        lo, hi = 0, len(levels) - 1
        if bpp(hi) < target_bpp:        # even the best setting is below the target
            return levels[hi], cache[hi]
        if bpp(lo) >= target_bpp:       # even the worst setting reaches it
            return levels[lo], cache[lo]
        while hi - lo > 1:              # invariant: bpp(lo) < target <= bpp(hi)
            mid = (lo + hi) // 2
            if bpp(mid) < target_bpp:
                lo = mid
            else:
                hi = mid
        candidates = [lo, hi]
        if not self.monotone_sizes:   # a neighbour just outside the bracket can be closer
            candidates += [i for i in (lo - 1, hi + 1) if 0 <= i < len(levels)]
        if self.match == "at_most":
            below = [i for i in candidates if bpp(i) <= target_bpp]
            best = max(below, key=bpp) if below else lo
        else:
            best = min(candidates, key=lambda i: abs(bpp(i) - target_bpp))
        return levels[best], cache[best]


class PillowCodec(ClassicalCodec):
    """A codec written and read by Pillow; decoding is ``Image.open``."""

    pillow_format: ClassVar[str]
    #: name of the library in :func:`PIL.features.check` / :func:`PIL.features.version`
    pillow_feature: ClassVar[str]
    library: ClassVar[str]

    def save_kwargs(self, quality: float) -> dict:
        raise NotImplementedError

    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image, "RGB").save(buf, format=self.pillow_format, **self.save_kwargs(quality))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgb8(im)

    def check_available(self) -> None:
        if not features.check(self.pillow_feature):
            raise CodecUnavailable(f"{self.name}: this Pillow build has no {self.library} support; "
                                   "install a Pillow wheel from PyPI (pip install -U 'pillow>=11.3'), "
                                   "whose wheels bundle it")

    @property
    def version(self) -> str:
        return f"Pillow {PIL.__version__}, {self.library} {features.version(self.pillow_feature) or 'unknown'}"


_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class JPEG(PillowCodec):
    """JPEG through Pillow/libjpeg-turbo. Rate = quality 1..100.

    params: ``subsampling`` ``"4:2:0"`` (default) | ``"4:2:2"`` | ``"4:4:4"``; ``optimize`` (optimised
    Huffman tables). ``optimize`` defaults to false, Pillow's default, as in CompressAI's published JPEG
    run, which this codec then reproduces within about 0.1 dB on Kodak (tests/test_baselines_twin.py);
    ``optimize: true`` saves about 8 % of the bits at the same quality (BD-rate on Kodak).
    """

    pillow_format, pillow_feature, library = "JPEG", "jpg", "libjpeg"

    @property
    def version(self) -> str:
        turbo = features.version_feature("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
        return super().version + (f" (libjpeg-turbo {turbo})" if turbo else "")
    extension = ".jpg"

    def __init__(self, name, models=None, device="cpu", subsampling: str = "4:2:0", optimize: bool = False,
                 **params):
        super().__init__(name, models=models, device=device, **params)
        if subsampling not in _SUBSAMPLING:
            raise ValueError(f"codec {name!r}: subsampling must be one of {list(_SUBSAMPLING)}, got {subsampling!r}")
        self.subsampling = subsampling
        self.optimize = bool(optimize)

    levels = tuple(range(1, 101))

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    def save_kwargs(self, quality):
        return {"quality": int(quality), "subsampling": _SUBSAMPLING[self.subsampling],
                "optimize": self.optimize}


class WebP(PillowCodec):
    """WebP (lossy) through Pillow/libwebp. Rate = quality 0..100.

    params: ``method`` 0..6 (effort, default 4 = libwebp's default, as in CompressAI's published run).
    """

    pillow_format, pillow_feature, library = "WEBP", "webp", "libwebp"
    extension = ".webp"
    levels = tuple(range(0, 101))

    def __init__(self, name, models=None, device="cpu", method: int = 4, **params):
        super().__init__(name, models=models, device=device, **params)
        self.method = int(method)

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    def save_kwargs(self, quality):
        return {"quality": int(quality), "method": self.method, "lossless": False}


class AVIF(PillowCodec):
    """AVIF (AV1 intra) through Pillow/libavif. Rate = quality 0..100.

    params: ``subsampling`` ``"4:4:4"`` (default, like CompressAI's published AV1 run) | ``"4:2:0"``;
    ``speed`` 0..10 (default 6); one encoder thread so runs are reproducible.
    """

    pillow_format, pillow_feature, library = "AVIF", "avif", "libavif"
    extension = ".avif"
    levels = tuple(range(0, 101))

    def __init__(self, name, models=None, device="cpu", subsampling: str = "4:4:4", speed: int = 6, **params):
        super().__init__(name, models=models, device=device, **params)
        if subsampling not in ("4:4:4", "4:2:2", "4:2:0"):
            raise ValueError(f"codec {name!r}: subsampling must be 4:4:4, 4:2:2 or 4:2:0, got {subsampling!r}")
        self.subsampling = subsampling
        self.speed = int(speed)

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    def save_kwargs(self, quality):
        return {"quality": int(quality), "subsampling": self.subsampling, "speed": self.speed,
                "max_threads": 1}

    @property
    def version(self) -> str:
        try:
            from PIL import _avif  # lazy: optional codec library, checked when used

            return f"{super().version} ({_avif.codec_versions()})"   # the AV1 encoder(s) inside libavif
        except ImportError:
            return super().version


class JPEG2000(PillowCodec):
    """JPEG 2000 through Pillow/OpenJPEG. Rate = **compression ratio** (raw 24 bpp / coded bpp, so
    ratio r gives about 24/r bpp): OpenJPEG's own rate control (``quality_mode="rates"``), one layer.

    Lossy 9/7 wavelet with the colour transform (``mct``) on, as lossy JPEG 2000 is meant to be run
    (Pillow's defaults, reversible 5/3 without colour transform, waste bits on RGB). The output is a
    raw codestream (.j2k) without the JP2 box wrapper, so no container bytes are counted.
    """

    pillow_format, pillow_feature, library = "JPEG2000", "jpg_2000", "OpenJPEG"
    extension = ".j2k"
    # ratios from 2000:1 down to 1:1 on a log grid, ordered by growing size; fine enough that the
    # bpp search lands within about 1 % of the target.
    levels = tuple(float(r) for r in np.round(np.geomspace(2000.0, 1.0, 800), 4))

    def save_kwargs(self, quality):
        return {"quality_mode": "rates", "quality_layers": [float(quality)], "irreversible": True,
                "mct": 1, "no_jp2": True}


# -------------------------------------------------------------------------------------------------
# library codecs outside Pillow: HEVC intra (HEIF) and JPEG XL
# -------------------------------------------------------------------------------------------------

_HEIF_INSTALL = "pip install 'pillow-heif>=1.1' (its wheels bundle libheif with the x265 encoder and libde265)"
_JXL_INSTALL = "pip install 'imagecodecs>=2024.1' (its wheels bundle libjxl)"


class LibraryCodec(ClassicalCodec):
    """A classical codec from a Python package that bundles its library (``_lib()`` imports and checks it);
    its version names the library versions (``library_version``), or "unavailable" without the package."""

    @cached_property
    def version(self) -> str:
        try:
            return self.library_version(self._lib())
        except CodecUnavailable:
            return "unavailable"


class HEIC(LibraryCodec):
    """HEVC intra (x265) in a HEIF container, through pillow-heif/libheif: the HEVC-class baseline that
    needs no external program (BPG's codec family; BPG itself needs ``bpgenc``). Rate = **x265 QP**
    0..51 (lower = more bits), constant over the picture, as in BPG (``bpgenc -q``): the QP is handed to
    x265 as ``x265:qp``, which puts it in constant-QP mode and overrides libheif's quality-to-CRF mapping
    (``CRF = (100 - quality) // 2``, with adaptive quantisation under libheif's default tune).

    params: ``chroma`` ``"444"`` (default, like BPG's and CompressAI's published HEVC runs) | ``"422"`` |
    ``"420"``; ``preset`` x265 preset (default ``"veryslow"``, the one ``bpgenc -m 8`` selects);
    ``tune`` (default ``"ssim"``, libbpg's choice; with a constant QP it only switches psycho-visual RDO
    off, as ``"psnr"`` does). RGB goes to YCbCr with BT.601 full range (libheif's sRGB default, as in
    libbpg), signalled in an nclx box. The file is a complete .heic (ftyp/meta/mdat boxes, one picture,
    no grid, no EXIF/XMP/thumbnail): its container bytes are counted in the rate (about 380 bytes with
    the HEVC parameter sets, i.e. about 0.008 bpp on a Kodak image, which matters at the lowest rates;
    BPG's header is a few tens of bytes).
    """

    extension = ".heic"
    levels = tuple(range(51, -1, -1))

    def __init__(self, name, models=None, device="cpu", chroma: str = "444", preset: str = "veryslow",
                 tune: str = "ssim", **params):
        super().__init__(name, models=models, device=device, **params)
        if str(chroma) not in ("444", "422", "420"):
            raise ValueError(f"codec {name!r}: chroma must be '444', '422' or '420', got {chroma!r}")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                   "veryslow", "placebo")
        if preset not in presets:
            raise ValueError(f"codec {name!r}: preset must be one of {', '.join(presets)}, got {preset!r}")
        if tune not in ("psnr", "ssim", "grain", "fastdecode"):
            raise ValueError(f"codec {name!r}: tune must be psnr, ssim, grain or fastdecode, got {tune!r}")
        self.chroma, self.preset, self.tune = str(chroma), preset, tune

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    @staticmethod
    def _lib():
        try:
            import pillow_heif  # lazy: optional codec library, checked when used
        except ImportError as exc:
            raise CodecUnavailable(f"HEIC: pillow-heif is not installed ({exc}); {_HEIF_INSTALL}") from exc
        return pillow_heif

    def check_available(self) -> None:
        encoders = self._lib().libheif_info().get("encoders", {})
        if "x265" not in encoders:
            raise CodecUnavailable(f"{self.name}: this libheif has no x265 encoder (encoders: "
                                   f"{', '.join(encoders) or 'none'}); {_HEIF_INSTALL}")

    def library_version(self, lib) -> str:
        info = lib.libheif_info()
        x265 = info.get("encoders", {}).get("x265", "no x265")
        de265 = info.get("decoders", {}).get("libde265", "no libde265")
        return (f"pillow-heif {lib.__version__}, libheif {info.get('libheif', 'unknown')}, {x265}, {de265} "
                f"({self.chroma}, 8-bit, constant QP, preset {self.preset}, tune {self.tune})")

    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        lib = self._lib()
        h, w = image.shape[:2]
        buf = io.BytesIO()
        # a fresh enc_params dict per call: pillow-heif writes the chroma into the dict it is given.
        # "x265:qp" is parsed by x265 after libheif's own settings: constant QP, libheif's CRF unused.
        lib.encode("RGB", (w, h), image.tobytes(), buf, quality=50, chroma=self.chroma,
                   enc_params={"preset": self.preset, "tune": self.tune, "x265:qp": str(int(quality))},
                   save_nclx_profile=True, tile_size=0, exif=None, xmp=None)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        heif = self._lib().open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        return to_rgb8(heif.to_pillow())


class JPEGXL(LibraryCodec):
    """JPEG XL (libjxl, lossy VarDCT) through imagecodecs. Rate = **Butteraugli distance** 0.05 .. 25
    (libjxl's own quality parameter; lower = more bits; 1.0 is "visually lossless", 25 is the most
    libjxl allows, which ends this codec's range at about 0.1 bpp on Kodak).

    params: ``effort`` 1..9 (default 7, libjxl's default); one thread, so runs are reproducible. The
    output is a bare JPEG XL codestream (no ISOBMFF container), so no container bytes are counted.
    """

    extension = ".jxl"
    # distances from 25 down to 0.05 on a log grid, ordered by growing size (about 2.6 % apart); at such
    # steps libjxl's size is not strictly monotone in the distance (±1-2 %), hence ``monotone_sizes``
    levels = tuple(float(d) for d in np.round(np.geomspace(25.0, 0.05, 240), 4))
    monotone_sizes = False

    def __init__(self, name, models=None, device="cpu", effort: int = 7, **params):
        super().__init__(name, models=models, device=device, **params)
        if not 1 <= int(effort) <= 9:
            raise ValueError(f"codec {name!r}: effort must be 1..9, got {effort!r}")
        self.effort = int(effort)

    @staticmethod
    def _lib():
        try:
            import imagecodecs  # lazy: optional codec library, checked when used
        except ImportError as exc:
            raise CodecUnavailable(f"JPEG XL: imagecodecs is not installed ({exc}); {_JXL_INSTALL}") from exc
        if not imagecodecs.JPEGXL.available:
            raise CodecUnavailable(f"JPEG XL: this imagecodecs build has no libjxl; {_JXL_INSTALL}")
        return imagecodecs

    def check_available(self) -> None:
        self._lib()

    def library_version(self, lib) -> str:
        return f"imagecodecs {lib.__version__}, {lib.jpegxl_version()} (VarDCT, effort {self.effort})"

    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        return bytes(self._lib().jpegxl_encode(image, distance=float(quality), effort=self.effort,
                                               lossless=False, usecontainer=False, numthreads=1))

    def decode(self, data: bytes) -> np.ndarray:
        out = np.asarray(self._lib().jpegxl_decode(data, numthreads=1))
        if out.ndim == 2:
            out = np.repeat(out[:, :, None], 3, axis=2)
        if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
            raise ValueError(f"codec {self.name!r}: decoded {out.dtype} {out.shape}, expected uint8 RGB")
        return out


# -------------------------------------------------------------------------------------------------
# external programs: BPG and VTM
# -------------------------------------------------------------------------------------------------


def find_program(program: str) -> str | None:
    """Absolute path of ``program`` (a name looked up on PATH, or a path)."""
    if os.sep in program or (os.altsep and os.altsep in program):
        p = Path(program).expanduser()
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which(program)


def run_program(cmd: list, what: str, timeout: float | None = None) -> str:
    """Run a command; on failure raise RuntimeError with its output (the codec's own error text)."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
    return out


def _program_banner(program: str) -> str:
    """Whatever a program prints about itself when asked for help (many exit non-zero then)."""
    try:
        proc = subprocess.run([program, "-h"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def _program_version(program: str, pattern: str) -> str | None:
    """The version ``pattern`` (one group) finds in ``program``'s banner: None when the program is not
    found, ``"unknown"`` when the banner does not match."""
    path = find_program(program)
    if not path:
        return None
    m = re.search(pattern, _program_banner(path))
    return m.group(1) if m else "unknown"


BPG_INSTALL = (
    "BPG is not installed: build libbpg 0.9.8 (https://bellard.org/bpg/, needs cmake, yasm, libpng, "
    "libjpeg; `make` then `make install` puts bpgenc/bpgdec on PATH) or point the codec's params "
    "`encoder`/`decoder` at the programs"
)

VTM_INSTALL = (
    "VTM is not installed: `git clone https://vcgit.hhi.fraunhofer.de/jvet/VVCSoftware_VTM.git`, "
    "`cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j`, then put bin/EncoderAppStatic "
    "and bin/DecoderAppStatic on PATH or set the codec's params `encoder`, `decoder` and `config` "
    "(cfg/encoder_intra_vtm.cfg of the VTM tree)"
)


class BPG(ClassicalCodec):
    """BPG (HEVC intra, Fabrice Bellard's libbpg) through ``bpgenc``/``bpgdec``. Rate = QP 0..51.

    params: ``encoder``/``decoder`` (names on PATH or paths, default ``bpgenc``/``bpgdec``),
    ``subsampling`` ``"444"`` (default) | ``"420"``, ``bit_depth`` 8 (default) | 10, ``color``
    ``"ycbcr"`` (default) | ``"rgb"``, ``hevc`` ``"x265"`` (default) | ``"jctvc"``, ``effort`` 1..9
    (bpgenc ``-m``, default 8). The defaults match CompressAI's published BPG run (4:4:4, x265, YCbCr).
    bpgenc converts RGB to YCbCr itself (BT.601 full range, libbpg's default), so the image is handed
    over losslessly as PNG.
    """

    extension = ".bpg"
    levels = tuple(range(51, -1, -1))

    def __init__(self, name, models=None, device="cpu", encoder: str = "bpgenc", decoder: str = "bpgdec",
                 subsampling: str = "444", bit_depth: int = 8, color: str = "ycbcr", hevc: str = "x265",
                 effort: int = 8, **params):
        super().__init__(name, models=models, device=device, **params)
        if str(subsampling) not in ("444", "422", "420"):
            raise ValueError(f"codec {name!r}: subsampling must be '444', '422' or '420', got {subsampling!r}")
        if int(bit_depth) not in (8, 10, 12):
            raise ValueError(f"codec {name!r}: bit_depth must be 8, 10 or 12, got {bit_depth!r}")
        self.encoder, self.decoder = encoder, decoder
        self.subsampling, self.bit_depth = str(subsampling), int(bit_depth)
        self.color, self.hevc, self.effort = color, hevc, int(effort)

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    def _programs(self) -> tuple[str, str]:
        enc, dec = find_program(self.encoder), find_program(self.decoder)
        missing = [p for p, found in ((self.encoder, enc), (self.decoder, dec)) if not found]
        if missing:
            raise CodecUnavailable(f"{self.name}: {', '.join(missing)} not found. {BPG_INSTALL}")
        return enc, dec

    def check_available(self) -> None:
        self._programs()

    @cached_property
    def version(self) -> str:
        v = _program_version(self.encoder, r"version\s+([\w.\-]+)")
        if v is None:
            return "unavailable"
        return f"libbpg {v} ({self.hevc}, {self.subsampling}, {self.bit_depth}-bit, {self.color})"

    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        enc, _ = self._programs()
        with tempfile.TemporaryDirectory(prefix="bpg-") as tmp:
            src, out = Path(tmp, "in.png"), Path(tmp, "out.bpg")
            Image.fromarray(image, "RGB").save(src)
            run_program([enc, "-o", out, "-q", int(quality), "-f", self.subsampling, "-c", self.color,
                         "-b", self.bit_depth, "-e", self.hevc, "-m", self.effort, src], "bpgenc")
            return out.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, dec = self._programs()
        with tempfile.TemporaryDirectory(prefix="bpg-") as tmp:
            src, out = Path(tmp, "in.bpg"), Path(tmp, "out.png")
            src.write_bytes(data)
            run_program([dec, "-o", out, src], "bpgdec")   # 8-bit PNG output (bpgdec's default)
            return load_image(out)


# -- YCbCr 4:4:4 raw files (VTM input/output) ------------------------------------------------------


#: ITU-R BT.709 luma weights (Kr, Kg, Kb), the ones CompressAI's VTM benchmark uses
BT709 = (0.2126, 0.7152, 0.0722)


def rgb_to_ycbcr444(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> YCbCr planes (3, H, W), BT.709 full range, ``bit_depth`` bits, rounded.

    The same conversion as CompressAI's VTM benchmark (:func:`compressai.transforms.functional.rgb2ycbcr`,
    checked against it in the tests) written in numpy, because importing compressai costs seconds per job;
    unlike that benchmark, values are rounded to the nearest code (not truncated) and 10-bit is supported.
    """
    image = check_rgb8(image)
    kr, kg, kb = BT709
    r, g, b = np.moveaxis(image.astype(np.float64) / 255.0, -1, 0)
    y = kr * r + kg * g + kb * b
    cb = 0.5 * (b - y) / (1 - kb) + 0.5
    cr = 0.5 * (r - y) / (1 - kr) + 0.5
    peak = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth <= 8 else np.uint16
    return np.round(np.clip(np.stack([y, cb, cr]), 0, 1) * peak).astype(dtype)


def ycbcr444_to_rgb(planes: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr444`: planes (3, H, W) -> uint8 RGB (H, W, 3), rounded."""
    kr, kg, kb = BT709
    y, cb, cr = planes.astype(np.float64) / ((1 << bit_depth) - 1)
    r = y + (2 - 2 * kr) * (cr - 0.5)
    b = y + (2 - 2 * kb) * (cb - 0.5)
    g = (y - kr * r - kb * b) / kg
    return np.round(np.clip(np.stack([r, g, b], axis=-1), 0, 1) * 255.0).astype(np.uint8)


def write_yuv444(path: str | os.PathLike, planes: np.ndarray, bit_depth: int) -> None:
    """Raw planar file: all of Y, then all of Cb, then all of Cr; 1 byte per sample at 8 bits,
    2 bytes little-endian above (the layout VTM reads with ``--InputBitDepth``)."""
    dtype = np.dtype(np.uint8) if bit_depth <= 8 else np.dtype("<u2")
    Path(path).write_bytes(np.ascontiguousarray(planes, dtype=dtype).tobytes())


def read_yuv444(path: str | os.PathLike, width: int, height: int, bit_depth: int) -> np.ndarray:
    """Read a raw planar 4:4:4 file written by VTM's decoder (``-d bit_depth``) -> (3, H, W)."""
    dtype = np.dtype(np.uint8) if bit_depth <= 8 else np.dtype("<u2")
    raw = np.fromfile(path, dtype=dtype)
    if raw.size != 3 * width * height:
        raise RuntimeError(f"{path}: {raw.size} samples, expected 3x{width}x{height} (4:4:4, {bit_depth}-bit)")
    return raw.reshape(3, height, width)


class VTM(ClassicalCodec):
    """VVC intra through the VTM reference software. Rate = QP 0..63.

    The RGB image is converted to YCbCr 4:4:4 (BT.709 full range, rounded; :func:`rgb_to_ycbcr444`) at
    ``bit_depth`` bits, written as a raw planar file, encoded with the all-intra configuration, decoded
    at the same bit depth and converted back to 8-bit RGB.

    params: ``encoder``/``decoder`` (default ``EncoderAppStatic``/``DecoderAppStatic``), ``config``
    (``encoder_intra_vtm.cfg``; default: looked up in the ``cfg`` folder of the VTM tree next to the
    encoder), ``bit_depth`` 10 (default; avoids an 8-bit rounding of chroma before coding) | 8.

    The VVC bitstream is preceded by a 4-byte header (width, height as big-endian uint16) because the
    raw decoder output does not say the picture size; those 4 bytes are counted in the rate.
    """

    extension = ".vvc"
    levels = tuple(range(63, -1, -1))

    def __init__(self, name, models=None, device="cpu", encoder: str = "EncoderAppStatic",
                 decoder: str = "DecoderAppStatic", config: str | None = None, bit_depth: int = 10, **params):
        super().__init__(name, models=models, device=device, **params)
        if int(bit_depth) not in (8, 10):
            raise ValueError(f"codec {name!r}: bit_depth must be 8 or 10, got {bit_depth!r}")
        self.encoder, self.decoder, self.config = encoder, decoder, config
        self.bit_depth = int(bit_depth)

    def check_quality(self, quality):
        super().check_quality(quality)
        return int(round(quality))

    def _programs(self) -> tuple[str, str, str]:
        enc, dec = find_program(self.encoder), find_program(self.decoder)
        missing = [p for p, found in ((self.encoder, enc), (self.decoder, dec)) if not found]
        if missing:
            raise CodecUnavailable(f"{self.name}: {', '.join(missing)} not found. {VTM_INSTALL}")
        if self.config:
            cfg = Path(self.config).expanduser()
            candidates = [cfg]
        else:
            root = Path(enc).resolve().parent
            candidates = [root.parent / "cfg" / "encoder_intra_vtm.cfg",
                          root.parent.parent / "cfg" / "encoder_intra_vtm.cfg"]
        cfg = next((c for c in candidates if c.is_file()), None)
        if cfg is None:
            raise CodecUnavailable(f"{self.name}: encoder configuration not found (tried "
                                   f"{', '.join(map(str, candidates))}); set params.config to "
                                   "cfg/encoder_intra_vtm.cfg of the VTM tree")
        return enc, dec, str(cfg)

    def check_available(self) -> None:
        self._programs()

    @cached_property
    def version(self) -> str:
        v = _program_version(self.encoder, r"Version\s+([\w.\-]+)")
        if v is None:
            return "unavailable"
        return f"VTM {v} (intra, YCbCr 4:4:4, {self.bit_depth}-bit)"

    def encode_quality(self, image: np.ndarray, quality: float) -> bytes:
        enc, _, cfg = self._programs()
        h, w = image.shape[:2]
        if h > 0xFFFF or w > 0xFFFF:
            raise ValueError(f"codec {self.name!r}: image {w}x{h} too large for the 16-bit size header")
        with tempfile.TemporaryDirectory(prefix="vtm-") as tmp:
            yuv, out = Path(tmp, "in.yuv"), Path(tmp, "out.bin")
            write_yuv444(yuv, rgb_to_ycbcr444(image, self.bit_depth), self.bit_depth)
            run_program([enc, "-c", cfg, "-i", yuv, "-b", out, "-o", os.devnull, "-q", int(quality),
                         "-wdt", w, "-hgt", h, "-fr", 1, "-f", 1,
                         "--InputChromaFormat=444", "--ChromaFormatIDC=444",
                         f"--InputBitDepth={self.bit_depth}", f"--OutputBitDepth={self.bit_depth}",
                         "--ConformanceWindowMode=1"], "VTM encoder")
            return w.to_bytes(2, "big") + h.to_bytes(2, "big") + out.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        _, dec, _ = self._programs()
        if len(data) < 5:
            raise ValueError(f"codec {self.name!r}: bitstream of {len(data)} bytes is too short")
        w, h = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        with tempfile.TemporaryDirectory(prefix="vtm-") as tmp:
            src, rec = Path(tmp, "in.bin"), Path(tmp, "rec.yuv")
            src.write_bytes(data[4:])
            run_program([dec, "-b", src, "-o", rec, "-d", self.bit_depth], "VTM decoder")
            planes = read_yuv444(rec, w, h, self.bit_depth)
        return ycbcr444_to_rgb(planes, self.bit_depth)


__all__ = [
    "RatePoint", "parse_rate", "check_rgb8", "ClassicalCodec", "PillowCodec",
    "JPEG", "WebP", "AVIF", "JPEG2000", "HEIC", "JPEGXL", "BPG", "VTM",
    "rgb_to_ycbcr444", "ycbcr444_to_rgb", "write_yuv444", "read_yuv444",
    "BPG_INSTALL", "VTM_INSTALL",
]
