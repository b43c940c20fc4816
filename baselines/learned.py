"""Learned baselines from CompressAI: pretrained zoo models and small models trained here.

Two codecs and one trainer:

* :class:`CompressAIZoo` — CompressAI's pretrained models (bmshj2018-hyperprior, mbt2018-mean, mbt2018,
  cheng2020-anchor, ...). Rate = CompressAI quality level (1..8, cheng2020: 1..6). Weights are downloaded
  from CompressAI's URLs (or a mirror) into a cache and hash-checked; offline, the codec is unavailable.
* :class:`CompressAITrained` — the same architectures, small, trained by :func:`train` on the suite's
  training photos (quick profile). Rate = index 0..K-1 of the checkpoint's K λ in ascending order
  (0 = lowest rate).
* :func:`train` — the workflow trainer (``models:`` section of the config, ``trainer:
  baselines.learned:train``): one model per λ, all stored in one checkpoint file.

Bitstream (every byte is counted in the rate)::

    quality  uint8        which model of the codec (quality level / λ index; the decoder is told
                          nothing else)
    height   uint16 BE    image size, to crop the padded reconstruction back
    width    uint16 BE
    len(y)   uint32 BE    length of the first entropy-coded string (the latents y)
    y string, z string    CompressAI's ``compress()`` strings (z = hyper-latents, up to the end)

Images are padded to a multiple of 64 (the total down-sampling of the hyperprior), by edge replication
(cheaper to code than zeros), and the reconstruction is cropped back.

CLI::

    python -m baselines.learned --architecture mbt2018-mean --images data/train --out model.pt --steps 500
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from baselines.classical import check_rgb8
from cgdm.crops import RandomCrops
from cgdm.download import DownloadError, download, sha256_file, sha256_matches
from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.imageio import list_images
from cgdm.training import check_extension, check_restarts, params_hash, rd_optimizers, segment_seed, set_lr
from cgdm.zoo import CheckpointError, atomic_torch_save, load_training_state, save_checkpoint
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
    """Read a checkpoint written by :func:`train` (CPU tensors), hash-checked like every checkpoint of the
    suite (:func:`cgdm.zoo.load_checkpoint`); clear error when it is not one."""
    ckpt = zoo_load_checkpoint(path)
    if not (isinstance(ckpt["state_dict"], list) and ckpt["meta"].get("arch") in ARCHITECTURES):
        raise CheckpointError(f"{path}: not a checkpoint of baselines.learned.train (expected a list of "
                              f"state dicts and one of the architectures {sorted(ARCHITECTURES)})")
    return ckpt


class CompressAITrained(CompressAICodec):
    """A CompressAI architecture trained by :func:`train`. Rate = λ index 0..K-1 (ascending λ, so 0 is
    the lowest rate).

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
                                   "workflow's train rule, or python -m baselines.learned --help)")
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


# -------------------------------------------------------------------------------------------------
# training
# -------------------------------------------------------------------------------------------------

#: defaults of the trainer's ``params`` (the config's ``models: {name: {params: ...}}``)
TRAIN_DEFAULTS = {
    "architecture": "mbt2018-mean",
    "N": 64,
    "M": 96,
    "lambdas": [0.0018, 0.0035, 0.0067, 0.0130],
    "steps": 500,          # optimisation steps per λ
    "batch_size": 8,
    "patch_size": 128,     # random square crops
    "lr": 1e-3,            # higher than CompressAI's 1e-4: a few hundred steps, not a million
    "lr_final": 0.1,       # cosine decay to this fraction of lr over each λ's steps (each segment's)
    "restarts": [],        # warm restarts within each λ's steps (cgdm.training); segment by segment, see train
    "aux_lr": 1e-3,
    "clip_max_norm": 1.0,
    "warm_start": True,    # each λ starts from the previous λ's weights: far better in few steps
    "seed": 0,
    "threads": None,       # torch intra-op threads (None: leave torch's setting)
    "checkpoint_every": 100,  # steps between writes of the resumable state file
}
# params that may change between a run and its resumption (they do not change what one step does)
_RESUMABLE_KEYS = {"checkpoint_every", "threads"}


