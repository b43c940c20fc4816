"""The Snakemake workflow: every documented target resolves, bad configs give one clear message."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args, cwd=REPO):
    res = subprocess.run([SNAKEMAKE, "--nolock", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    res.output = res.stdout + res.stderr
    return res


@pytest.mark.parametrize(
    "args",
    [
        ["results/rd_curves.pdf"],
        ["ablations"],
        ["paper_tables"],
        ["--configfile", "config/paper.yaml", "--profile", "profiles/slurm"],
        ["--configfile", "config/paper.yaml", "ablations"],
    ],
    ids=["default", "ablations", "paper_tables", "paper-slurm", "paper-ablations"],
)
def _order(args):
    """Targets first: --configfile takes several values and would swallow a target after it."""
    targets = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or not args[i - 1].startswith("-"))]
    options = [a for a in args if a not in targets]
    return ["-n", *targets, *options, "--quiet", "rules"]


def test_targets_resolve(args):
    res = snakemake(*_order(args))
    assert res.returncode == 0, res.output[-3000:]


def test_paper_profile_covers_three_datasets():
    res = snakemake("-n", "--configfile", "config/paper.yaml", "--profile", "profiles/slurm")
    assert res.returncode == 0, res.output[-3000:]
    out = res.stdout + res.stderr
    for ds in ("kodak", "clic2020-professional-test", "clic2020-mobile-test", "div2k-valid-hr"):
        assert f"results/metrics/{ds}/" in out, ds


def _bad(tmp_path, text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    return snakemake("-n", "--configfile", str(cfg))


def test_schema_violation_is_one_clear_message(tmp_path):
    res = _bad(tmp_path, "codecs:\n  jpeg:\n    class: baselines.classical.JPEG\n    rates: 5\n")
    assert res.returncode != 0
    assert "5 is not of type 'array'" in res.output


def test_unknown_model_is_named(tmp_path):
    res = _bad(tmp_path, "codecs:\n  x:\n    class: baselines.classical.JPEG\n    rates: [1]\n"
                         "    models: {net: no_such_model}\n")
    assert res.returncode != 0
    assert "codec 'x' uses model 'no_such_model'" in res.output


def test_unknown_anchor_is_named(tmp_path):
    res = _bad(tmp_path, "report:\n  anchor: nope\n")
    assert res.returncode != 0
    assert "report.anchor = 'nope'" in res.output
