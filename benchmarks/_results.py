"""Where the benchmarks keep their numbers: ``benchmarks/results/<name>.json``, with provenance.

Every number the README states comes from one of these files (the repository keeps them), so a reader can
see which code, machine and command produced it::

    import sys; from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root
    from benchmarks._results import save

    save("metrics", {"rows": [...], "summary": {...}})   # -> benchmarks/results/metrics.json

The file is ``{"name", "provenance": {...}, "results": <payload>}``. ``provenance`` holds the git revision
of the code (``+dirty`` when cgdm/, baselines/ or workflow/ have uncommitted changes), the UTC date, the
machine (cores, CPU model, GPU when CUDA is used), Python / torch / numpy versions and the command line.
NumPy scalars and arrays, paths and pandas frames (as a list of row dicts) are converted; NaN and
infinity become ``null`` so the file stays strict JSON. ``CGDM_BENCHMARK_RESULTS`` (or ``directory=``)
redirects the output, e.g. in tests, so they never overwrite the kept files.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
ENV_DIR = "CGDM_BENCHMARK_RESULTS"


def results_dir(directory: str | os.PathLike | None = None) -> Path:
    """The folder :func:`save` writes to: ``directory``, else ``$CGDM_BENCHMARK_RESULTS``, else the kept one."""
    return Path(directory or os.environ.get(ENV_DIR) or RESULTS_DIR)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _relative(path: str) -> str:
    """A script path relative to the repository when inside it (so the command reads the same anywhere)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return path


def provenance(command: list[str] | None = None) -> dict:
    """Code revision, date, machine and library versions of this run."""
    from cgdm.results import code_revision

    info = {
        "code_revision": code_revision(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(command if command is not None else ["python", _relative(sys.argv[0]), *sys.argv[1:]]),
        # no host name: it can identify a person's machine, and only the hardware matters for timings
        "machine": {"cores": os.cpu_count(), "cpu": _cpu_model(), "system": platform.platform()},
        "python": platform.python_version(),
    }
    for mod in ("numpy", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["machine"]["gpu"] = torch.cuda.get_device_name(0)
    info["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return info


def _jsonable(obj):
    """Recursively convert to strict-JSON types (NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return str(obj)
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas DataFrame
        return _jsonable(obj.reset_index().to_dict(orient="records") if obj.index.name else
                         obj.to_dict(orient="records"))
    if hasattr(obj, "tolist"):  # numpy scalar / array, torch tensor
        return _jsonable(obj.tolist())
    raise TypeError(f"cannot store {type(obj).__name__} in a benchmark result; convert it to numbers/strings first")


def save(name: str, payload: dict, *, command: list[str] | None = None,
         directory: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Write ``payload`` with provenance to ``<results dir>/<name>.json`` (atomically) and return the path."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"benchmark result name {name!r} must be a plain file stem such as 'metrics'")
    out = results_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    doc = {"name": name, "provenance": provenance(command), "results": _jsonable(payload)}
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"saved {path}")
    return path


def load(name: str, directory: str | os.PathLike | None = None) -> dict:
    """Read back a saved result (the whole document, provenance included)."""
    return json.loads((results_dir(directory) / f"{name}.json").read_text())
