"""Faults in the workflow: `snakemake` killed in the middle of the .test run (Ctrl-C = SIGINT to the
process group, and a hard SIGKILL of the whole group) and run again finishes the run without redoing
finished jobs, without a truncated bitstream, CSV or figure, and with the results of an uninterrupted run.

What makes this work (README, "Interrupted runs"): every step writes its outputs atomically (temporary
file + rename); Snakemake marks the outputs of running jobs as incomplete and, with `rerun-incomplete:
true` in profiles/default (the workflow profile Snakemake loads by itself), regenerates them; a SIGKILL
leaves Snakemake's lock behind, which `snakemake --unlock` removes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from base64 import urlsafe_b64decode
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cgdm.bitstream import read_cgdm

from helpers.workflow import REPO, TARGETS, new_workdir, snakemake, snakemake_cmd, workflow_env

# the first test of a session to use the .test workflow run (tests/helpers/workflow.py) pays for it in its
# setup: ~4 min on 2 idle cores, ~9 min on a loaded machine; pytest-timeout counts setup time too
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

#: declared outputs of the per-item jobs (a finished one must never be redone)
JOB_OUTPUTS = ("resources/models/*.pt", "results/encoded/*/*/*/encode.csv", "results/metrics/*/*/*.csv",
               "results/fid/*/*/*.csv", "results/published/*.csv")
#: the tidy tables' columns that are measurements of time, not results
TIME_COLUMNS = ["encode_s", "decode_s"]


def incomplete_outputs(work: Path) -> set[str]:
    """Outputs Snakemake has marked incomplete (.snakemake/incomplete/<urlsafe base64 of the path>)."""
    root = work / ".snakemake" / "incomplete"
    out = set()
    for path in root.rglob("*") if root.is_dir() else []:
        if path.is_file() and path.name != "migration_underway":
            b64 = "".join(p.lstrip("@") for p in path.relative_to(root).parts)
            out.add(urlsafe_b64decode(b64.encode()).decode())
    return out


def finished_outputs(work: Path) -> dict[str, int]:
    """{output: mtime_ns} of the per-item job outputs present and not marked incomplete."""
    skip = incomplete_outputs(work)
    found = {}
    for pattern in JOB_OUTPUTS:
        for p in work.glob(pattern):
            rel = str(p.relative_to(work))
            if rel not in skip:
                found[rel] = p.stat().st_mtime_ns
    return found


def run_and_kill(work: Path, sig: int, delay: float, log: Path) -> bool:
    """Start the run, send ``sig`` to its whole process group after ``delay`` s; False if it finished first."""
    with open(log, "w") as f:
        # its own process group, like a shell job; SIGINT handled as in a terminal even when pytest was
        # started in the background (which makes the shell ignore SIGINT for its children)
        proc = subprocess.Popen(snakemake_cmd(work, *TARGETS), cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env=workflow_env(work), start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            pass
        os.killpg(proc.pid, sig)  # what Ctrl-C (SIGINT) or an OOM killer / `kill -9 -PGID` does to a run
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # Snakemake's Ctrl-C clean-up hung: that is a failure too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"snakemake did not stop within 120 s of signal {sig}")
    for _ in range(300):  # every job process of the group is gone before the rerun starts
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return True


def _tidy(path: Path, root: Path) -> pd.DataFrame:
    df = pd.read_csv(path).drop(columns=TIME_COLUMNS)
    # "unavailable" reasons name the run's own TORCH_HOME: compare them without the run's folder
    df["status"] = df["status"].astype(str).str.replace(str(root), "<run>", regex=False)
    return df.sort_values(["dataset", "codec", "rate", "image", "metric"]).reset_index(drop=True)


def test_killed_runs_resume_to_the_uninterrupted_results(tiny_workflow_run, tmp_path):
    rng = random.Random(15)
    work = new_workdir(tmp_path / "run")
    kills, t0 = [], time.perf_counter()
    for i, sig in enumerate([signal.SIGINT, signal.SIGKILL, signal.SIGINT]):
        delay = rng.uniform(8, 60)
        if not run_and_kill(work, sig, delay, tmp_path / f"killed{i}.log"):
            break  # the run finished before this kill: nothing left to interrupt
        kills.append((sig, delay, finished_outputs(work)))
        if sig == signal.SIGKILL:  # a hard kill leaves Snakemake's lock: the documented first step
            unlock = snakemake(work, "--unlock")
            assert unlock.returncode == 0, unlock.stderr[-2000:]
    assert kills, "no run was interrupted"
    # no --rerun-incomplete here: the workflow profile sets it
    final = snakemake(work, *TARGETS)
    assert final.returncode == 0, (final.stdout + final.stderr)[-5000:]
    print(f"{len(kills)} kills at {[round(d, 1) for _, d, _ in kills]} s; "
          f"total {time.perf_counter() - t0:.0f} s")
    assert incomplete_outputs(work) == set()

    # finished jobs were not redone: their outputs still have the mtime they had right after the kill
    for sig, delay, finished in kills:
        redone = [p for p, mtime in finished.items() if (work / p).stat().st_mtime_ns != mtime]
        assert redone == [], f"redone after {signal.Signals(sig).name} at {delay:.1f} s: {redone}"

    # the results of an uninterrupted run (values, not times)
    base = tiny_workflow_run
    for table in ("results/results.csv", "results/ablations.csv"):
        pd.testing.assert_frame_equal(_tidy(work / table, work.parent), _tidy(base / table, base.parent))

    # nothing truncated: every bitstream is the uninterrupted run's, byte for byte, and parses
    encode_csvs = sorted(work.glob("results/encoded/*/*/*/encode.csv"))
    assert encode_csvs
    for csv in encode_csvs:
        enc = pd.read_csv(csv)
        for row in enc[enc["status"] == "ok"].itertuples():
            data = (work / row.bitstream).read_bytes()
            assert len(data) == row.bytes, row.bitstream
            assert data == (base / row.bitstream).read_bytes(), row.bitstream
            if row.bitstream.endswith(".cgdm"):
                read_cgdm(data)  # container + CRC of every section
            with Image.open(work / row.reconstruction) as im:
                im.load()
                assert im.size == (row.width, row.height)
    for csv in work.glob("results/**/*.csv"):
        pd.read_csv(csv)
    for png in work.glob("results/**/*.png"):
        with Image.open(png) as im:
            im.load()
    pdfs = list(work.glob("results/**/*.pdf"))
    assert pdfs
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:], pdf
