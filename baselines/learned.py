"""Learned baselines from CompressAI: pretrained zoo models and small models trained here.

Two codecs:

* :class:`CompressAIZoo` — CompressAI's pretrained models (bmshj2018-hyperprior, mbt2018-mean, mbt2018,
  cheng2020-anchor, ...). Rate = CompressAI quality level (1..8, cheng2020: 1..6). Weights are downloaded
  from CompressAI's URLs (or a mirror) into a cache and hash-checked; offline, the codec is unavailable.
* :class:`CompressAITrained` — the same architectures, small, trained on the suite's training photos
  (quick profile) by :func:`baselines.learned_training.train` (``trainer:
  baselines.learned_training:train`` in the config's ``models:`` section, run by ``cgdm train``): one model
  per λ, all stored in one checkpoint file. Rate = index 0..K-1 of the checkpoint's K λ in ascending order
  (0 = lowest rate).

Bitstream (every byte is counted in the rate)::

    quality  uint8        which model of the codec (quality level / λ index; the decoder is told
                          nothing else)
    height   uint16 BE    image size, to crop the padded reconstruction back
    width    uint16 BE
    len(y)   uint32 BE    length of the first entropy-coded string (the latents y)
    y string, z string    CompressAI's ``compress()`` strings (z = hyper-latents, up to the end)

Images are padded to a multiple of 64 (the total down-sampling of the hyperprior), by edge replication
(cheaper to code than zeros), and the reconstruction is cropped back.
"""

from __future__ import annotations

import os
import struct
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from baselines.classical import check_rgb8
from cgdm.download import DownloadError, download, sha256_file, sha256_matches
from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.zoo import CheckpointError
from cgdm.zoo import load_checkpoint as zoo_load_checkpoint

#: total down-sampling factor of every supported architecture (g_a: 16, h_a: 4)
PAD_MULTIPLE = 64

#: architecture name (CompressAI zoo naming) -> class name in :mod:`compressai.models`
ARCHITECTURES = {
    "bmshj2018-factorized": "FactorizedPrior",
    "bmshj2018-hyperprior": "ScaleHyperprior",
    "mbt2018-mean": "MeanScaleHyperprior",
    "mbt2018": "JointAutoregressiveHierarchicalPriors",
    "cheng2020-anchor": "Cheng2020Anchor",
    "cheng2020-attn": "Cheng2020Attention",
}

#: λ of CompressAI's zoo models, quality 1..8 (MSE), from CompressAI's documentation
COMPRESSAI_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)

_HEADER = struct.Struct(">BHHI")


def build_model(arch: str, N: int, M: int | None = None) -> torch.nn.Module:
    """A randomly initialised CompressAI model of one architecture (``cheng2020-*`` take only N)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    import compressai.models  # lazy: CompressAI is slow to import (seconds)

    cls = getattr(compressai.models, ARCHITECTURES[arch])
    if arch.startswith("cheng2020") or M is None:
        return cls(N)
    return cls(N, M)


# -------------------------------------------------------------------------------------------------
# bitstream
# -------------------------------------------------------------------------------------------------


def pack(quality: int, height: int, width: int, strings: list[bytes]) -> bytes:
    """Serialise ``[y_string, z_string]`` with the header described in the module docstring."""
    if len(strings) != 2:
        raise ValueError(f"expected 2 strings (y, z), got {len(strings)}")
    if not (0 <= quality <= 255 and 0 < height <= 0xFFFF and 0 < width <= 0xFFFF):
        raise ValueError(f"quality {quality} / size {width}x{height} do not fit the header")
    return _HEADER.pack(quality, height, width, len(strings[0])) + strings[0] + strings[1]


def unpack(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Inverse of :func:`pack`: ``(quality, height, width, [y_string, z_string])``."""
    if len(data) < _HEADER.size:
        raise ValueError(f"bitstream of {len(data)} bytes is shorter than its {_HEADER.size}-byte header")
    quality, height, width, ny = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    if ny > len(body):
        raise ValueError(f"corrupt bitstream: y string of {ny} bytes, only {len(body)} bytes follow")
    return quality, height, width, [body[:ny], body[ny:]]


