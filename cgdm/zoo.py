"""Checkpoints and the model zoo.

Checkpoint files (``torch.save``) hold ``{"state_dict": ..., "meta": {...}}``. ``meta`` always has
``arch``, ``steps`` and ``weights_sha256`` (sha256 of the state dict's tensors, see
:func:`weights_sha256`); base-codec checkpoints also hold ``config`` (constructor arguments),
``lambdas`` and ``num_rates``. :func:`load_checkpoint` recomputes the hash and refuses a file whose
weights do not match it, so a damaged or hand-edited checkpoint never silently produces numbers.

The zoo table (:data:`ZOO`), like CompressAI's ``compressai.zoo``, maps a name to an architecture, its
rate points and a download URL + sha256. :func:`load_pretrained` downloads into the torch hub cache with
:func:`cgdm.download.download`, which verifies the sha256 before the file is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cgdm.download import DownloadError, download, sha256_file

__all__ = [
    "SHIPPED_DIR",
    "ZOO",
    "ShippedModel",
    "install_shipped",
    "ship",
    "shipped_models",
    "CheckpointError",
    "WeightsUnavailable",
    "ZooEntry",
    "download_weights",
    "find_by_weights_hash",
    "load_base_codec",
    "load_checkpoint",
    "load_pretrained",
    "resolve_model",
    "save_checkpoint",
    "weights_sha256",
]


class WeightsUnavailable(RuntimeError):
    """A zoo model's weights cannot be had here (none published yet, download failed); the message says
    why and how to fix it. The harness reports a codec that needs them as unavailable
    (:class:`cgdm.harness.codecs.CodecUnavailable`, same message)."""


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, of the wrong kind, or whose weights do not match
    their recorded hash."""


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    #: constructor arguments of the architecture
    config: dict[str, Any]
    #: training lambda of each rate index
    lambdas: tuple[float, ...]
    url: str
    #: sha256 of the file at ``url``; None while the weights are not published
    sha256: str | None = None
    #: meta["weights_sha256"] of the checkpoint (identifies the model in .cgdm headers)
    weights_sha256: str | None = None
    notes: str = field(default="", compare=False)


_RELEASE = "https://github.com/cgdm-suite/cgdm-suite/releases/download/weights-v1"

# No weights are published yet: the URLs are the planned release locations and the sha256 fields are
# None, so load_pretrained() refuses these entries with a message that says how to train the model
# locally (`cgdm train` / the workflow). Fill in sha256 + weights_sha256 when the release is made.
ZOO: dict[str, ZooEntry] = {
    "cgdm-base-quick": ZooEntry(
        name="cgdm-base-quick", arch="cgdm-base-vr-mshp",
        config={"N": 64, "M": 96, "num_rates": 4, "syntax_dim": 16, "syntax_pool_channels": None},
        lambdas=(0.0009, 0.0018, 0.0035, 0.0067),
        url=f"{_RELEASE}/cgdm-base-quick.pth",
        notes="quick profile: trained on data/train (40 photos), 1500 steps",
    ),
    "cgdm-base-paper": ZooEntry(
        name="cgdm-base-paper", arch="cgdm-base-vr-mshp",
        config={"N": 128, "M": 192, "num_rates": 6, "syntax_dim": 16, "syntax_pool_channels": None},
        lambdas=(0.0009, 0.0018, 0.0035, 0.0067, 0.013, 0.025),
        url=f"{_RELEASE}/cgdm-base-paper.pth",
        notes="paper size, for the paper profile",
    ),
}


