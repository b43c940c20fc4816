"""Generative (GAN-trained) learned codecs: MS-ILLM and HiFiC.

Both need pretrained weights that cannot be fetched offline; then :meth:`check_available` raises
:class:`~cgdm.harness.codecs.CodecUnavailable` with the reason, the workflow records the codec as skipped, and
the published curves (``baselines/published_data/ms-illm``, ``hific``) stand in for them.

* :class:`MSILLM` — Muckley et al. (ICML 2023) through ``torch.hub.load("facebookresearch/NeuralCompression",
  "msillm_quality_<q>")`` (downloads the repository and the weights, CC-BY-NC 4.0) or a local clone of
  that repository (``params.repo``). Rate = quality ``1``..``6`` (also ``vlo1``, ``vlo2``);
  ``params.family: noganms`` gives the same autoencoder trained without the GAN loss.
* :class:`HiFiC` — Mentzer et al. (NeurIPS 2020). Google released HiFiC in TensorFlow only; the PyTorch
  port with released weights is Justin Tan's (github.com/Justin-Tan/high-fidelity-generative-compression,
  Apache-2.0, no longer maintained, weights on Google Drive: manual download). ``params.repo`` = a clone of
  that port, ``params.checkpoints`` = ``{low: path, med: path, high: path}``. Rate = ``low``/``med``/``high``.

Bitstreams start with one byte naming the rate point (the decoder gets nothing else); every byte is
counted.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from baselines.classical import check_rgb8
from cgdm.harness.codecs import Codec, CodecUnavailable

_HEADER = struct.Struct(">BHHI")  # rate index, height, width, length of the latent string


def _state_sha256(module: torch.nn.Module) -> str:
    """Hash of a network's weights (names + bytes), for ``weights = pretrained:<sha>``."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


class MSILLM(Codec):
    """MS-ILLM (NeuralCompression) through torch.hub. See the module docstring."""

    kind: ClassVar[str] = "learned"
    extension: ClassVar[str] = ".illm"
    QUALITIES: ClassVar[tuple[str, ...]] = ("1", "2", "3", "4", "5", "6", "vlo1", "vlo2")
    FACTOR: ClassVar[int] = 64  # HiFiC autoencoder's total down-sampling

    def __init__(self, name, models=None, device="cpu", family: str = "msillm",
                 hub: str = "facebookresearch/NeuralCompression", repo: str | None = None, **params):
        super().__init__(name, models=models, device=device, **params)
        if family not in ("msillm", "noganms"):
            raise ValueError(f"codec {name!r}: family must be 'msillm' or 'noganms', got {family!r}")
        self.family, self.hub, self.repo = family, hub, repo
        self._nets: dict[str, torch.nn.Module] = {}
        self._sha: dict[str, str] = {}

    def _hub_load(self, entry: str) -> torch.nn.Module:
        try:
            if self.repo:
                return torch.hub.load(self.repo, entry, source="local")
            return torch.hub.load(self.hub, entry, trust_repo=True)
        except Exception as exc:  # network errors, missing dependencies of the hub repo, bad entry name
            where = self.repo or f"github.com/{self.hub}"
            raise CodecUnavailable(f"{self.name}: cannot load {entry} from {where} ({type(exc).__name__}: "
                                   f"{exc}); MS-ILLM needs the network (torch.hub downloads the code and "
                                   "weights) or params.repo = a local clone of NeuralCompression with the "
                                   "weights in the torch hub cache") from exc

    def check_available(self) -> None:
        if self.repo:
            # a local clone: its hubconf is imported only when a model is loaded (a missing entry or
            # dependency then raises CodecUnavailable from encode)
            if not (Path(self.repo) / "hubconf.py").is_file():
                raise CodecUnavailable(f"{self.name}: torch.hub cannot reach {self.repo} (no hubconf.py there); "
                                       "params.repo must be a clone of facebookresearch/NeuralCompression")
            return
        try:
            entries = torch.hub.list(self.hub, trust_repo=True)
        except Exception as exc:
            raise CodecUnavailable(f"{self.name}: torch.hub cannot reach {self.hub} "
                                   f"({type(exc).__name__}: {exc}); offline, use the published MS-ILLM curve "
                                   "(ms-illm/results.csv)") from exc
        if f"{self.family}_quality_1" not in entries:
            raise CodecUnavailable(f"{self.name}: {self.hub} has no {self.family}_quality_* entry")

    def _quality(self, rate: Any) -> str:
        q = str(rate)
        if q not in self.QUALITIES:
            raise ValueError(f"codec {self.name!r}: rate must be one of {list(self.QUALITIES)}, got {rate!r}")
        return q

    def model(self, quality: str) -> torch.nn.Module:
        if quality not in self._nets:
            net = self._hub_load(f"{self.family}_quality_{quality}").eval()
            net.update_tensor_devices("compress")
            self._sha[quality] = _state_sha256(net)
            self._nets[quality] = net
        return self._nets[quality]

    @torch.no_grad()
    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        image = check_rgb8(image)
        quality = self._quality(rate)
        out = self.model(quality).compress(_to_tensor(image), force_cpu=True)
        (y,), (z,) = out.latent_strings, out.hyper_latent_strings
        h, w = image.shape[:2]
        return _HEADER.pack(self.QUALITIES.index(quality), h, w, len(y)) + y + z

    @torch.no_grad()
    def decode(self, data: bytes) -> np.ndarray:
        qi, h, w, ny = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        net = self.model(self.QUALITIES[qi])
        nc = importlib.import_module("neuralcompression")  # imported by torch.hub.load above
        hp, wp = h + (-h) % self.FACTOR, w + (-w) % self.FACTOR
        compressed = nc.HyperpriorCompressedOutput(latent_strings=[body[:ny]], hyper_latent_strings=[body[ny:]],
                                                   image_size=(h, w), padded_size=(hp, wp))
        return _to_uint8(net.decompress(compressed, force_cpu=True))

    @property
    def weights(self) -> str:
        if not self._sha:
            return f"pretrained:{self.family}"
        return "pretrained:" + ",".join(self._sha[q] for q in sorted(self._sha))

    @property
    def version(self) -> str:
        return f"{self.family} via torch.hub {self.repo or self.hub}, torch {torch.__version__}"


