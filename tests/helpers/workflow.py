"""Shared helpers of the workflow tests (no tests here): one real run of the tiny .test config per test
session, cloned by the tests that modify a finished run.

Every run gets the same environment (:func:`workflow_env`): an empty metric-weights cache next to the
working directory, so what the run finds outside the workflow is known (nothing), whatever the machine
has in ~/.cache/torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "workflow" / "Snakefile"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
#: what the shared run builds: every stage of the workflow
TARGETS = ("results/rd_curves.pdf", "ablations", "results/crops/kodak_tiny.png")


def workflow_env(workdir: Path, **extra: str) -> dict:
    """Environment of a workflow run in ``workdir`` (a copy of .test/): the venv first on PATH and the
    metric weights looked up in ``<workdir>/../torch_home`` (empty unless a test seeds it)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TORCH_HOME=str(Path(workdir).parent / "torch_home"))
    env.pop("CGDM_WEIGHTS_CACHE", None)
    env.update(extra)
    return env


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """The command of a run on ``workdir``, to run in the repository (``cwd=REPO``): Snakemake finds the
    workflow profile profiles/default in its working directory (it also looks next to the Snakefile, in
    workflow/profiles/, which does not exist)."""
    return [SNAKEMAKE, "--cores", "2", "--directory", str(workdir), "--snakefile", str(SNAKEFILE), *args]


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: float = 1500):
    """Run snakemake on ``workdir`` (finished process, output captured)."""
    return subprocess.run(snakemake_cmd(workdir, *args), cwd=REPO, check=False, capture_output=True, text=True,
                          env=env or workflow_env(workdir), timeout=timeout)


def new_workdir(root: Path) -> Path:
    """A fresh copy of .test/ under ``root`` (with ``data`` and an empty ``torch_home`` beside it)."""
    root.mkdir(parents=True, exist_ok=True)
    work = root / ".test"
    shutil.copytree(REPO / ".test", work, ignore=shutil.ignore_patterns("results", "resources", "logs", ".snakemake"))
    # the config refers to the training photos relative to .test/
    (root / "data").symlink_to(REPO / "data")
    (root / "torch_home").mkdir()
    return work


def clone_run(workdir: Path, root: Path) -> Path:
    """Copy a finished run (results, resources, .snakemake metadata; mtimes kept): still up to date."""
    shutil.copytree(Path(workdir).parent, root, symlinks=True)
    return root / Path(workdir).name


@pytest.fixture(scope="session")
def tiny_workflow_run(tmp_path_factory):
    """One uninterrupted run of every stage on the .test config (slow: minutes on 2 cores)."""
    work = new_workdir(tmp_path_factory.mktemp("wf"))
    res = snakemake(work, *TARGETS)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return work