# -- checkpoints ------------------------------------------------------------------------------------
def weights_sha256(state_dict: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of every tensor, in sorted name order; for a
    list of state dicts (the learned baselines' one model per lambda), over the list of their hashes.

    Independent of the pickle format and the device, so the same weights always hash the same."""
    if isinstance(state_dict, list):
        return hashlib.sha256("list|".join(weights_sha256(sd) for sd in state_dict).encode()).hexdigest()
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _atomic_write(path: str | os.PathLike, write) -> Path:
    """``write(tmp)`` into a temporary file next to ``path``, then rename: never a partial ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file + rename: an interrupted job never leaves a partial file
    (checkpoints and resumable training state alike)."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_training_state(path: str | os.PathLike, params_hash: str, mismatch: str, map_location: Any = "cpu",
                        weights_only: bool = True) -> dict:
    """A resumable training state written by :func:`atomic_torch_save`, refused (ValueError) unless it
    was made with the same params (``state["params_hash"] == params_hash``): resuming with other params
    would mix two runs. ``mismatch`` says what differs, e.g. "different training params"."""
    state = torch.load(path, map_location=map_location, weights_only=weights_only)
    if state.get("params_hash") != params_hash:
        raise ValueError(f"{path} was written with {mismatch}; delete it to start over, or restore the params "
                         "it was made with")
    return state


def save_checkpoint(path: str | os.PathLike, state_dict: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]],
                    meta: dict, **extra) -> str:
    """Write ``{"state_dict", "meta", **extra}`` atomically; ``meta["weights_sha256"]`` is filled in. The
    state dict may be a list of them (one model per lambda, as the learned baselines store).

    Returns the weights hash."""
    path = Path(path)
    state_dict = ([{k: v.detach().to("cpu") for k, v in sd.items()} for sd in state_dict]
                  if isinstance(state_dict, list) else {k: v.detach().to("cpu") for k, v in state_dict.items()})
    meta = dict(meta, weights_sha256=weights_sha256(state_dict))
    for key in ("arch", "steps"):
        if key not in meta:
            raise ValueError(f"checkpoint meta needs {key!r}")
    atomic_torch_save({"state_dict": state_dict, "meta": meta, **extra}, path)
    return meta["weights_sha256"]


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    arch: str | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` and verify its weights hash (and ``arch``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train one with `cgdm train --config ...` or run "
                              "the workflow")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises pickle/zip/runtime errors alike
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "meta" not in ckpt:
        raise CheckpointError(f"{path}: not a cgdm checkpoint (expected keys 'state_dict' and 'meta')")
    meta = ckpt["meta"]
    recorded = meta.get("weights_sha256")
    actual = weights_sha256(ckpt["state_dict"])
    if recorded != actual:
        raise CheckpointError(f"{path}: weights hash {actual[:16]} does not match the recorded "
                              f"{str(recorded)[:16]}: the file is damaged or was modified; re-download or retrain")
    if arch is not None and meta.get("arch") != arch:
        raise CheckpointError(f"{path}: architecture {meta.get('arch')!r}, expected {arch!r}")
    return ckpt


def load_base_codec(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Checkpoint -> ``(BaseCodec in eval mode with CDFs ready, meta)``."""
    from cgdm.codec import ARCH, BaseCodec  # lazy: cgdm.codec imports CompressAI (seconds); only base models need it

    ckpt = load_checkpoint(path, arch=ARCH)
    meta = ckpt["meta"]
    model = BaseCodec(**meta["config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {ARCH} with {meta['config']}: {exc}") from exc
    model.update(force=False)  # no-op when the exported CDFs are present (they are)
    return model.to(device).eval(), meta


# -- zoo --------------------------------------------------------------------------------------------
def download_weights(entry: ZooEntry, progress: bool = True) -> Path:
    """Download ``entry.url`` into ``<torch hub dir>/checkpoints`` (once) and verify its sha256."""
    if entry.sha256 is None:
        raise WeightsUnavailable(
            f"zoo model {entry.name!r}: no weights are published yet ({entry.url} is a placeholder for a "
            "future release); train it locally with `cgdm train --config ...` or the workflow")
    dest = Path(torch.hub.get_dir()) / "checkpoints" / f"{entry.name}-{entry.sha256[:8]}.pth"
    if dest.is_file() and sha256_file(dest) == entry.sha256:
        return dest
    try:
        download(entry.url, dest, sha256=entry.sha256, progress=progress)
    except DownloadError as exc:
        if exc.digest is not None:
            raise CheckpointError(f"zoo model {entry.name!r}: downloaded file has sha256 {exc.digest}, expected "
                                  f"{entry.sha256}; the download is corrupted or the release changed") from exc
        raise WeightsUnavailable(f"zoo model {entry.name!r}: download of {entry.url} failed ({exc.problem}); "
                                f"check the network, or place the file at {dest}") from exc
    return dest


def load_pretrained(name: str, device: str | torch.device = "cpu", progress: bool = True):
    """Zoo name -> ``(model, meta)``: download (once), verify the sha256, load and check the arch."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; available: {sorted(ZOO)}")
    entry = ZOO[name]
    path = download_weights(entry, progress=progress)
    model, meta = load_base_codec(path, device)
    if entry.weights_sha256 is not None and meta["weights_sha256"] != entry.weights_sha256:
        raise CheckpointError(f"zoo model {name!r}: weights hash {meta['weights_sha256']} differs from the "
                              f"table's {entry.weights_sha256}")
    return model, meta


def find_by_weights_hash(prefix: bytes | str) -> ZooEntry | None:
    """The zoo entry whose weights hash starts with ``prefix`` (the 8 bytes of a .cgdm header)."""
    prefix = prefix.hex() if isinstance(prefix, bytes) else prefix
    for entry in ZOO.values():
        if entry.weights_sha256 and entry.weights_sha256.startswith(prefix):
            return entry
    return None


def resolve_model(spec: str | os.PathLike, device: str | torch.device = "cpu"):
    """A checkpoint path or a zoo name -> ``(BaseCodec, meta)``."""
    if isinstance(spec, str) and spec in ZOO and not Path(spec).exists():
        return load_pretrained(spec, device)
    return load_base_codec(spec, device)


# -- shipped weights ----------------------------------------------------------------------------------
# The quick profile's models are trained once with the suite's own trainers (`snakemake train_zoo
# --config retrain=true`) and kept in the repository's zoo/ folder: the checkpoint files as the trainers
# wrote them (the learned baselines' one-model-per-lambda files with their large float tensors in float16,
# see _HALF_MIN; CGDM's keep float32, which their weights hash covers), plus zoo/zoo.json, the table below
# (file sha256, the exact trainer spec, provenance). The
# workflow installs a model from here instead of training it when its config entry names it (`zoo:`),
# after checking the file's sha256 and that the config's trainer spec is the one the file was trained
# with: a changed spec is an error naming the fix, never shipped weights under another model's name.