def _load_weights(net: torch.nn.Module, state: dict) -> None:
    """``net.load_state_dict(state)`` where the entropy models' CDF tables may differ in size from the
    net's: CompressAI resizes only empty tables, and each λ's model has tables of its own size."""
    from compressai.entropy_models import EntropyModel  # lazy: CompressAI is slow to import (seconds)

    for module in net.modules():
        if isinstance(module, EntropyModel):
            for name in ("_quantized_cdf", "_offset", "_cdf_length"):
                getattr(module, name).resize_(0)
    net.load_state_dict(state)


def train(params: dict, train_images: list[Path], out: Path, requires: dict[str, Path] | None = None,
          device: str = "cpu", *, on_step=None) -> dict:
    """Train one small CompressAI model per λ and write them all to one checkpoint at ``out``.

    ``params`` override :data:`TRAIN_DEFAULTS`. Loss per λ: ``λ·255²·MSE + bpp`` (CompressAI's
    :class:`~compressai.losses.RateDistortionLoss`) plus the entropy bottleneck's auxiliary loss on its
    own optimiser; the learning rate follows a cosine decay to ``lr_final`` over each λ's steps. Before a
    λ's model is kept, ``update(force=True)`` builds the CDF tables the range coder needs.

    With ``restarts`` the steps of every λ are cut into segments, trained segment by segment: first each
    λ's first segment (the chain of warm starts), then each λ's second segment from its own weights, with
    fresh optimisers and random streams of that segment and λ, and so on. A run's first segments are
    therefore a shorter run, which :func:`extend_state` continues from its weights.

    Resumable like :func:`cgdm.train.train_base`: every ``checkpoint_every`` steps ``<out>.state`` holds
    the network, both optimisers, both RNG states and the models of the (segment, λ) units already done;
    a killed run started again with the same params continues where it stopped. ``on_step(step)`` is
    called after each step (tests use it to simulate a kill). Written atomically; returns the
    checkpoint's ``meta``.
    """
    from compressai.losses import RateDistortionLoss  # lazy: CompressAI is slow to import (seconds)

    unknown = set(params) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown trainer params {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    p = {**TRAIN_DEFAULTS, **params}
    lambdas = sorted(float(x) for x in p["lambdas"])
    if not lambdas:
        raise ValueError("params.lambdas is empty")
    if not train_images:
        raise ValueError("no training images")
    steps, every = int(p["steps"]), max(1, int(p["checkpoint_every"]))
    restarts = check_restarts(p["restarts"], steps)
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    out = Path(out)
    state_path = out.with_name(out.name + ".state")
    phash = params_hash(p, _RESUMABLE_KEYS)

    gen = torch.Generator().manual_seed(int(p["seed"]))
    torch.manual_seed(int(p["seed"]))  # network initialisation
    data = RandomCrops([Path(f) for f in train_images], int(p["patch_size"]))
    net = build_model(p["architecture"], int(p["N"]), int(p["M"])).to(device)
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    bounds = [0, *restarts, steps]
    # (segment, λ index) in training order: segment-major, so the first segments are a shorter run
    units = [(seg, i) for seg in range(len(bounds) - 1) for i in range(len(lambdas))]
    states, stats, elapsed, done, resume, extended_from = [], [], 0.0, 0, None, None
    if state_path.exists():
        resume = load_training_state(state_path, phash, "different trainer params")
        states, stats, elapsed, done = resume["states"], resume["stats"], float(resume["elapsed"]), resume["done"]
        extended_from = resume.get("extended_from")

    def save_state(unit: int, step: int, opt, aux_opt, seconds: float) -> None:
        atomic_torch_save({"params_hash": phash, "params": p, "done": unit, "step": step,
                           "net": net.state_dict(), "optimizer": opt.state_dict(),
                           "aux_optimizer": aux_opt.state_dict(), "crop_rng": gen.get_state(),
                           "torch_rng": torch.get_rng_state(), "states": states, "stats": stats,
                           "elapsed": seconds, "extended_from": extended_from}, state_path)

    for k, (seg, i) in enumerate(units):
        if k < done:
            continue  # done before the run was interrupted
        lmbda, first, last = lambdas[i], bounds[seg], bounds[seg + 1]
        if seg == 0:  # the first segment: each λ starts from the previous λ's model (warm start) or afresh
            _load_weights(net, states[i - 1] if p["warm_start"] and i > 0 else init_state)
        else:
            # 1. a later segment continues this λ's own model with fresh random streams of its own, so it
            #    depends on that model's weights alone (what extend_state relies on)
            _load_weights(net, states[i])
            gen.manual_seed(segment_seed(int(p["seed"]), seg) + i)
            torch.manual_seed(segment_seed(int(p["seed"]), seg) + i)
        net.train()
        criterion = RateDistortionLoss(lmbda=lmbda)
        opt, aux_opt = rd_optimizers(net, p["lr"], p["aux_lr"])
        step = first
        if resume is not None and resume["step"] > first:  # mid-unit: its network, optimisers, streams
            _load_weights(net, resume["net"])
            step = int(resume["step"])
            opt.load_state_dict(resume["optimizer"])
            aux_opt.load_state_dict(resume["aux_optimizer"])
        if resume is not None and (step > first or seg == 0) and resume["crop_rng"] is not None:
            # the first segment's streams run on from λ to λ; a later segment's were just seeded
            gen.set_state(resume["crop_rng"])
            torch.set_rng_state(resume["torch_rng"])
        resume = None
        t0 = time.perf_counter()

        # mininterval: the bar also goes to workflow log files, one update a second is plenty there
        part = f", segment {seg + 1}/{len(bounds) - 1}" if restarts else ""
        bar = tqdm(total=last - first, initial=step - first, unit="step", mininterval=1.0,
                   desc=f"{p['architecture']} λ={lmbda:g} ({i + 1}/{len(lambdas)}{part})")
        while step < last:
            set_lr((opt,), p["lr"], step, steps, p["lr_final"], restarts)
            x = data.sample(int(p["batch_size"]), gen).to(device)
            opt.zero_grad(set_to_none=True)
            aux_opt.zero_grad(set_to_none=True)
            loss = criterion(net(x), x)
            if not math.isfinite(loss["loss"].item()) or loss["loss"].item() > 1e6:
                raise RuntimeError(f"training diverged at λ={lmbda:g} step {step} (loss {loss['loss'].item():.3g}); "
                                   f"lower params.lr (now {p['lr']:g})")
            loss["loss"].backward()
            if p["clip_max_norm"]:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(p["clip_max_norm"]))
            opt.step()
            aux = net.aux_loss()
            aux.backward()
            aux_opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss['loss'].item():.3f}", bpp=f"{loss['bpp_loss'].item():.3f}",
                            psnr=f"{-10 * math.log10(max(loss['mse_loss'].item(), 1e-10)):.2f}", refresh=False)
            if step % every == 0 and step < last:
                save_state(k, step, opt, aux_opt, elapsed + time.perf_counter() - t0)
            if on_step is not None:
                on_step(step)
        bar.close()
        net.update(force=True)
        kept = {k_: v.detach().cpu().clone() for k_, v in net.state_dict().items()}
        if seg == 0:
            states.append(kept)
        else:
            states[i] = kept
        row = {"lambda": lmbda, "loss": loss["loss"].item(), "bpp": loss["bpp_loss"].item(),
               "mse": loss["mse_loss"].item(), "aux": aux.item()}
        if seg == 0:
            stats.append(row)
        else:
            stats[i] = row
        elapsed += time.perf_counter() - t0
        save_state(k + 1, 0, opt, aux_opt, elapsed)  # this unit done: a kill from here on restarts at the next

    import compressai  # lazy: CompressAI is slow to import (seconds)

    meta = {
        "arch": p["architecture"], "N": int(p["N"]), "M": int(p["M"]), "lambdas": lambdas,
        "steps": steps, "total_steps": steps * len(lambdas),
        "batch_size": int(p["batch_size"]), "patch_size": int(p["patch_size"]), "lr": float(p["lr"]),
        "lr_final": float(p["lr_final"]), "restarts": restarts, "warm_start": bool(p["warm_start"]),
        "seed": int(p["seed"]),
        "params_hash": phash, "train_images": sorted(Path(f).name for f in train_images),
        "final": stats, "seconds": elapsed, "ms_per_step": 1000 * elapsed / (steps * len(lambdas) or 1),
        "device": str(device), "compressai": str(compressai.__version__), "torch": str(torch.__version__),
    }
    if extended_from:
        meta["extended_from"] = extended_from
    save_checkpoint(out, states, meta)
    state_path.unlink(missing_ok=True)
    return meta