def _to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).to(device, torch.float32) / 255.0


def _pad(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class CompressAICodec(Codec):
    """Encode/decode with a CompressAI model per quality level; subclasses say where models come from."""

    kind: ClassVar[str] = "learned"
    extension: ClassVar[str] = ".bin"

    def __init__(self, name, models=None, device="cpu", **params):
        super().__init__(name, models=models, device=device, **params)
        self._loaded: dict[int, torch.nn.Module] = {}

    def model(self, quality: int) -> torch.nn.Module:
        """The model of one quality level (loaded once, in eval mode, entropy tables ready)."""
        raise NotImplementedError

    def _quality(self, rate: Any) -> int:
        try:
            q = int(rate)
        except (TypeError, ValueError):
            raise ValueError(f"codec {self.name!r}: rate must be an integer quality level, got {rate!r}") from None
        if q != float(rate) or not 0 <= q <= 255:
            raise ValueError(f"codec {self.name!r}: rate must be an integer quality level, got {rate!r}")
        return q

    @torch.no_grad()
    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        image = check_rgb8(image)
        quality = self._quality(rate)
        net = self.model(quality)
        h, w = image.shape[:2]
        out = net.compress(_pad(_to_tensor(image, self.device)))
        return pack(quality, h, w, [s[0] for s in out["strings"]])

    @torch.no_grad()
    def decode(self, data: bytes) -> np.ndarray:
        quality, h, w, strings = unpack(data)
        net = self.model(quality)
        hp, wp = h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE
        z_shape = (hp // PAD_MULTIPLE, wp // PAD_MULTIPLE)
        x_hat = net.decompress([[s] for s in strings], z_shape)["x_hat"][0, :, :h, :w]
        rgb = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(rgb)

    @property
    def version(self) -> str:
        import compressai  # lazy: CompressAI is slow to import (seconds)

        return f"compressai {compressai.__version__}, torch {torch.__version__}"


# -------------------------------------------------------------------------------------------------
# models trained here
# -------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`baselines.learned_training.train` (CPU tensors), hash-checked like
    every checkpoint of the
    suite (:func:`cgdm.zoo.load_checkpoint`); clear error when it is not one."""
    ckpt = zoo_load_checkpoint(path)
    if not (isinstance(ckpt["state_dict"], list) and ckpt["meta"].get("arch") in ARCHITECTURES):
        raise CheckpointError(f"{path}: not a checkpoint of baselines.learned_training.train (expected a list of "
                              f"state dicts and one of the architectures {sorted(ARCHITECTURES)})")
    return ckpt


class CompressAITrained(CompressAICodec):
    """A CompressAI architecture trained by :func:`baselines.learned_training.train`. Rate = λ index 0..K-1
    (ascending λ, so 0 is the lowest rate).

    Config entry::

        hyperprior:
          class: baselines.learned.CompressAITrained
          rates: [0, 1, 2, 3]
          models: {net: hyperprior_small}      # a model of the config's models: section
    """

    def __init__(self, name, models=None, device="cpu", role: str = "net", **params):
        super().__init__(name, models=models, device=device, **params)
        if role not in self.models and len(self.models) == 1:
            role = next(iter(self.models))
        self.role = role

    @property
    def checkpoint_path(self) -> Path:
        if self.role not in self.models:
            raise CodecUnavailable(f"{self.name}: no trained model given (config entry needs "
                                   f"`models: {{{self.role}: <model name>}}`)")
        return Path(self.models[self.role])

    @cached_property
    def checkpoint(self) -> dict:
        if not self.checkpoint_path.is_file():
            raise CodecUnavailable(f"{self.name}: {self.checkpoint_path}: no such checkpoint; train it first (the "
                                   "workflow's train rule, or cgdm train --config FILE.yaml)")
        return load_checkpoint(self.checkpoint_path)

    def check_available(self) -> None:
        self.checkpoint  # noqa: B018 (loads and validates)

    @cached_property
    def weights(self) -> str:
        meta = self.checkpoint["meta"]
        # the hash of the weights themselves (checked at load), not of the file: its metadata holds wall
        # times, so two runs that train identical weights (e.g. one killed and resumed) share provenance
        return f"trained-here:{meta['steps']}:{meta['weights_sha256'][:12]}"

    @property
    def version(self) -> str:
        meta = self.checkpoint["meta"]
        size = f"N={meta['N']}" + (f" M={meta['M']}" if meta.get("M") else "")
        return f"{meta['arch']} {size}, {super().version}"

    def model(self, quality: int) -> torch.nn.Module:
        if quality not in self._loaded:
            ckpt = self.checkpoint
            states, meta = ckpt["state_dict"], ckpt["meta"]
            if not 0 <= quality < len(states):
                raise ValueError(f"codec {self.name!r}: rate {quality} not in 0..{len(states) - 1} "
                                 f"(the checkpoint has {len(states)} λ: {meta.get('lambdas')})")
            net = build_model(meta["arch"], meta["N"], meta.get("M"))
            net.load_state_dict(states[quality])
            self._loaded[quality] = net.to(self.device).eval()
        return self._loaded[quality]


# -------------------------------------------------------------------------------------------------
# pretrained zoo models
# -------------------------------------------------------------------------------------------------


class CompressAIZoo(CompressAICodec):
    """A pretrained CompressAI zoo model. Rate = CompressAI quality level.

    params: ``arch`` (``bmshj2018-hyperprior``, ``mbt2018-mean``, ``mbt2018``, ``cheng2020-anchor``, ...),
    ``metric`` ``"mse"`` (default) | ``"ms-ssim"``, ``qualities`` (levels to fetch in
    :meth:`check_available`; default all), ``cache_dir`` (default ``$TORCH_HOME/hub/checkpoints``, the
    cache CompressAI itself uses), ``base_url`` (a mirror holding the same file names; default
    CompressAI's bucket), ``sha256`` ({quality: full sha256} to pin files beyond the check below).

    Integrity: every CompressAI weight file name ends in ``-<first 8 hex digits of its sha256>``
    (the torch.hub convention); a downloaded file whose sha256 does not start with them (or, when
    ``sha256`` pins the full digest of that quality, differs from it) is deleted and reported.
    ``weights`` is ``pretrained:<sha256>`` of the files used.
    """

    def __init__(self, name, models=None, device="cpu", arch: str = "bmshj2018-hyperprior", metric: str = "mse",
                 qualities: list[int] | None = None, cache_dir: str | None = None, base_url: str | None = None,
                 sha256: dict | None = None, timeout: float = 60.0, **params):
        super().__init__(name, models=models, device=device, **params)
        from compressai.zoo import image as zoo  # lazy: CompressAI is slow to import (seconds)

        if arch not in zoo.model_urls:
            raise ValueError(f"codec {name!r}: no pretrained CompressAI weights for arch {arch!r}; "
                             f"choose one of {sorted(zoo.model_urls)}")
        if metric not in zoo.model_urls[arch]:
            raise ValueError(f"codec {name!r}: {arch} has metrics {sorted(zoo.model_urls[arch])}, not {metric!r}")
        self.arch, self.metric = arch, metric
        self.urls: dict[int, str] = dict(zoo.model_urls[arch][metric])
        if base_url:
            self.urls = {q: base_url.rstrip("/") + "/" + u.rsplit("/", 1)[1] for q, u in self.urls.items()}
        self.qualities = [int(q) for q in (qualities or sorted(self.urls))]
        unknown = [q for q in self.qualities if q not in self.urls]
        if unknown:
            raise ValueError(f"codec {name!r}: {arch} ({metric}) has qualities {sorted(self.urls)}, not {unknown}")
        self.cache_dir = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        self.sha256 = {int(k): str(v).lower() for k, v in (sha256 or {}).items()}
        self.timeout = float(timeout)
        self._verified: dict[int, str] = {}

    def _expected(self, quality: int) -> tuple[str, str | None]:
        """(hash prefix from the file name, pinned full sha256 or None)."""
        stem = self.urls[quality].rsplit("/", 1)[1].split(".")[0]
        return stem.rsplit("-", 1)[1].lower(), self.sha256.get(quality)

    def _want(self, quality: int) -> str:
        """The expected sha256: a pinned full digest supersedes the 8-digit prefix of the file name (e.g.
        for a mirror that serves re-exported files under CompressAI's names)."""
        prefix, full = self._expected(quality)
        return full or prefix

    def _mismatch(self, quality: int, digest: str, path: Path) -> CodecUnavailable:
        want = self._want(quality)
        want = want if len(want) >= 64 else f"{want}..."
        return CodecUnavailable(f"{self.name}: checksum mismatch for {self.urls[quality]}: sha256 {digest}, "
                                f"expected {want}; the file was deleted, download again or place the "
                                f"right file at {path}")

    def _verify(self, path: Path, quality: int) -> str:
        digest = sha256_file(path)
        if not sha256_matches(digest, self._want(quality)):
            raise self._mismatch(quality, digest, path)
        return digest

    def fetch(self, quality: int) -> Path:
        """Path of the verified weight file of one quality, downloading it when not cached."""
        url = self.urls[quality]
        path = self.cache_dir / url.rsplit("/", 1)[1]
        if quality in self._verified and path.is_file():
            return path
        if not path.is_file():
            try:
                self._verified[quality] = download(url, path, sha256=self._want(quality), timeout=self.timeout)
                return path
            except DownloadError as exc:
                if exc.digest is not None:
                    raise self._mismatch(quality, exc.digest, path) from exc
                raise CodecUnavailable(f"{self.name}: cannot download pretrained weights {url} ({exc.problem}); "
                                       f"offline? place the file at {path} or set params.base_url to a "
                                       "mirror") from exc
        try:
            self._verified[quality] = self._verify(path, quality)
        except CodecUnavailable:
            path.unlink(missing_ok=True)
            raise
        return path

    def check_available(self) -> None:
        for q in self.qualities:
            self.fetch(q)

    def model(self, quality: int) -> torch.nn.Module:
        if quality not in self._loaded:
            if quality not in self.urls:
                raise ValueError(f"codec {self.name!r}: quality {quality} not in {sorted(self.urls)}")
            import compressai.models  # lazy: CompressAI is slow to import (seconds)
            from compressai.zoo.pretrained import load_pretrained

            state = torch.load(self.fetch(quality), map_location="cpu", weights_only=True)
            cls = getattr(compressai.models, ARCHITECTURES[self.arch])
            net = cls.from_state_dict(load_pretrained(state))
            net.update(force=True)  # entropy tables are not stored in CompressAI's files
            self._loaded[quality] = net.to(self.device).eval()
        return self._loaded[quality]

    @property
    def weights(self) -> str:
        """``pretrained:<sha256>`` of the weight file used (one quality verified), else
        ``pretrained:q1=<sha12>,q2=<sha12>,...`` for the files verified so far."""
        if not self._verified:
            return f"pretrained:compressai-{self.arch}-{self.metric}"
        if len(self._verified) == 1:
            return "pretrained:" + next(iter(self._verified.values()))
        return "pretrained:" + ",".join(f"q{q}={self._verified[q][:12]}" for q in sorted(self._verified))

    @property
    def version(self) -> str:
        return f"{self.arch} ({self.metric}), {super().version}"
