"""Availability probes: the state of what the workflow's rows depend on outside the workflow.

A metric's rows depend on its weight files (LPIPS, DISTS, Inception); a codec's rows on external
programs (BPG ``bpgenc``/``bpgdec``, VTM ``EncoderAppStatic``...) or downloaded model files (CompressAI
zoo, HiFiC checkpoints, a NeuralCompression clone). None of these are workflow outputs, so Snakemake
cannot see them change. The workflow therefore writes one small JSON *state file* per such dependency
(``resources/state/metric-<name>.json``, ``resources/state/codec-<name>.json``) while it builds the DAG
(workflow/rules/common.smk), and the jobs whose rows depend on it take it as an input. A state file is
rewritten only when its content changes, so its mtime moves exactly when a metric or codec becomes
available / unavailable or its files change (sha256), and Snakemake reruns exactly those jobs.

The content is free of paths and times on purpose: moving a cache or re-copying the same file
changes nothing in the results and reruns nothing. Probes never import torch or the codec modules
(they cost seconds, and the Snakefile is parsed for every ``snakemake`` call); sha256 digests of large
files are cached by (path, size, mtime) in ``resources/state/sha256-cache.json``.

This is harness code (like :mod:`cgdm.pipeline`): the CGDM core never imports it.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cgdm import weights as W
from cgdm.download import sha256_file
from cgdm.harness.codecs import import_object
from cgdm.imageio import atomic_write_bytes

STATE_DIR = "resources/state"
_HASH_CACHE_NAME = "sha256-cache.json"


# -- writing -----------------------------------------------------------------------------------------


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it; True when written."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    # a unique temporary name per writer: with cluster executors every job re-parses the Snakefile at once
    atomic_write_bytes(path, text.encode())
    return True


def state_text(state: dict) -> str:
    return json.dumps(state, indent=1, sort_keys=True) + "\n"


class HashCache:
    """sha256 of files keyed by (resolved path, size, mtime_ns), persisted between ``snakemake`` calls
    (hashing the ~0.9 GB of metric backbones would add a second or more to every call)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, list] = {}
        if self.path and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (ValueError, OSError):
                self.entries = {}

    def sha256(self, file: str | os.PathLike) -> str:
        file = Path(file).resolve()
        st = file.stat()
        key, stamp = str(file), [st.st_size, st.st_mtime_ns]
        hit = self.entries.get(key)
        if hit and hit[:2] == stamp:
            return hit[2]
        digest = sha256_file(file)
        self.entries[key] = [*stamp, digest]
        return digest

    def save(self) -> None:
        if self.path:
            write_if_changed(self.path, json.dumps(self.entries, indent=0, sort_keys=True) + "\n")


def _describe(files: dict[str, Path | None], hashes: HashCache) -> dict[str, str | None]:
    """label -> sha256 of the file, or None when it is missing."""
    return {label: (hashes.sha256(p) if p is not None and Path(p).is_file() else None)
            for label, p in files.items()}


# -- metrics -----------------------------------------------------------------------------------------


def metric_state(metric: str, hashes: HashCache | None = None, cache: str | os.PathLike | None = None) -> dict | None:
    """State of a metric's weight files, or None when the metric needs none (PSNR, MS-SSIM, ...).

    Mirrors :func:`cgdm.weights.status`: available when every file is present and has the
    sha256 of the weights table.
    """
    keys = W.METRIC_WEIGHTS.get(metric, ())
    if not keys:
        return None
    hashes = hashes or HashCache()
    files = {W.WEIGHTS[k].filename: W.WEIGHTS[k].path(cache) for k in keys}
    digests = _describe(files, hashes)
    expected = {W.WEIGHTS[k].filename: W.WEIGHTS[k].sha256 for k in keys}
    problems = [f"{name} missing" if d is None else f"{name} has the wrong sha256"
                for name, d in digests.items() if d != expected[name]]
    return {"kind": "metric", "name": metric, "available": not problems,
            "reason": "; ".join(problems) if problems else "ok", "sha256": digests}


# -- codecs ------------------------------------------------------------------------------------------


def _default(dotted: str, param: str):
    """Default of a constructor parameter of a (cheaply importable) codec class."""
    return inspect.signature(import_object(dotted).__init__).parameters[param].default


def _program(name: str) -> Path | None:
    if os.sep in name:
        p = Path(name).expanduser()
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which(name)
    return Path(found) if found else None


def _bpg(params: dict) -> dict[str, Path | None]:
    cls = "baselines.classical.BPG"
    return {"encoder": _program(params.get("encoder", _default(cls, "encoder"))),
            "decoder": _program(params.get("decoder", _default(cls, "decoder")))}


def _vtm(params: dict) -> dict[str, Path | None]:
    cls = "baselines.classical.VTM"
    enc = _program(params.get("encoder", _default(cls, "encoder")))
    files = {"encoder": enc, "decoder": _program(params.get("decoder", _default(cls, "decoder")))}
    if params.get("config"):
        files["config"] = Path(params["config"]).expanduser()
    elif enc is not None:  # where baselines.classical.VTM looks for it
        root = enc.resolve().parent
        cands = [root.parent / "cfg" / "encoder_intra_vtm.cfg", root.parent.parent / "cfg" / "encoder_intra_vtm.cfg"]
        files["config"] = next((c for c in cands if c.is_file()), None)
    else:
        files["config"] = None
    return files


