"""Training of the base codec: export, resume after an interruption; `cgdm train` (file, spec, flags)."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cgdm import train, train_diffusion
from cgdm.cli_train import train_main
from cgdm.train import train_base
from cgdm.zoo import load_base_codec, load_checkpoint

TINY = {"N": 8, "M": 8, "syntax_dim": 4, "lambdas": [0.002, 0.01], "batch_size": 2, "patch_size": 32,
        "steps": 6, "checkpoint_every": 2, "threads": 1, "lr": 1e-3}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:72]
    for i in range(3):
        smooth = (np.sin(xx / (5 + i)) + np.cos(yy / 7))[..., None] * 60 + 120
        img = np.clip(smooth + rng.normal(0, 10, (48, 72, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    Image.fromarray(np.full((20, 25, 3), 90, np.uint8)).save(folder / "small.png")  # smaller than a patch
    return sorted(folder.iterdir())


class Interrupt(Exception):
    pass


def _stop_at(n):
    def hook(step):
        if step == n:
            raise Interrupt

    return hook


def test_export(images, tmp_path):
    out = train_base({**TINY, "steps": 3}, images, tmp_path / "m" / "base.pth", {}, "cpu", progress=False)
    meta = load_checkpoint(out)["meta"]
    assert meta["arch"] == "cgdm-base-vr-mshp" and meta["steps"] == 3
    assert meta["lambdas"] == TINY["lambdas"] and meta["num_rates"] == 2
    assert (meta["N"], meta["M"]) == (8, 8) and meta["ms_per_step"] > 0
    assert not (tmp_path / "m" / "base.pth.state").exists()  # removed once the export is written
    model, _ = load_base_codec(out)
    # the exported model is ready for range coding (CDFs built before export)
    enc = model.compress(torch.rand(1, 3, 20, 20), 1)
    assert model.decompress(enc["strings"], 1, (20, 20))["x_hat"].shape == (1, 3, 20, 20)


def test_resume_reaches_same_step_and_optimizer_state(images, tmp_path):
    """Interrupted at step 3 (last checkpoint at 2) and resumed == uninterrupted, step for step."""
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    # stop both runs right after the step-6 state is saved, to compare the full training state
    with pytest.raises(Interrupt):
        train_base(TINY, images, a, progress=False, on_step=_stop_at(6))
    with pytest.raises(Interrupt):
        train_base(TINY, images, b, progress=False, on_step=_stop_at(3))
    assert torch.load(b.with_name("b.pth.state"), weights_only=False)["step"] == 2
    with pytest.raises(Interrupt):
        train_base(TINY, images, b, progress=False, on_step=_stop_at(6))
    sa = torch.load(a.with_name("a.pth.state"), weights_only=False)
    sb = torch.load(b.with_name("b.pth.state"), weights_only=False)
    assert sa["step"] == sb["step"] == 6
    for key in ("optimizer", "aux_optimizer"):
        assert sa[key]["state"].keys() == sb[key]["state"].keys()
        for i, st in sa[key]["state"].items():
            assert st["step"] == sb[key]["state"][i]["step"]
            assert torch.equal(st["exp_avg"], sb[key]["state"][i]["exp_avg"])
            assert torch.equal(st["exp_avg_sq"], sb[key]["state"][i]["exp_avg_sq"])
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    assert torch.equal(sa["crop_rng"], sb["crop_rng"]) and torch.equal(sa["torch_rng"], sb["torch_rng"])
    # finishing both (nothing left to train) exports identical weights
    ha = load_checkpoint(train_base(TINY, images, a, progress=False))["meta"]["weights_sha256"]
    hb = load_checkpoint(train_base(TINY, images, b, progress=False))["meta"]["weights_sha256"]
    assert ha == hb


def test_resume_checks_params(images, tmp_path):
    out = tmp_path / "c.pth"
    with pytest.raises(Interrupt):
        train_base(TINY, images, out, progress=False, on_step=_stop_at(2))
    with pytest.raises(ValueError, match="different training params"):
        train_base({**TINY, "lr": 5e-4}, images, out, progress=False)
    # steps may change: a run can be extended
    train_base({**TINY, "steps": 3}, images, out, progress=False)
    assert load_checkpoint(out)["meta"]["steps"] == 3
    with pytest.raises(ValueError, match="unknown training params"):
        train_base({"stpes": 3}, images, out)
    with pytest.raises(ValueError, match="no training images"):
        train_base(TINY, [], out)


def test_restarts_reset_the_schedule_and_extension_equals_training_from_scratch(images, tmp_path):
    from cgdm.training import lr_factor, segment

    # the schedule restarts: step 4 of a 6-step run with a restart at 4 has the full learning rate again
    assert segment(4, 6, [4]) == (1, 4, 6) and segment(3, 6, [4]) == (0, 0, 4)
    assert lr_factor(4 - 4, 2, 0.1) == 1.0
    with pytest.raises(ValueError, match="restarts must be"):
        train_base({**TINY, "restarts": [6]}, images, tmp_path / "x.pth", progress=False)

    longer = {**TINY, "steps": 6, "restarts": [4]}
    scratch = load_checkpoint(train_base(longer, images, tmp_path / "scratch.pth", progress=False))
    short = train_base({**TINY, "steps": 4}, images, tmp_path / "short.pth", progress=False)
    train.extend_state(longer, short, tmp_path / "ext.pth")
    # interrupted after the restart and resumed: the same weights, and it still says what it continued
    with pytest.raises(Interrupt):
        train_base({**longer, "checkpoint_every": 1}, images, tmp_path / "ext.pth", progress=False,
                   on_step=_stop_at(5))
    extended = load_checkpoint(train_base(longer, images, tmp_path / "ext.pth", progress=False))
    assert extended["meta"]["extended_from"] == str(short)
    assert extended["meta"]["weights_sha256"] == scratch["meta"]["weights_sha256"]
    # and the restart does change the run: without it the same 6 steps end elsewhere
    plain = load_checkpoint(train_base({**TINY, "steps": 6}, images, tmp_path / "plain.pth", progress=False))
    assert plain["meta"]["weights_sha256"] != scratch["meta"]["weights_sha256"]

    with pytest.raises(ValueError, match="must contain 4"):
        train.extend_state({**TINY, "steps": 6, "restarts": [3]}, short, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="other params than these"):
        train.extend_state({**longer, "lr": 5e-4}, short, tmp_path / "bad.pth")
    # a weights-only state anywhere but at a restart is refused, not silently mixed with a fresh optimizer
    state_path = train.extend_state(longer, short, tmp_path / "moved.pth")
    state = torch.load(state_path, weights_only=False)
    torch.save({**state, "step": 3}, state_path)
    with pytest.raises(ValueError, match="not one of the restarts"):
        train_base(longer, images, tmp_path / "moved.pth", progress=False)


def test_zoo_extend_continues_a_shipped_model(images, tmp_path, monkeypatch):
    from cgdm import zoo
    from cgdm.cli_train import zoo_extend_main

    spec = {"trainer": "cgdm.train:train_base", "zoo": "tiny", "params": {**TINY, "steps": 4}}
    zoo.ship({"tiny": (spec, train_base(spec["params"], images, tmp_path / "t.pth", progress=False), {})},
             "r1", tmp_path / "zoo")
    longer = {**spec, "params": {**TINY, "steps": 6, "restarts": [4]}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"tiny": longer, "plain": {**longer, "zoo": None}}}))
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(config), "--zoo-dir", str(tmp_path / "zoo")]
    assert zoo_extend_main(["tiny", *args]) == 0
    steps = []
    out = train_base(longer["params"], images, tmp_path / "resources" / "models" / "tiny.pt", progress=False,
                     on_step=steps.append)
    assert steps == [5, 6] and load_checkpoint(out)["meta"]["extended_from"] == str(tmp_path / "zoo" / "tiny.pt")
    assert zoo_extend_main(["plain", *args]) == 2  # no shipped weights to continue
    config.write_text(yaml.safe_dump({"models": {"tiny": {**spec, "params": {**TINY, "steps": 6}}}}))
    assert zoo_extend_main(["tiny", *args]) == 2  # no restart at the shipped steps: it cannot continue


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def calls(monkeypatch):
    """The decoder trainer replaced by a recorder: the arguments `cgdm train` calls it with."""
    seen = []

    def record(params, images, out, requires, device, *, resume="not passed"):
        seen.append({"params": params, "images": images, "out": out, "requires": requires, "device": device,
                     **({} if resume == "not passed" else {"resume": resume})})
        Path(out).write_bytes(b"x")

    monkeypatch.setattr(train_diffusion, "train_decoder", record)
    return seen


def test_cli_train_from_a_file_with_stage_shorthand(images, tmp_path, calls):
    """The standalone file of a CGDM stage: `stage: base` (or no stage) trains the base codec; `stage: decoder`
    the decoder, with the file's requires mapping, images and device."""
    cfg = {"stage": "base", "out": str(tmp_path / "cli.pth"), "train_images": str(images[0].parent),
           "params": {**TINY, "steps": 2}}
    assert train_main(["--config", _yaml(tmp_path / "base.yaml", cfg)]) == 0
    assert load_checkpoint(tmp_path / "cli.pth")["meta"]["steps"] == 2
    assert not calls

    cfg = {"stage": "decoder", "out": str(tmp_path / "dec.pth"), "train_images": [str(p) for p in images[:2]],
           "requires": {"base": str(tmp_path / "cli.pth")}, "params": {"steps": 5}, "device": "cpu"}
    assert train_main(["--config", _yaml(tmp_path / "dec.yaml", cfg)]) == 0
    assert calls == [{"params": {"steps": 5}, "images": images[:2], "out": tmp_path / "dec.pth",
                      "requires": {"base": tmp_path / "cli.pth"}, "device": "cpu"}]
    # the same with the trainer named (the keys of a workflow models: entry)
    cfg = {**cfg, "trainer": "cgdm.train_diffusion:train_decoder"}
    del cfg["stage"]
    assert train_main(["--config", _yaml(tmp_path / "dec2.yaml", cfg)]) == 0
    assert calls[1] == calls[0]


