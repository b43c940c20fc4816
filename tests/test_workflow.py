"""The Snakemake workflow: every documented target resolves, bad configs give one clear message.

Every dry-run happens in a fresh working directory (``--directory``, with the repository's configs and
data), never in the user's checkout: what the user has built, trained or cached changes nothing here.
"""

import json
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
    # cwd: the repository (workflow/Snakefile, profiles/default); --directory: where configs resolve and outputs go
    res = subprocess.run([SNAKEMAKE, "--nolock", *args, "--directory", str(workdir)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    res.output = res.stdout + res.stderr
    return res


@pytest.mark.parametrize(
    "args",
    [
        ["results/rd_curves.pdf"],
        ["ablations"],
        ["dp_curve"],
        ["paper_tables"],
        ["--configfile", "config/paper.yaml", "--profile", "profiles/slurm"],
        # targets before --configfile, which takes several values and would swallow them
        ["ablations", "--configfile", "config/paper.yaml"],
        ["train_zoo", "--config", "retrain=true"],
    ],
    ids=["default", "ablations", "dp_curve", "paper_tables", "paper-slurm", "paper-ablations", "train_zoo"],
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


# what snakemake's own command-line parser makes of a command line, profiles included (run in the repository,
# where it finds workflow/Snakefile and profiles/default)
_PARSED = """
import json, sys
from snakemake.cli import parse_args
_, a = parse_args(sys.argv[1:])
print(json.dumps({"executor": a.executor, "cores": a.cores, "rerun_incomplete": a.rerun_incomplete,
                  "resources": {k: r.value for k, r in (a.resources or {}).items()}}))
"""


@pytest.mark.parametrize(
    "profile, executor, gpus",
    [([], None, None), (["--profile", "profiles/slurm"], "slurm", None),
     (["--profile", "profiles/workstation"], None, 1)],
    ids=["default", "slurm", "workstation"],
)
def test_profile_settings(profile, executor, gpus):
    """profiles/default, the workflow profile, applies to every run, under --profile profiles/slurm too (and
    wins over it key by key): what it sets holds everywhere, and it sets no global GPU limit, which would
    run one GPU job at a time on the whole cluster. The workstation profile adds that limit."""
    res = subprocess.run([sys.executable, "-c", _PARSED, "-n", "--configfile", "config/paper.yaml", *profile],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "workflow specific profile profiles/default" in res.stderr
    parsed = json.loads(res.stdout)
    assert parsed["executor"] == executor and parsed["rerun_incomplete"] is True and parsed["cores"] == 8
    assert parsed["resources"].get("gpu") == gpus


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


def test_bd_metric_that_is_not_measured_is_named(fresh_checkout):
    res = _bad(fresh_checkout, "report:\n  anchor: jpeg\n  bd_metrics: [psnr, vmaf]\n")
    assert res.returncode != 0
    assert "report.bd_metrics names ['vmaf']" in res.output
    res = _bad(fresh_checkout, "report:\n  anchor: jpeg\n  bd_metrics: [psnr]\n")
    assert res.returncode == 0, res.output[-2000:]
    assert "--bd-metrics psnr" in res.output  # passed on to the report step
    # unset: no option at all (an empty value would swallow the next option)
    res = snakemake(fresh_checkout, "-n", "-p", "results/rd_curves.pdf")
    assert res.returncode == 0 and "cgdm.evaluation.report" in res.output, res.output[-2000:]
    assert "--bd-metrics" not in res.output


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

    from cgdm.harness.codecs import Codec, import_object

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


def test_paper_profile_does_not_inherit_the_quick_training_recipe(fresh_checkout):
    """config/paper.yaml merges onto the quick config key by key: none of the quick models' params that
    shape training (the zoo's warm restarts, the decoders' adversarial term from step 0) may leak into it."""
    res = snakemake(fresh_checkout, "-n", "-p", "train_zoo", "--configfile", "config/paper.yaml")
    assert res.returncode == 0, res.output[-3000:]
    specs = [json.loads(line.split("--spec '")[1].split("'")[0]) for line in res.output.splitlines()
             if "--spec '" in line]
    assert len(specs) == 6, specs
    for spec in specs:
        assert not spec["params"].get("restarts") and spec["params"].get("perceptual") in (None, "auto"), spec
        assert spec["params"].get("adversarial_start") in (None, 0.25), spec


def _train_commands(res):
    return [line for line in res.output.splitlines() if "cgdm train --name " in line]


def test_quick_profile_installs_the_shipped_weights(fresh_checkout):
    """make reproduce trains nothing: every model comes from zoo/; retrain=true trains them all."""
    res = snakemake(fresh_checkout, "-n", "-p", "results/rd_curves.pdf", "ablations")
    assert res.returncode == 0, res.output[-3000:]
    cmds = _train_commands(res)
    assert len(cmds) == 6 and all(" --zoo " in c for c in cmds), cmds
    res = snakemake(fresh_checkout, "-n", "-p", "results/rd_curves.pdf", "ablations", "--config", "retrain=true")
    assert res.returncode == 0, res.output[-3000:]
    cmds = _train_commands(res)
    assert len(cmds) == 6 and not any("--zoo" in c for c in cmds), cmds


def test_changed_params_of_a_shipped_model_are_named(fresh_checkout):
    res = _bad(fresh_checkout, "models:\n  cgdm_base:\n    params: {steps: 10}\n")
    assert res.returncode != 0
    assert "models.cgdm_base" in res.output and "trained with another spec" in res.output
    assert "retrain: true" in res.output
    # a decoder from the zoo on a base trained here would be meaningless: refused too
    res = _bad(fresh_checkout, "models:\n  cgdm_base:\n    zoo: ''\n")
    assert res.returncode != 0
    assert "'cgdm_base', which it requires, is trained here" in res.output


@pytest.fixture(scope="module")
def tiny_checkout(tmp_path_factory):
    """A fresh copy of the .test working directory (its config and images; nothing built)."""
    root = tmp_path_factory.mktemp("tiny")
    work = root / ".test"
    work.mkdir()
    shutil.copytree(REPO / ".test" / "config", work / "config")
    (work / "data").symlink_to(REPO / ".test" / "data")
    (root / "data").symlink_to(REPO / "data")  # train_data: ../data/train
    return work


def test_ablations_and_dp_curve_resolve_on_the_test_config(tiny_checkout):
    """Both studies re-decode the encoded bitstreams: one re-decode job per (codec, rate point) of the
    study, and no encode job beyond the codecs' own rate points (nothing is re-encoded per seed or point)."""
    import re

    import yaml

    res = snakemake(tiny_checkout, "-n", "ablations", "dp_curve")
    assert res.returncode == 0, res.output[-3000:]
    cfg = yaml.safe_load((tiny_checkout / "config" / "config.yaml").read_text())
    full, dp = cfg["ablations"]["full"], cfg["dp_curve"]
    codecs = [full, *(f"{full}_{v}" for v in cfg["ablations"]["variants"])]
    rates = [str(i) for i in range(len(cfg["codecs"][full]["rates"]))]
    outputs = re.findall(r"^\s+output: (.+)$", res.output, flags=re.M)
    outputs = {o.strip() for line in outputs for o in line.split(", ")}
    decode = {tuple(m) for o in outputs for m in re.findall(r"results/redecoded/(\w+)/kodak_tiny/([\w.-]+)/(\d+)/"
                                                           r"decode\.csv", o)}
    assert decode == ({("ablations", c, r) for c in codecs for r in rates}
                      | {("dp_curve", c, str(dp["rate"])) for c in [*codecs, dp["base"]]})
    encoded = {tuple(m) for o in outputs
               for m in re.findall(r"results/encoded/kodak_tiny/([\w.-]+)/(\d+)/encode\.csv", o)}
    assert encoded == {(c, r) for c in codecs for r in rates} | {(dp["base"], str(dp["rate"]))}
    for product in ("results/ablation_seeds.csv", "results/tables/ablation_table.md", "results/dp_curve.csv",
                    "results/dp_curve.pdf", "results/dp_curve.png", "results/tables/dp_curve_table.md"):
        assert product in outputs, product


def test_bad_study_configs_are_named(fresh_checkout):
    res = _bad(fresh_checkout, "dp_curve:\n  rate: 9\n")
    assert res.returncode != 0 and "dp_curve.rate = 9 is not a rate index of codec 'cgdm'" in res.output
    res = _bad(fresh_checkout, "ablations:\n  seeds: [0]\n")
    assert res.returncode != 0 and "[0] is too short" in res.output
    res = _bad(fresh_checkout, "dp_curve:\n  points: [{guidance: 1.5}]\n")
    assert res.returncode != 0 and "1.5 is greater than the maximum of 1" in res.output
