"""A real run of the whole workflow on the tiny .test config (slow: ~2 min on 2 cores).

Checks what a user relies on: every stage produces its outputs with bpp from the files on disk, a
second run schedules nothing, and changing one codec's config reruns only that codec's jobs.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

pytestmark = pytest.mark.slow


def run(workdir, *args):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([SNAKEMAKE, "--cores", "2", "--directory", str(workdir), "--snakefile",
                           str(REPO / "Snakefile"), *args], capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf") / ".test"
    shutil.copytree(REPO / ".test", work, ignore=shutil.ignore_patterns("results", "resources", "logs", ".snakemake"))
    # the config refers to the training photos relative to .test/
    (work.parent / "data").symlink_to(REPO / "data")
    res = run(work, "results/rd_curves.pdf", "ablations", "results/crops/kodak_tiny.png")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return work


def test_every_stage_produced_its_outputs(finished_run):
    r = finished_run / "results"
    for f in ["rd_curves.pdf", "ablations.pdf", "tables/rd_table.md", "tables/bd_rate_table.md",
              "tables/runtime_table.md", "tables/ablation_table.md", "crops/kodak_tiny.png"]:
        assert (r / f).stat().st_size > 0, f
    df = pd.read_csv(r / "results.csv")
    ours = df[(df["kind"] != "published") & (df["metric"] == "psnr")]
    assert set(ours["codec"]) == {"jpeg", "webp", "hyperprior", "cgdm_base", "cgdm"}
    assert (ours["status"] == "ok").all()
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


def test_report_html_shows_figures_and_tables(finished_run, tmp_path):
    res = run(finished_run, "results/rd_curves.pdf", "ablations", "results/crops/kodak_tiny.png",
              "--report", "results/report.html")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    html = (finished_run / "results" / "report.html").read_text(errors="replace")
    for name in ("rd_curves.pdf", "ablations.pdf", "rd_table.md", "ablation_table.md", "kodak_tiny.png"):
        assert name in html, name
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:  # the documented visual check, when a browser is installed
        shot = tmp_path / "report.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                        f"--screenshot={shot}", (finished_run / "results" / "report.html").as_uri()],
                       capture_output=True, timeout=120)
        assert shot.stat().st_size > 10_000
