"""Training of the base codec: export, resume after an interruption, config dispatch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cgdm import train
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
    from cgdm.pipeline import zoo_extend_main

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


def test_cli_train_and_decoder_dispatch(images, tmp_path, monkeypatch):
    cfg = {"stage": "base", "out": str(tmp_path / "cli.pth"), "train_images": str(images[0].parent),
           "params": {**TINY, "steps": 2}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(tmp_path / "base.yaml")]) == 0
    assert load_checkpoint(tmp_path / "cli.pth")["meta"]["steps"] == 2

    calls = []
    monkeypatch.setattr(train, "train_decoder", lambda *args: calls.append(args))
    cfg = {"stage": "decoder", "out": str(tmp_path / "dec.pth"), "train_images": [str(p) for p in images[:2]],
           "requires": {"base": str(tmp_path / "cli.pth")}, "params": {"steps": 5}, "device": "cpu"}
    (tmp_path / "dec.yaml").write_text(yaml.safe_dump(cfg))
    assert train.main(["--config", str(tmp_path / "dec.yaml")]) == 0
    (params, imgs, out, requires, device), = calls
    assert params == {"steps": 5} and imgs == images[:2] and out == tmp_path / "dec.pth"
    assert requires == {"base": str(tmp_path / "cli.pth")} and device == "cpu"

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"stage": "nope", "out": "x"}))
    assert train.main(["--config", str(tmp_path / "bad.yaml")]) == 2
    assert train.main(["--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_kill_and_resume_subprocess(images, tmp_path):
    """SIGKILL a real `cgdm train` mid-run, resume with --resume: same weights as an uninterrupted run."""
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
    subprocess.run(cmd + [config("killed"), "--resume"], check=True, capture_output=True, timeout=600)
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
