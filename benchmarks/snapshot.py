"""Regenerate the committed snapshot (``results/reference/``) from a fresh clone, timing each step.

    python benchmarks/snapshot.py            # ~90 min on 2 cores; run it alone (the timings are the README's)
    python benchmarks/snapshot.py --no-copy  # time it only; results/reference/ stays as it is

Clones this repository's HEAD into a temporary folder (uncommitted changes are not in it: commit first,
so that the snapshot's provenance names a revision that exists) and runs there, as a newcomer would:

1. ``make reproduce``   (installs .venv from the project's files, then the quick profile on Kodak)
2. ``make ablations``   (the ablation variants and the ``online`` row)
3. ``make dp_curve``    (the distortion-perception sweep)
4. ``snakemake reference_snapshot``

then copies the clone's ``results/reference/`` over this checkout's. Prints and saves the wall seconds of
each step to ``benchmarks/results/snapshot.json`` (see benchmarks/_results.py), which is where the
README's "from a fresh clone it took ..." numbers come from.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._results import save  # noqa: E402

#: (step, command run in the clone); make's own .venv comes first on its PATH (Makefile)
STEPS = [
    ("reproduce", ["make", "reproduce"]),
    ("ablations", ["make", "ablations"]),
    ("dp_curve", ["make", "dp_curve"]),
    ("reference_snapshot", [".venv/bin/snakemake", "--cores", "2", "reference_snapshot"]),
]


def _git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-copy", action="store_true", help="do not replace results/reference/ with the new one")
    p.add_argument("--keep", help="clone into this (new) folder and keep it, instead of a temporary one")
    args = p.parse_args(argv)
    revision = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--untracked-files=no"):
        print(f"snapshot: this checkout has uncommitted changes; the clone has HEAD ({revision}) without them",
              file=sys.stderr)
    # the clone's make must find its own .venv, not this one's (nor a parent virtualenv)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if not d.startswith(str(REPO)))
    with tempfile.TemporaryDirectory(prefix="cgdm-snapshot-") as tmp:
        clone = Path(args.keep) if args.keep else Path(tmp) / "cgdm"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        print(f"snapshot: fresh clone of {revision} in {clone}", flush=True)
        steps = []
        for name, cmd in STEPS:
            t0 = time.perf_counter()
            res = subprocess.run(cmd, cwd=clone, env=env)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                sys.exit(f"snapshot: {' '.join(cmd)} failed after {wall:.0f} s (exit {res.returncode}); "
                         f"nothing copied{'' if args.keep else ' (rerun with --keep DIR to inspect the clone)'}")
            steps.append({"step": name, "command": " ".join(cmd), "wall_s": round(wall, 1)})
            print(f"snapshot: {name} took {wall:.0f} s", flush=True)
        if not args.no_copy:
            shutil.rmtree(REPO / "results" / "reference")
            shutil.copytree(clone / "results" / "reference", REPO / "results" / "reference")
            print(f"snapshot: results/reference/ replaced by the one made at {revision}")
    total = sum(s["wall_s"] for s in steps)
    print(f"snapshot: {total:.0f} s in all")
    save("snapshot", {"revision": revision, "cores": os.cpu_count(), "steps": steps, "total_s": round(total, 1),
                      "copied": not args.no_copy})
    return 0


if __name__ == "__main__":
    sys.exit(main())