def test_cli_train_flags_override_the_file(images, tmp_path, calls, monkeypatch):
    threads = []
    monkeypatch.setattr("cgdm.cli_train.set_threads", threads.append)
    cfg = {"trainer": "cgdm.train_diffusion:train_decoder", "out": str(tmp_path / "file.pth"), "threads": 3,
           "train_images": [str(images[0])], "requires": {"base": "file_base.pth"}, "device": "cuda"}
    path = _yaml(tmp_path / "dec.yaml", cfg)
    assert train_main(["--config", path]) == 0
    assert train_main(["--config", path, "--out", str(tmp_path / "flag.pth"), "--train-dir", str(images[0].parent),
                       "--require", "base=flag_base.pth", "--device", "cpu", "--threads", "1"]) == 0
    assert threads == [3, 1]
    file, flags = calls
    assert (file["out"], file["images"], file["device"]) == (tmp_path / "file.pth", [images[0]], "cuda")
    assert file["requires"] == {"base": Path("file_base.pth")}
    assert (flags["out"], flags["images"], flags["device"]) == (tmp_path / "flag.pth", images, "cpu")
    assert flags["requires"] == {"base": Path("flag_base.pth")}


def test_cli_train_with_a_workflow_spec(images, tmp_path, calls):
    """What the workflow passes: the entry as JSON (requires by name, gpu, zoo, threads), paths as flags."""
    spec = {"trainer": "cgdm.train_diffusion:train_decoder", "params": {"steps": 5}, "requires": ["cgdm_base"],
            "threads": 1, "gpu": False, "zoo": "cgdm-decoder-quick"}
    args = ["--name", "cgdm_decoder", "--spec", json.dumps(spec), "--train-dir", str(images[0].parent),
            "--out", str(tmp_path / "d.pt"), "--device", "cpu", "--threads", "1"]
    assert train_main(args) == 2  # the required model's checkpoint is missing
    assert train_main([*args, "--require", "cgdm_base=b.pt"]) == 0
    assert calls == [{"params": {"steps": 5}, "images": images, "out": tmp_path / "d.pt",
                      "requires": {"cgdm_base": Path("b.pt")}, "device": "cpu"}]  # the entry's zoo: not installed
    base = {"trainer": "cgdm.train:train_base", "params": {**TINY, "steps": 1}, "threads": 1}
    assert train_main(["--spec", json.dumps(base), "--train-dir", str(images[0].parent),
                       "--out", str(tmp_path / "b.pt")]) == 0
    assert load_checkpoint(tmp_path / "b.pt")["meta"]["steps"] == 1