def extend_state(params: dict, checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``<out>.state`` so that :func:`train` with ``params`` continues from the models of a finished,
    shorter run (``checkpoint``): same params apart from ``steps`` and ``restarts``, whose steps per λ are
    one of ``params["restarts"]`` (:func:`cgdm.training.check_extension`). Trained segment by segment,
    the continuation is then the longer run itself; float16-stored tensors (a shipped zoo file) come back
    as float32, the one difference."""
    p = {**TRAIN_DEFAULTS, **params}
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt["meta"]
    done = int(meta["steps"])
    check_extension(p, done, meta["params_hash"], _RESUMABLE_KEYS, checkpoint)
    lambdas = sorted(float(x) for x in p["lambdas"])
    if len(ckpt["state_dict"]) != len(lambdas):
        raise ValueError(f"{checkpoint} holds {len(ckpt['state_dict'])} models for {len(lambdas)} λ")
    states = [{k: v.float() if v.is_floating_point() else v for k, v in sd.items()} for sd in ckpt["state_dict"]]
    segments_done = 1 + sum(1 for r in p["restarts"] if r < done)
    path = Path(out).with_name(Path(out).name + ".state")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"params_hash": params_hash(p, _RESUMABLE_KEYS), "params": p,
                       "done": segments_done * len(lambdas), "step": 0, "net": None, "optimizer": None,
                       "aux_optimizer": None, "crop_rng": None, "torch_rng": None, "states": states,
                       "stats": list(meta.get("final") or []), "elapsed": float(meta.get("seconds", 0.0)),
                       "extended_from": str(checkpoint)}, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Train a small CompressAI model from the command line (the workflow calls :func:`train`)."""
    ap = argparse.ArgumentParser(prog="python -m baselines.learned", description=main.__doc__)
    ap.add_argument("--architecture", default=TRAIN_DEFAULTS["architecture"], choices=sorted(ARCHITECTURES))
    ap.add_argument("--images", required=True, help="folder of training images")
    ap.add_argument("--out", required=True, help="checkpoint file to write")
    ap.add_argument("-N", type=int, default=TRAIN_DEFAULTS["N"])
    ap.add_argument("-M", type=int, default=TRAIN_DEFAULTS["M"])
    ap.add_argument("--lambdas", type=float, nargs="+", default=TRAIN_DEFAULTS["lambdas"])
    ap.add_argument("--steps", type=int, default=TRAIN_DEFAULTS["steps"], help="steps per λ")
    ap.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"])
    ap.add_argument("--patch-size", type=int, default=TRAIN_DEFAULTS["patch_size"])
    ap.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"])
    ap.add_argument("--seed", type=int, default=TRAIN_DEFAULTS["seed"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    images = list_images(args.images)
    if not images:
        ap.error(f"no images in {args.images}")
    meta = train({"architecture": args.architecture, "N": args.N, "M": args.M, "lambdas": args.lambdas,
                  "steps": args.steps, "batch_size": args.batch_size, "patch_size": args.patch_size,
                  "lr": args.lr, "seed": args.seed,
                  "threads": args.threads}, images, Path(args.out), {}, args.device)
    print(f"wrote {args.out}: {meta['arch']} λ={meta['lambdas']} {meta['steps']} steps/λ, "
          f"{meta['ms_per_step']:.0f} ms/step")
    for s in meta["final"]:
        print(f"  λ={s['lambda']:g}: bpp {s['bpp']:.3f}, PSNR {-10 * math.log10(s['mse']):.2f} dB (last batch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
