"""`cgdm zoo-train` (the zoo trained without Snakemake) and the GPU recipe it runs there
(config/zoo/gpu.yaml, config/zoo/train_on_gpu.sh), on tiny models on the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from cgdm import zoo
from cgdm.cli_train import zoo_train_main

REPO = Path(__file__).resolve().parent.parent
# the .test config's tiny models (what CI's workflow run trains), given shipped-weight names
TINY = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())["models"]


def _config(tmp_path, names, **changes):
    models = {n: {**TINY[n], "zoo": n, **changes.get(n, {})} for n in names}
    path = tmp_path / "zoo_config.yaml"
    path.write_text(yaml.safe_dump({"train_data": str(REPO / "data" / "val"), "models": models}))
    return path, models


def test_zoo_train_trains_in_dependency_order_and_ships_with_provenance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # resources/models, logs/ and results/ are relative, as in the workflow
    config, models = _config(tmp_path, ["cgdm_decoder", "cgdm_base"])  # the decoder listed first
    assert zoo_train_main(["--config", str(config), "--device", "cpu", "--zoo-dir", "shipped",
                           "--revision", "r1"]) == 0
    out = capsys.readouterr().out
    assert out.index("cgdm_base: trained") < out.index("cgdm_decoder: trained")  # the base first
    table = zoo.shipped_models("shipped")
    assert set(table) == {"cgdm_base", "cgdm_decoder"}
    for name, entry in models.items():
        prov = table[name].provenance
        assert prov["revision"] == "r1" and prov["device"] == "cpu" and prov["train_images"] == 4
        assert prov["wall_s"] > 0 and prov["cpu_s"] > 0 and "cgdm zoo-train" in prov["note"]
        # what the workflow installs: checked against the entry it was trained from
        zoo.install_shipped(name, entry, tmp_path / f"{name}.installed", "shipped")
    # the decoder alone: the base it requires is taken from resources/models/, where the run above left it
    assert zoo_train_main(["cgdm_decoder", "--config", str(config), "--device", "cpu", "--zoo-dir", "again"]) == 0
    assert set(zoo.shipped_models("again")) == {"cgdm_decoder"}


def test_zoo_train_ships_nothing_when_a_model_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = {"cgdm_base": {"params": {**TINY["cgdm_base"]["params"], "no_such_param": 1}}}
    config, _ = _config(tmp_path, ["cgdm_base", "cgdm_decoder"], **bad)
    assert zoo_train_main(["--config", str(config), "--device", "cpu", "--zoo-dir", "shipped"]) == 1
    err = capsys.readouterr()
    assert "cgdm_base: FAILED" in err.out and "nothing shipped" in err.err and "['cgdm_decoder'] not trained" in err.err
    assert "no_such_param" in Path("logs/train/cgdm_base.log").read_text()  # the reason is in its log
    assert not Path("logs/train/cgdm_decoder.log").exists()  # never started: its base failed
    assert not Path("shipped").exists()


def test_zoo_train_refuses_unknown_models_and_unmet_requires(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config, _ = _config(tmp_path, ["cgdm_decoder"])  # requires cgdm_base: not among them, not trained before
    assert zoo_train_main(["--config", str(config), "--device", "cpu"]) == 2
    assert "neither trained here nor in resources/models/*.pt: {'cgdm_decoder': ['cgdm_base']}" in \
        capsys.readouterr().err
    assert zoo_train_main(["--config", str(config), "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_gpu_recipe_trains_the_shipped_networks():
    """config/zoo/gpu.yaml changes the budget (batch, crops, decoder steps, objective), never the networks,
    data, rates or the models' names: what it trains replaces the shipped zoo one for one."""
    quick = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    gpu = yaml.safe_load((REPO / "config" / "zoo" / "gpu.yaml").read_text())
    assert gpu["train_data"] == quick["train_data"]
    assert gpu["models"].keys() == quick["models"].keys()
    budget = {"steps", "batch_size", "patch_size", "perceptual"}
    for name, entry in gpu["models"].items():
        ref = quick["models"][name]
        assert (entry["trainer"], entry["zoo"], entry.get("requires")) == (ref["trainer"], ref["zoo"],
                                                                            ref.get("requires")), name
        same = {k: v for k, v in entry["params"].items() if k not in budget}
        assert same == {k: v for k, v in ref["params"].items() if k not in budget}, name


@pytest.mark.slow
def test_gpu_script_packs_a_zoo_that_unpacks_here(tmp_path):
    """config/zoo/train_on_gpu.sh with DEVICE=cpu on a copy of the checkout without zoo/ (which need not
    travel): the parts it writes unpack into a zoo/ whose table holds every model."""
    work = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "cgdm", "baselines", "data/val"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files + ["config/zoo/train_on_gpu.sh"]:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / f, work / f)
    config, _ = _config(work, ["cgdm_base", "hyperprior_small"])
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "CGDM_CODE_REVISION": "r2",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "config/zoo/train_on_gpu.sh", str(config), str(out)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {"device.txt", "zoo-train.log", "logs.tgz"} <= {p.name for p in out.iterdir()}
    back = tmp_path / "back"
    back.mkdir()
    parts = b"".join(p.read_bytes() for p in sorted(out.glob("zoo.tar.part-*")))
    (back / "zoo.tar").write_bytes(parts)
    with tarfile.open(back / "zoo.tar") as tar:
        tar.extractall(back, filter="data")
    table = zoo.shipped_models(back / "zoo")
    assert set(table) == {"cgdm_base", "hyperprior_small"}
    assert all(t.provenance["revision"] == "r2" for t in table.values())
