"""A real run of the whole workflow on the tiny .test config (slow: ~2 min on 2 cores).

Checks what a user relies on: every stage produces its outputs with bpp from the files on disk, a
second run schedules nothing, and changing one codec's config reruns only that codec's jobs.
"""

import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers.workflow import snakemake

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# the first test of a session to use the .test workflow run (tests/helpers/workflow.py) pays for it in its
# setup: ~4 min on 2 idle cores, ~9 min on a loaded machine; pytest-timeout counts setup time too
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def run(workdir, *args):
    return snakemake(workdir, *args)


@pytest.fixture(scope="module")
def finished_run(tiny_workflow_run):
    # the session's run of every stage (tests/helpers/workflow.py), shared with the other slow workflow tests
    return tiny_workflow_run


def test_every_stage_produced_its_outputs(finished_run):
    r = finished_run / "results"
    for f in ["rd_curves.pdf", "ablations.pdf", "tables/rd_table.md", "tables/bd_rate_table.md",
              "tables/runtime_table.md", "tables/ablation_table.md", "crops/kodak_tiny.png"]:
        assert (r / f).stat().st_size > 0, f
    df = pd.read_csv(r / "results.csv")
    ours = df[(df["kind"] != "published") & (df["metric"] == "psnr")]
    assert set(ours["codec"]) == {"jpeg", "webp", "hyperprior", "cgdm_base", "cgdm"}
    assert (ours["status"] == "ok").all()
    # offline, the weight-free perceptual metrics (GMSD per image, SWD per set) are there for every codec
    for metric in ("gmsd", "swd", "swd_l0"):
        rows = df[(df["kind"] != "published") & (df["metric"] == metric)]
        assert set(rows["codec"]) == set(ours["codec"]) and (rows["status"] == "ok").all(), metric
    # bpp in the tidy table is 8 * (size of the bitstream on disk) / pixels
    enc = pd.concat(pd.read_csv(p) for p in (r / "encoded").glob("*/*/*/encode.csv"))
    for row in enc.itertuples():
        assert row.bpp == pytest.approx(8 * os.path.getsize(finished_run / row.bitstream) / (row.width * row.height))
    abl = pd.read_csv(r / "ablations.csv")
    assert set(abl["codec"]) == {"cgdm", "cgdm_no_consistency", "cgdm_no_sff", "cgdm_no_boundary"}


def test_second_run_does_nothing(finished_run):
    res = run(finished_run, "results/rd_curves.pdf", "ablations", "--dry-run")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def test_changing_one_codec_reruns_only_that_codec(finished_run):
    res = run(finished_run, "results/rd_curves.pdf", "--dry-run", "--config",
              "codecs={webp: {class: baselines.classical.WebP, rates: [10, 40]}}")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    out = res.stdout + res.stderr
    encoded = set(re.findall(r"results/encoded/kodak_tiny/([\w.-]+)/\d+/encode\.csv", out))
    assert encoded == {"webp"}
    jobs = re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M)
    assert "train_model" not in jobs
    # only webp's encode / metric jobs (plus the aggregation and the report) are scheduled
    scheduled = re.findall(r"^\s+output: (\S+)", out, flags=re.M)
    codec_outputs = [o for o in scheduled if o.startswith(("results/encoded", "results/metrics", "results/fid"))]
    assert codec_outputs and all("/webp/" in o for o in codec_outputs), codec_outputs


def test_report_for_explicit_targets(finished_run, tmp_path):
    # `--report` with targets reports on those targets' DAG (the default target's view, with what is not
    # built yet, is checked in a real browser by tests/test_readme_commands.py)
    report = tmp_path / "report.html"
    res = run(finished_run, "results/rd_curves.pdf", "ablations", "results/crops/kodak_tiny.png",
              "--report", str(report))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    html = report.read_text(errors="replace")
    for name in ("rd_curves.pdf", "ablations.pdf", "rd_table.md", "ablation_table.md", "kodak_tiny.png"):
        assert f'"name": "{name}"' in html, name
    assert "not_built.svg" not in html
