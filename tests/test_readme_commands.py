"""Every command of README.md, as the README writes it, in the order a user types it (slow).

The commands are extracted from README.md (code blocks, and code spans in tables and prose, that start with
``make``, ``snakemake``, ``cgdm`` or ``chromium``). Each one is either run, on a copy of the session's
tiny .test run (tests/helpers/workflow.py), or listed in ``NOT_RUN`` with the reason. A command added to
the README without a decision here fails, and so does a decision about a command the README no longer has:
the README and this test cannot drift apart.

How they run: ``make X`` from the repository root with ``SNAKEMAKE_ARGS="--directory <copy>"`` (and the
installed venv taken as is); ``snakemake ...`` from the repository root with ``--directory <copy>``
appended (so ``config/config.yaml`` resolves to the .test config); ``cgdm ...`` and ``chromium ...`` in
the copy. Before the README's own order, the two documented sequences run from the state a fresh clone
has before its first run of those targets: ``make reproduce && make report``, then ``make ablations &&
make report``, and the two reports are checked in a real browser (tests/helpers/report_browser.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.report_browser import chromium, rendered_views
from helpers.workflow import clone_run, workflow_env

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent
PROGRAMS = ("make ", "snakemake ", "cgdm ", "chromium ")

#: README commands that are not run here, and why. Every other extracted command runs and must succeed.
NOT_RUN = {
    "make test": "the test suite itself (this file is part of it)",
    "make test-slow": "the slow tests, this file among them",
    "make lint": "CI runs it (.ci/run)",
    "snakemake --lint": "CI runs it (make lint)",
    "make test-workflow": "runs the same .test targets in .test/ itself; the session's run covers them",
    "snakemake fetch_weights": "needs the network (tests/test_evaluation_weights.py uses a loopback server)",
    "snakemake --configfile config/paper.yaml --profile profiles/slurm":
        "submits to a SLURM cluster; dry-run in tests/test_workflow.py::test_targets_resolve[paper-slurm]",
    "cgdm decompress": "names the subcommand in prose (its full command line runs)",
    "cgdm train": "names the subcommand in prose (the zoo-train paragraph); its documented line is below",
    "cgdm redecode IN OUT --set seed=3": "placeholders in prose; tests/test_redecode.py runs the command",
    "cgdm train --config my_base.yaml":
        "the user's own config file; the workflow run trains every model through the same code",
    "cgdm zoo-extend": "names the subcommand in prose (its full command line follows)",
    "cgdm zoo-extend hyperprior_small bmshj2018_small cgdm_base":
        "needs codecs whose params add a restart at the shipped steps (the .test models are not shipped); "
        "tests/test_train.py::test_zoo_extend_continues_a_shipped_model runs it on a tiny shipped model",
    "cgdm zoo-ship": "names the last step of train_zoo in prose; the README's train_zoo command runs it",
    "cgdm zoo-train": "names the subcommand in prose; tests/test_zoo_train.py runs it on tiny models",
    "make gpu-wheels": "downloads from the package index (CI may have none); the wheels are for a GPU machine",
}

#: the README's placeholders and values that the .test run replaces: (pattern, replacement)
SUBSTITUTIONS = [
    (r"\bNAME\b", "kodak"),  # a dataset name: the embedded one, verified and not downloaded
    (r"--rate 2\b", "--rate 1"),  # the .test models are trained for two rates (0, 1), the quick ones for 4
]


def readme_commands(text: str) -> list[str]:
    """Commands in README order: lines of code blocks (comments stripped, ``\\`` continuations joined) and
    code spans elsewhere, starting with one of PROGRAMS; each once."""
    found = []
    parts = re.split(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for i, part in enumerate(parts):
        if i % 2:  # a code block
            for line in re.sub(r"\\\n\s*", "", part).splitlines():
                found.append(re.sub(r"\s+#.*$", "", line).strip())
        else:
            found += re.findall(r"`([^`\n]+)`", part)
    return list(dict.fromkeys(c for c in (" ".join(f.split()) for f in found) if c.startswith(PROGRAMS)))


def test_every_readme_command_has_a_decision():
    commands = readme_commands(README.read_text())
    assert "make reproduce" in commands and "snakemake --report results/report.html" in commands, commands
    gone = set(NOT_RUN) - set(commands)
    assert not gone, f"NOT_RUN lists commands the README no longer has: {sorted(gone)}"


def run_command(command: str, work: Path) -> subprocess.CompletedProcess:
    """Run one README command as written, redirected to the working directory ``work``."""
    for pattern, value in SUBSTITUTIONS:
        command = re.sub(pattern, value, command)
    cwd = REPO if command.startswith(("make ", "snakemake ")) else work
    parts = []
    for part in command.split("&&"):  # `make reproduce && make report`: redirect each part
        part = part.strip()
        if part.startswith("make "):
            # the venv is already installed: -o keeps make from reinstalling it when pyproject.toml is newer
            part += f" VENV={VENV} -o {VENV}/.installed SNAKEMAKE_ARGS='--directory {work}'"
        elif part.startswith("snakemake "):
            part += f" --directory {work}"
        elif cwd == REPO:
            raise AssertionError(f"{command!r}: every part must be redirected to the test's copy")
        parts.append(part)
    command = " && ".join(parts)
    start = time.monotonic()
    res = subprocess.run(["bash", "-c", command], cwd=cwd, env=workflow_env(work), capture_output=True,
                         text=True, timeout=1200)
    res.output = f"$ {command}\n{res.stdout}{res.stderr}"
    res.seconds = time.monotonic() - start
    return res


def ok(command: str, work: Path) -> subprocess.CompletedProcess:
    res = run_command(command, work)
    assert res.returncode == 0, res.output[-5000:]
    print(f"{res.seconds:6.1f} s  {command}")
    return res


# The products the report shows, the caption of each section (first words of the caption file) and the
# command that builds them.
MAIN = ("rd_curves.pdf", "rd_table.md", "bd_rate_table.md", "runtime_table.md", "kodak_tiny.png")
ABLATIONS = ("ablations.pdf", "ablation_table.md")


def caption(name: str) -> str:
    """The first sentence's opening words of workflow/report/<name>.rst, as the browser shows them."""
    return " ".join(re.sub(r"[*`]", "", (REPO / "workflow/report" / f"{name}.rst").read_text()).split()[:6])