#: the repository's folder of shipped weights (next to the package in a clone / editable install)
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "zoo"
_MANIFEST = "zoo.json"
#: the parts of a config's models: entry that determine the weights
_SPEC_KEYS = ("trainer", "params", "requires")
#: float tensors of at least this many elements are stored as float16 in a shipped baselines file (a list
#: of state dicts, one per lambda): it keeps each file under 20 MB; float16 weights moved the small
#: bmshj2018's PSNR by <= 0.01 dB on the held-out photos
_HALF_MIN = 1024


def _copy_for_zoo(src: Path, dest: Path) -> str | None:
    """Copy a trained checkpoint into the zoo (a baselines file with float16 large tensors); returns the
    stored file's weights hash."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(ckpt.get("state_dict"), list):
        shutil.copyfile(src, dest)
        return ckpt["meta"].get("weights_sha256")
    states = [{k: v.half() if v.is_floating_point() and v.numel() >= _HALF_MIN else v for k, v in sd.items()}
              for sd in ckpt["state_dict"]]
    meta = dict(ckpt["meta"], stored_as=f"float16 for float tensors of >= {_HALF_MIN} elements (shipped zoo "
                "file), float32 otherwise")
    return save_checkpoint(dest, states, meta)  # the hash covers the float16 tensors the file holds


@dataclass(frozen=True)
class ShippedModel:
    name: str
    #: file name inside the zoo folder
    file: str
    sha256: str
    #: the models: entry it was trained from (trainer, params, requires)
    spec: dict[str, Any]
    #: revision, device, steps, wall / CPU seconds, weights hash, ...
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)


def _spec(entry: dict) -> dict:
    return {"trainer": entry.get("trainer"), "params": dict(entry.get("params") or {}),
            "requires": list(entry.get("requires") or [])}


def shipped_models(folder: str | os.PathLike = SHIPPED_DIR) -> dict[str, ShippedModel]:
    """The table of shipped weights (``zoo/zoo.json``); empty when the folder has none."""
    path = Path(folder) / _MANIFEST
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())
    return {r["name"]: ShippedModel(r["name"], r["file"], r["sha256"], r["spec"], r.get("provenance", {}))
            for r in rows["models"]}


def check_shipped(name: str, entry: dict, folder: str | os.PathLike = SHIPPED_DIR) -> ShippedModel:
    """The shipped model ``name`` if it was trained from exactly ``entry``'s spec; else CheckpointError."""
    table = shipped_models(folder)
    if name not in table:
        raise CheckpointError(f"no shipped weights named {name!r} in {Path(folder) / _MANIFEST} (shipped: "
                              f"{sorted(table) or 'none'}); remove `zoo:` from the model, or set retrain: true")
    shipped, wanted = table[name], _spec(entry)
    if _spec(shipped.spec) != wanted:
        diff = {k: (shipped.spec.get(k), wanted[k]) for k in _SPEC_KEYS if _spec(shipped.spec)[k] != wanted[k]}
        raise CheckpointError(f"the shipped weights {name!r} were trained with another spec than the config's "
                              f"(shipped vs config: {diff}); restore the params, or set retrain: true to train "
                              "every model with the config's params")
    return shipped


