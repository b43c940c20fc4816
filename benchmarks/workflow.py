"""Wall time of the workflow and its speed-up from 1 to N cores.

    python benchmarks/workflow.py                     # the tiny .test config at --cores 1 and 2
    python benchmarks/workflow.py --config quick      # the quick profile (Kodak; ~30-40 min per run)

Each run starts from an empty working folder (fresh copy of the config; nothing cached but the
installed environment), so it measures training + encoding + metrics + report. Prints wall seconds per
core count and the speed-up relative to 1 core, and saves them with provenance to
benchmarks/results/workflow-<config>.json (see benchmarks/_results.py).
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


def prepare(config: str, work: Path) -> tuple[Path, list[str]]:
    """A clean working folder for one run, and the targets to build."""
    if config == "test":
        wd = work / ".test"
        shutil.copytree(REPO / ".test", wd, ignore=shutil.ignore_patterns("results", "resources", "logs", ".snakemake"))
        (work / "data").symlink_to(REPO / "data")
        return wd, ["results/rd_curves.pdf", "ablations"]
    wd = work / "quick"
    (wd / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", wd / "config" / "config.yaml")
    (wd / "data").symlink_to(REPO / "data")
    return wd, ["results/rd_curves.pdf"]


def run(config: str, cores: int) -> float:
    with tempfile.TemporaryDirectory(prefix=f"cgdm-wf-{cores}-") as tmp:
        wd, targets = prepare(config, Path(tmp))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--directory", str(wd),
               "--snakefile", str(REPO / "workflow" / "Snakefile"), *targets, "--quiet", "all"]
        t0 = time.perf_counter()
        # in the repository, where Snakemake finds the workflow profile (profiles/default)
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(f"workflow failed at --cores {cores}:\n{(res.stdout + res.stderr)[-4000:]}")
        return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["test", "quick"], default="test")
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    print(f"workflow benchmark: config={args.config}, machine cores={os.cpu_count()}")
    times = {}
    for c in args.cores:
        times[c] = run(args.config, c)
        print(f"--cores {c}: {times[c]:.1f} s")
    base = times.get(1) or times[args.cores[0]]
    speedup = {c: base / t for c, t in times.items()}
    for c in times:
        print(f"speed-up at {c} cores: {speedup[c]:.2f}x")
    save(f"workflow-{args.config}", {"config": args.config, "cores": args.cores,
                                     "runs": [{"cores": c, "wall_s": times[c], "speedup": speedup[c]} for c in times]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
