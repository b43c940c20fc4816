"""The Snakemake workflow: every documented target resolves, bad configs give one clear message.

Every dry-run happens in a fresh working directory (``--directory``, with the repository's configs and
data), never in the user's checkout: what the user has built, trained or cached changes nothing here.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture(scope="module")
def fresh_checkout(tmp_path_factory):
    """A working directory like a fresh clone's: the configs and the embedded data, nothing built."""
    work = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO / "config", work / "config")
    (work / "data").symlink_to(REPO / "data")
    return work


def snakemake(workdir, *args):
    # cwd: the repository (Snakefile, profiles/default); --directory: where configs resolve and outputs go
    res = subprocess.run([SNAKEMAKE, "--nolock", *args, "--directory", str(workdir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    res.output = res.stdout + res.stderr
    return res


@pytest.mark.parametrize(
    "args",
    [
        ["results/rd_curves.pdf"],
        ["ablations"],
        ["paper_tables"],
        ["--configfile", "config/paper.yaml", "--profile", "profiles/slurm"],
        # targets before --configfile, which takes several values and would swallow them
        ["ablations", "--configfile", "config/paper.yaml"],
    ],
    ids=["default", "ablations", "paper_tables", "paper-slurm", "paper-ablations"],
)
def test_targets_resolve(args, fresh_checkout):
    res = snakemake(fresh_checkout, "-n", *args, "--quiet", "rules")
    assert res.returncode == 0, res.output[-3000:]


def test_paper_profile_covers_three_datasets(fresh_checkout):
    res = snakemake(fresh_checkout, "-n", "--configfile", "config/paper.yaml", "--profile", "profiles/slurm")
    assert res.returncode == 0, res.output[-3000:]
    out = res.stdout + res.stderr
    for ds in ("kodak", "clic2020-professional-test", "clic2020-mobile-test", "div2k-valid-hr"):
        assert f"results/metrics/{ds}/" in out, ds


def _bad(checkout, text):
    cfg = checkout / "bad.yaml"
    cfg.write_text(text)
    return snakemake(checkout, "-n", "--configfile", str(cfg))


def test_schema_violation_is_one_clear_message(fresh_checkout):
    res = _bad(fresh_checkout, "codecs:\n  jpeg:\n    class: baselines.classical.JPEG\n    rates: 5\n")
    assert res.returncode != 0
    assert "5 is not of type 'array'" in res.output


def test_unknown_model_is_named(fresh_checkout):
    res = _bad(fresh_checkout, "codecs:\n  x:\n    class: baselines.classical.JPEG\n    rates: [1]\n"
                         "    models: {net: no_such_model}\n")
    assert res.returncode != 0
    assert "codec 'x' uses model 'no_such_model'" in res.output


def test_unknown_anchor_is_named(fresh_checkout):
    res = _bad(fresh_checkout, "report:\n  anchor: nope\n")
    assert res.returncode != 0
    assert "report.anchor = 'nope'" in res.output


@pytest.mark.parametrize("cfg", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"])
def test_every_published_curve_of_a_shipped_config_loads(cfg):
    import yaml

    from baselines.published import load_published

    for name, entry in (yaml.safe_load((REPO / cfg).read_text()).get("published") or {}).items():
        df = load_published(entry, name=name)
        assert len(df) and (df["status"] == "ok").all(), name


@pytest.mark.parametrize("cfg", ["config/config.yaml", "config/paper.yaml", ".test/config/config.yaml"])
def test_every_codec_class_of_a_shipped_config_exists(cfg):
    import yaml

    from baselines.base import Codec, import_object

    data = yaml.safe_load((REPO / cfg).read_text())
    entries = {**data["codecs"], **(data.get("ablations", {}).get("variants") or {})}
    for name, entry in entries.items():
        assert issubclass(import_object(entry["class"]), Codec), name
    for name, model in (data.get("models") or {}).items():
        assert callable(import_object(model["trainer"])), name


@pytest.mark.parametrize("target", [[], ["results/rd_curves.pdf"]], ids=["all", "rd_curves"])
def test_default_target_does_not_train_or_run_the_ablations(target, fresh_checkout):
    res = snakemake(fresh_checkout, "-n", *target)
    assert res.returncode == 0, res.output[-3000:]
    assert "resources/models/cgdm_base.pt" in res.output  # a fresh checkout: everything is pending
    assert "resources/models/cgdm_decoder_no_" not in res.output
    assert "results/encoded/kodak/cgdm_no_" not in res.output
    res = snakemake(fresh_checkout, "-n", "ablations")
    assert "resources/models/cgdm_decoder_no_sff.pt" in res.output