def install_shipped(name: str, entry: dict, out: str | os.PathLike,
                    folder: str | os.PathLike = SHIPPED_DIR) -> Path:
    """Copy the shipped weights ``name`` to ``out`` (atomically) after checking spec and sha256."""
    shipped = check_shipped(name, entry, folder)
    src = Path(folder) / shipped.file
    if not src.is_file():
        raise CheckpointError(f"{src}: the shipped weights {name!r} are missing; restore the zoo/ folder "
                              "(git checkout zoo) or set retrain: true")
    digest = sha256_file(src)
    if digest != shipped.sha256:
        raise CheckpointError(f"{src}: sha256 {digest} differs from zoo.json's {shipped.sha256}: the file is "
                              "damaged or was replaced; restore it (git checkout zoo) or set retrain: true")
    return _atomic_write(out, lambda tmp: shutil.copyfile(src, tmp))


def ship(models: dict[str, tuple[dict, Path, dict]], revision: str,
         folder: str | os.PathLike = SHIPPED_DIR) -> Path:
    """Copy trained checkpoints into the zoo folder and rewrite its table.

    ``models``: name -> (config entry, checkpoint path, provenance such as wall and CPU seconds). Each
    file's ``meta`` gives the steps, device and weights hash; ``revision`` is the code revision trained.
    A model whose training continued from the shipped weights (``cgdm zoo-extend``; ``meta
    ["extended_from"]``) keeps the provenance of the shipped model it continued, as ``continued_from``.
    Models already shipped and not in ``models`` stay in the table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = {n: m for n, m in shipped_models(folder).items()}
    for name, (entry, path, extra) in models.items():
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
        dest = folder / f"{name}.pt"
        prov = {"revision": revision, "device": str(meta.get("device", "?")),
                "steps": meta.get("total_steps", meta.get("steps")), "train_images": meta.get("train_images"),
                "weights_sha256": _copy_for_zoo(Path(path), dest), **extra}
        if meta.get("extended_from") and name in rows:
            prov["continued_from"] = rows[name].provenance
        if isinstance(prov["train_images"], list):
            prov["train_images"] = len(prov["train_images"])
        rows[name] = ShippedModel(name, dest.name, sha256_file(dest), _spec(entry), prov)
    table = {"models": [{"name": m.name, "file": m.file, "sha256": m.sha256, "spec": m.spec,
                         "provenance": m.provenance} for m in sorted(rows.values(), key=lambda m: m.name)]}
    (folder / _MANIFEST).write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return folder / _MANIFEST