def test_cli_train_no_resume_starts_over(images, tmp_path, calls):
    out = tmp_path / "r.pth"
    with pytest.raises(Interrupt):
        train_base(TINY, images, out, progress=False, on_step=_stop_at(2))
    spec = json.dumps({"trainer": "cgdm.train:train_base", "params": TINY})
    args = ["--spec", spec, "--train-dir", str(images[0].parent), "--out", str(out)]
    with pytest.warns(UserWarning, match="will be overwritten"):
        assert train_main([*args, "--no-resume"]) == 0
    assert load_checkpoint(out)["meta"]["weights_sha256"] == load_checkpoint(
        train_base(TINY, images, tmp_path / "fresh.pth", progress=False))["meta"]["weights_sha256"]
    # by default a trainer is called with the five arguments alone; --no-resume adds resume=False
    dec = ["--config", _yaml(tmp_path / "d.yaml", {"stage": "decoder", "out": str(tmp_path / "d.pth"),
                                                   "train_images": [str(images[0])]})]
    assert train_main(dec) == 0 and train_main([*dec, "--no-resume"]) == 0
    assert "resume" not in calls[0] and calls[1]["resume"] is False


def test_cli_train_installs_shipped_weights(images, tmp_path, monkeypatch):
    from cgdm import zoo

    spec = {"trainer": "cgdm.train:train_base", "zoo": "tiny", "params": {**TINY, "steps": 1}}
    shipped = train_base(spec["params"], images, tmp_path / "t.pth", progress=False)
    zoo.ship({"tiny": (spec, shipped, {})}, "r1", tmp_path / "zoo")
    monkeypatch.setattr(zoo, "install_shipped", functools.partial(zoo.install_shipped, folder=tmp_path / "zoo"))
    out = tmp_path / "models" / "tiny.pt"
    args = ["--spec", json.dumps(spec), "--out", str(out), "--zoo", "tiny"]
    assert train_main(args) == 0
    assert load_checkpoint(out)["meta"]["weights_sha256"] == load_checkpoint(shipped)["meta"]["weights_sha256"]
    # the spec must be the one the weights were trained with (here: stage base is the same trainer)
    assert train_main(["--config", _yaml(tmp_path / "s.yaml", {"stage": "base", "params": spec["params"]}),
                       "--out", str(tmp_path / "s.pt"), "--zoo", "tiny"]) == 0
    other = json.dumps({**spec, "params": {**TINY, "steps": 2}})
    assert train_main(["--spec", other, "--out", str(tmp_path / "o.pt"), "--zoo", "tiny"]) == 2
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("cfg, flags, message", [
    ({"stage": "nope", "out": "x"}, [], "unknown stage 'nope'"),
    ({"stage": "base", "trainer": "baselines.learned_training:train", "out": "x"}, [], "give one"),
    ({"stgae": "base", "out": "x"}, [], r"unknown keys \['stgae'\]"),
    ({"trainer": "no.such:trainer", "out": "x"}, [], "cannot import"),
    ({"stage": "base"}, [], "give --out"),
    ({"stage": "base", "out": "x", "requires": {"base": "b"}}, ["--require", "base"], "expected NAME=PATH"),
    ({"stage": "base", "out": "x", "requires": "cgdm_base"}, [], r"requires: expected \{name: checkpoint\}"),
    ({"stage": "base", "out": "x", "train_images": "no/such/folder"}, [], "is not a folder"),
    ({"stage": "base", "out": "x", "train_images": []}, [], "no training images"),
    ({"stage": "base", "out": "x", "params": {"stpes": 3}}, [], "unknown training params"),
    ({"stage": "decoder", "out": "x"}, ["--no-resume"], "has no resume parameter"),
])
def test_cli_train_refuses_with_one_line(cfg, flags, message, images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_diffusion, "train_decoder", lambda params, images, out, requires, device: None)
    monkeypatch.chdir(tmp_path)
    cfg = {"train_images": [str(p) for p in images], **cfg}
    assert train_main(["--config", _yaml(tmp_path / "bad.yaml", cfg), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cgdm train: error: ") and err.count("\n") == 1 and re.search(message, err), err
    assert not list(tmp_path.glob("x*"))


def test_cli_train_refuses_a_missing_or_bad_source(tmp_path, capsys):
    assert train_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert train_main(["--spec", "{not json"]) == 2
    assert train_main(["--spec", "[1, 2]", "--out", "x"]) == 2
    with pytest.raises(SystemExit):
        train_main(["--out", "x"])  # neither --config nor --spec
    with pytest.raises(SystemExit):
        train_main(["--config", "a.yaml", "--spec", "{}"])


def test_cli_train_knows_every_key_of_a_workflow_models_entry():
    """`cgdm train --spec` takes the workflow's models: entries as they are: their keys are those of the schema."""
    from cgdm.cli_train import ENTRY_KEYS

    schema = yaml.safe_load((Path(__file__).resolve().parent.parent / "workflow/schemas/config.schema.yaml")
                            .read_text())
    assert set(schema["properties"]["models"]["additionalProperties"]["properties"]) == ENTRY_KEYS


@pytest.mark.slow
def test_kill_and_resume_subprocess(images, tmp_path):
    """SIGKILL a real `cgdm train` mid-run, run the same command again (it resumes from <out>.state by
    default): same weights as an uninterrupted run."""
    params = {**TINY, "steps": 40, "checkpoint_every": 5}

    def config(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"out": str(tmp_path / f"{name}.pth"), "params": params,
                                        "train_images": str(images[0].parent)}))
        return str(path)

    cmd = [sys.executable, "-m", "cgdm", "train", "--config"]
    subprocess.run(cmd + [config("full")], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(cmd + [config("killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed.pth.state"
    deadline = time.time() + 300
    while time.time() < deadline:
        if state.exists() and torch.load(state, weights_only=False)["step"] >= 10:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed.pth").exists()
    step = torch.load(state, weights_only=False)["step"]
    assert 10 <= step < 40
    subprocess.run(cmd + [config("killed")], check=True, capture_output=True, timeout=600)
    full = load_checkpoint(tmp_path / "full.pth")["meta"]
    killed = load_checkpoint(tmp_path / "killed.pth")["meta"]
    assert killed["steps"] == full["steps"] == 40
    assert killed["weights_sha256"] == full["weights_sha256"]


@pytest.mark.slow
def test_quick_training_learns_rd_order(tmp_path):
    """A short run on the embedded photos: rates are ordered in bits and in distortion, and the real
    file size is within 1 % (+ container) of the estimated rate."""
    from cgdm.codec import estimate_bits
    from cgdm.coder import BaseCoder
    from cgdm.imageio import list_images, load_image
    from cgdm.tensors import image_to_tensor

    params = {"N": 32, "M": 48, "steps": 300, "batch_size": 4, "patch_size": 96, "threads": 1, "lr": 1e-3,
              "lambdas": [0.002, 0.008, 0.032]}
    out = train_base(params, list_images("data/train"), tmp_path / "q.pth", progress=False)
    coder = BaseCoder.from_checkpoint(out)
    # a whole Kodak image: the ~20 bytes that the three range-coder flushes cost are then well inside 1 %
    image = load_image("data/kodak/kodim05.png")
    x = image_to_tensor(image)
    sizes, mses = [], []
    for r in range(3):
        data = coder.encode(image, r)
        rec = coder.decode(data)
        with torch.no_grad():
            est = sum(float(v) for v in estimate_bits(coder.model(x, r)["likelihoods"]).values()) / 8
        assert abs(len(data) - est) <= 0.01 * est + 32, (r, len(data), est)
        sizes.append(len(data))
        mses.append(float(((rec.astype(float) - image) ** 2).mean()))
    assert sizes[0] < sizes[1] < sizes[2]
    assert mses[0] > mses[1] > mses[2]