def _torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home).expanduser() / "hub"


def _zoo(params: dict) -> dict[str, Path | None]:
    """CompressAI zoo files (``<arch>[-ms-ssim]-<q>-<sha prefix>.pth.tar`` in the torch hub cache)."""
    arch, metric = params.get("arch", "bmshj2018-hyperprior"), params.get("metric", "mse")
    cache = Path(params["cache_dir"]).expanduser() if params.get("cache_dir") else _torch_hub_dir() / "checkpoints"
    stem = arch if metric == "mse" else f"{arch}-{metric}"
    out = {}
    for q in params.get("qualities") or range(1, 9):
        found = sorted(cache.glob(f"{stem}-{int(q)}-*.pth.tar")) if cache.is_dir() else []
        out[f"q{int(q)}"] = found[0] if found else None
    return out


def _hific(params: dict) -> dict[str, Path | None]:
    repo = Path(params["repo"]).expanduser() if params.get("repo") else None
    files = {"port": repo / "src" / "compression" / "compression_utils.py" if repo else None}
    for rate, path in sorted((params.get("checkpoints") or {}).items()):
        files[f"checkpoint-{rate}"] = Path(path).expanduser()
    return files


def _msillm(params: dict) -> dict[str, Path | None]:
    if params.get("repo"):
        return {"hubconf": Path(params["repo"]).expanduser() / "hubconf.py"}
    owner, _, name = params.get("hub", "facebookresearch/NeuralCompression").partition("/")
    # torch.hub's cache folder of a GitHub repo (default branch main); weights follow the code
    return {"hubconf": _torch_hub_dir() / f"{owner}_{name}_main" / "hubconf.py"}


#: codec classes whose rows depend on files outside the workflow -> probe(params) -> {label: path | None}.
#: A new codec class that runs an external program or loads a downloaded file belongs here.
CODEC_PROBES: dict[str, Callable[[dict], dict[str, Path | None]]] = {
    "baselines.classical.BPG": _bpg,
    "baselines.classical.VTM": _vtm,
    "baselines.learned.CompressAIZoo": _zoo,
    "baselines.generative.HiFiC": _hific,
    "baselines.generative.MSILLM": _msillm,
}


def codec_state(name: str, entry: dict, hashes: HashCache | None = None) -> dict | None:
    """State of the external programs / files of one codec entry, or None when it has none."""
    probe = CODEC_PROBES.get(entry["class"])
    if probe is None:
        return None
    digests = _describe(probe(dict(entry.get("params") or {})), hashes or HashCache())
    missing = [label for label, d in digests.items() if d is None]
    return {"kind": "codec", "name": name, "class": entry["class"], "available": not missing,
            "reason": f"missing: {', '.join(missing)}" if missing else "ok", "sha256": digests}


# -- trainers ----------------------------------------------------------------------------------------

def _decoder_metrics(params: dict) -> list[str]:
    """The CGDM decoder trains with LPIPS-VGG when ``perceptual`` asks for it (``auto`` only if cached)."""
    from cgdm.train_diffusion import uses_lpips  # lazy: the trainer imports torch

    return ["lpips-vgg"] if uses_lpips(params) else []


#: trainers whose model depends on a metric's weights: trainer -> (its params -> those metrics). Fetching
#: the weights must retrain such a model; a test metric's weights (AlexNet LPIPS) retrain nothing.
TRAINER_METRICS = {
    "cgdm.train_diffusion:train_decoder": _decoder_metrics,
}


def trainer_metrics(spec: dict) -> list[str]:
    """Metrics whose weights change what the trainer of a ``models:`` entry produces."""
    rule = TRAINER_METRICS.get(spec.get("trainer", ""))
    return rule(spec.get("params") or {}) if rule else []


# -- the workflow's entry point ----------------------------------------------------------------------


def update_states(metrics: list[str], codecs: dict[str, dict], root: str | os.PathLike = STATE_DIR) -> dict[str, str]:
    """Probe every metric and codec, (re)write the state files that changed; ``{key: path}`` of every
    state file, keys ``metric:<name>`` / ``codec:<name>`` (absent: nothing outside the workflow)."""
    root = Path(root)
    hashes = HashCache(root / _HASH_CACHE_NAME)
    paths = {}
    for metric in dict.fromkeys(metrics):
        if (state := metric_state(metric, hashes)) is not None:
            paths[f"metric:{metric}"] = str(root / f"metric-{metric}.json")
            write_if_changed(paths[f"metric:{metric}"], state_text(state))
    for name, entry in codecs.items():
        if (state := codec_state(name, entry, hashes)) is not None:
            paths[f"codec:{name}"] = str(root / f"codec-{name}.json")
            write_if_changed(paths[f"codec:{name}"], state_text(state))
    hashes.save()
    return paths