@pytest.fixture(scope="module")
def documented(tiny_workflow_run, tmp_path_factory):
    """The .test run as a fresh clone has it before `make reproduce` and `make ablations` (the trained
    models and bitstreams of the session's run kept, every figure and table removed), then the two
    documented sequences: `make reproduce && make report`, then `make ablations && make report`."""
    work = clone_run(tiny_workflow_run, tmp_path_factory.mktemp("readme") / "run")
    results = work / "results"
    for pattern in ("rd_curves*", "ablations*", "tables", "crops", "report.html"):
        for p in results.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    reports = {}
    ok("make reproduce", work)
    assert (results / "rd_curves.pdf").exists() and (results / "crops/kodak_tiny.png").exists()
    assert not (results / "ablations.pdf").exists(), "make reproduce must not run the ablations"
    ok("make report", work)
    reports["reproduce"] = shutil.copy(results / "report.html", work.parent / "report-reproduce.html")
    ok("make ablations", work)
    ok("make report", work)
    reports["ablations"] = shutil.copy(results / "report.html", work.parent / "report-ablations.html")
    return work, {k: Path(v) for k, v in reports.items()}


def _text(views: dict[str, str]) -> str:
    return " ".join("\n".join(views.values()).split())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may pay for the .test workflow run in its setup