class HiFiC(Codec):
    """HiFiC through Justin Tan's PyTorch port (a local clone + its released checkpoints).

    The port's own container (``save_compressed_format``) is used unchanged after the 1-byte rate index.
    """

    kind: ClassVar[str] = "learned"
    extension: ClassVar[str] = ".hfc"
    RATES: ClassVar[tuple[str, ...]] = ("low", "med", "high")
    INSTALL: ClassVar[str] = (
        "HiFiC needs a clone of github.com/Justin-Tan/high-fidelity-generative-compression (params.repo, its "
        "requirements installed) and its released checkpoints (params.checkpoints: {low, med, high}: paths; "
        "links in that repository's README); offline, use the published HiFiC curve (hific/data.csv)"
    )

    def __init__(self, name, models=None, device="cpu", repo: str | None = None,
                 checkpoints: dict[str, str] | None = None, **params):
        super().__init__(name, models=models, device=device, **params)
        self.repo = Path(repo).expanduser() if repo else None
        self.checkpoints = {str(k): Path(v).expanduser() for k, v in (checkpoints or {}).items()}
        self._nets: dict[str, Any] = {}
        self._sha: dict[str, str] = {}

    def _port(self):
        """The port's modules (it is a folder of scripts, not a package: imported from ``repo``)."""
        if self.repo is None or not (self.repo / "src" / "compression" / "compression_utils.py").is_file():
            raise CodecUnavailable(f"{self.name}: port not found at {self.repo}. {self.INSTALL}")
        if str(self.repo) not in sys.path:
            sys.path.insert(0, str(self.repo))
        try:
            utils = importlib.import_module("src.helpers.utils")
            cu = importlib.import_module("src.compression.compression_utils")
            cfg = importlib.import_module("default_config")
        except Exception as exc:
            raise CodecUnavailable(f"{self.name}: cannot import the HiFiC port from {self.repo} "
                                   f"({type(exc).__name__}: {exc}). {self.INSTALL}") from exc
        return utils, cu, cfg

    def check_available(self) -> None:
        self._port()
        missing = [r for r in self.RATES if r not in self.checkpoints or not self.checkpoints[r].is_file()]
        if len(missing) == len(self.RATES):
            raise CodecUnavailable(f"{self.name}: no checkpoint found ({missing}). {self.INSTALL}")

    def model(self, rate: str):
        if rate not in self._nets:
            if rate not in self.checkpoints or not self.checkpoints[rate].is_file():
                raise CodecUnavailable(f"{self.name}: no checkpoint for rate {rate!r}. {self.INSTALL}")
            utils, _, cfg = self._port()
            args, net, _ = utils.load_model(str(self.checkpoints[rate]), logging.getLogger(self.name),
                                            torch.device(self.device), model_mode=cfg.ModelModes.EVALUATION,
                                            current_args_d=None, prediction=True, strict=False, silent=True)
            net.Hyperprior.hyperprior_entropy_model.build_tables()
            self._sha[rate] = _state_sha256(net)
            self._nets[rate] = (args, net.eval())
        return self._nets[rate]

    @torch.no_grad()
    def encode(self, image: np.ndarray, rate: Any) -> bytes:
        image = check_rgb8(image)
        rate = str(rate)
        if rate not in self.RATES:
            raise ValueError(f"codec {self.name!r}: rate must be one of {list(self.RATES)}, got {rate!r}")
        args, net = self.model(rate)
        _, cu, _ = self._port()
        x = _to_tensor(image).to(self.device)
        if getattr(args, "normalize_input_image", False):
            x = x * 2 - 1   # the port's models may be trained on [-1, 1] input
        with tempfile.TemporaryDirectory(prefix="hific-") as tmp:
            path = Path(tmp, "x.hfc")
            cu.save_compressed_format(net.compress(x), out_path=str(path))
            return bytes([self.RATES.index(rate)]) + path.read_bytes()

    @torch.no_grad()
    def decode(self, data: bytes) -> np.ndarray:
        rate = self.RATES[data[0]]
        args, net = self.model(rate)
        _, cu, _ = self._port()
        with tempfile.TemporaryDirectory(prefix="hific-") as tmp:
            path = Path(tmp, "x.hfc")
            path.write_bytes(data[1:])
            y = net.decompress(cu.load_compressed_format(str(path)))
        if getattr(args, "normalize_input_image", False):
            y = (y + 1) / 2
        return _to_uint8(y)

    @property
    def weights(self) -> str:
        if not self._sha:
            return "pretrained:hific-port"
        return "pretrained:" + ",".join(self._sha[r] for r in sorted(self._sha))

    @property
    def version(self) -> str:
        return f"HiFiC (Justin-Tan PyTorch port at {self.repo}), torch {torch.__version__}"


__all__ = ["MSILLM", "HiFiC"]