def test_reproduce_then_report_shows_the_main_results_and_what_is_not_built(documented):
    views = rendered_views(documented[1]["reproduce"])
    text = _text(views)
    for category in ("RD curves", "Tables", "Crops", "Not built yet"):
        assert f"category {category}" in views, list(views)
    for name in MAIN:
        assert any(v.startswith("result ") and v.endswith("/" + name) for v in views), name
    for section in ("rd_curves", "tables", "crops"):
        assert caption(section) in text, section
    assert not any(v.endswith(ABLATIONS) for v in views) and caption("ablations") not in text
    # the missing products are named, with the command that builds them, from the landing page on
    assert "Some products are not built yet" in " ".join(views["landing"].split())
    assert "results/ablations.pdf: snakemake --cores 8 ablations" in text
    assert "results/tables/ablation_table.md: snakemake --cores 8 ablations" in text


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may pay for the .test workflow run in its setup
def test_reproduce_ablations_report_shows_the_ablations(documented):
    views = rendered_views(documented[1]["ablations"])
    text = _text(views)
    for category in ("RD curves", "Tables", "Crops", "Ablations"):
        assert f"category {category}" in views, list(views)
    for name in MAIN + ABLATIONS:
        assert any(v.startswith("result ") and v.endswith("/" + name) for v in views), name
    for section in ("rd_curves", "tables", "crops", "ablations"):
        assert caption(section) in text, section
    assert "ablation_table.md" in views["category Tables"]
    # what is left to build is the distortion-perception sweep, a target of its own (`make dp_curve`)
    assert "results/dp_curve.png: snakemake --cores 8 dp_curve" in text
    assert "results/ablations.pdf: snakemake" not in text and "results/tables/ablation_table.md: snakemake" not in text


@pytest.mark.slow
@pytest.mark.timeout(1800)  # may pay for the .test workflow run in its setup
def test_readme_commands_in_order(documented):
    work, _ = documented
    (work / "kodim01.png").symlink_to(sorted((work / "data/kodak_tiny").glob("*.png"))[0])
    published = REPO / "baselines/published_data/compressai/kodak"
    for name in ("vtm.json", "hyperprior.json"):  # the bd-rate example's two CompressAI-style files
        shutil.copy(published / ("bmshj2018-hyperprior-vbr-ans.json" if name == "hyperprior.json" else name),
                    work / name)
    ran = []
    for command in readme_commands(README.read_text()):
        if command in NOT_RUN:
            continue
        if command.startswith("make setup"):  # installs nothing here: the target exists and is up to date
            res = subprocess.run(["make", "-n", "-o", f"{VENV}/.installed", f"VENV={VENV}", "setup"], cwd=REPO,
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            continue
        if command.startswith("chromium "):
            chromium()  # fails in CI without a browser; the screenshot is checked below
        if command.startswith("cgdm bd-rate") and "--csv" in command:
            # every .test codec has 2 rate points, so every row is refused with its reason, and the command
            # exits 1 by design ("no valid BD-rate", tests/test_bdrate.py); check the refusal is printed
            res = run_command(command, work)
            assert res.returncode == 1 and "refused:" in res.stdout and "needs at least 4" in res.stdout, \
                res.output[-3000:]
        else:
            res = ok(command, work)
        ran.append(command)
        if command.startswith("snakemake --report"):
            assert (work / "results/report.html").stat().st_size > 100_000
        if command.startswith("cgdm info"):
            assert "bpp" in res.stdout
        if command.startswith("chromium "):
            shot = work / "report.png"
            assert shot.stat().st_size > 10_000
            from PIL import Image

            assert len(Image.open(shot).convert("L").getcolors(1 << 16) or []) > 10, "a blank screenshot"
    assert (work / "results/reference/ablations-kodak_tiny.png").exists()
    assert (work / "out.png").exists()
    # every kind of documented command ran
    for prefix in ("make reproduce", "make ablations", "make paper_tables", "make report",
                   "snakemake --cores 8 ablations", "snakemake --cores 8 paper_tables", "snakemake --report",
                   "snakemake --cores 8 reference_snapshot",
                   "cgdm compress", "cgdm decompress", "cgdm info", "cgdm bd-rate", "cgdm download --list"):
        assert any(c.startswith(prefix) for c in ran), prefix
