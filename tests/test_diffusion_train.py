"""Decoder-stage training (cgdm.train_diffusion): checkpoint, variants, resume, workflow dispatch."""

import numpy as np
import pytest
import torch

from cgdm.imageio import save_png
from cgdm.model import CGDM, load_decoder
from cgdm.train_diffusion import train_decoder
from cgdm.zoo import load_checkpoint, save_checkpoint

from helpers.diffusion import test_image, tiny_base

TINY = {"channels": [8, 16], "emb_dim": 16, "consistency_channels": 8, "consistency_hidden": 8,
        "consistency_blocks": 1, "batch_size": 2, "patch_size": 32, "steps": 4, "checkpoint_every": 2,
        "lpips_weight": 0.0, "sff_stream_dim": 4}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    images = []
    for i in range(2):
        images.append(root / f"img{i}.png")
        save_png(images[-1], test_image(40, 48, seed=i))
    base = tiny_base()
    base_ckpt = root / "base.pth"
    save_checkpoint(base_ckpt, base.state_dict(), {"arch": "cgdm-base-vr-mshp", "steps": 0, "config": base.config,
                                                  "lambdas": [0.004, 0.016]})
    return root, images, base_ckpt


@pytest.mark.parametrize("variant", ["full", "no_consistency", "no_sff"])
def test_train_writes_a_loadable_checkpoint_per_variant(setup, variant):
    root, images, base_ckpt = setup
    out = root / f"dec_{variant}.pth"
    train_decoder({**TINY, "variant": variant}, images, out, {"base": str(base_ckpt)}, progress=False)
    assert out.is_file() and not (root / f"dec_{variant}.pth.state").exists()
    _, meta = load_decoder(out)
    assert meta["steps"] == 4 and meta["variant"] == variant and meta["lpips"] is False
    assert set(meta["final"]) >= {"diffusion", "loss"}
    assert ("consistency" in meta["final"]) == (variant != "no_consistency")
    model = CGDM.from_checkpoints(base_ckpt, out)
    img = test_image(32, 32)
    assert model.decompress(model.compress(img, 0)).shape == img.shape


def test_training_changes_the_weights_and_is_seeded(setup):
    root, images, base_ckpt = setup
    a, b, c = root / "a.pth", root / "b.pth", root / "c.pth"
    train_decoder(TINY, images, a, {"base": str(base_ckpt)}, progress=False)
    train_decoder(TINY, images, b, {"base": str(base_ckpt)}, progress=False)
    train_decoder({**TINY, "seed": 1}, images, c, {"base": str(base_ckpt)}, progress=False)
    sa, sb, sc = (load_checkpoint(p)["state_dict"] for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same seed -> same weights"
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_after_a_kill_reaches_the_same_weights(setup):
    root, images, base_ckpt = setup
    ref = root / "ref.pth"
    train_decoder(TINY, images, ref, {"base": str(base_ckpt)}, progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(step):
        if step == 3:
            raise Killed

    out = root / "resumed.pth"
    with pytest.raises(Killed):
        train_decoder(TINY, images, out, {"base": str(base_ckpt)}, on_step=kill_at_3, progress=False)
    state = torch.load(root / "resumed.pth.state", weights_only=False)
    assert state["step"] == 2 and not out.exists()  # last periodic checkpoint, no final file
    train_decoder(TINY, images, out, {"base": str(base_ckpt)}, progress=False)
    s_ref, s_out = load_checkpoint(ref)["state_dict"], load_checkpoint(out)["state_dict"]
    assert all(torch.equal(s_ref[k], s_out[k]) for k in s_ref)

    # a state file of other params is refused, not silently mixed
    with pytest.raises(ValueError, match="unknown decoder training params"):
        train_decoder({"stepz": 1}, images, out, {"base": str(base_ckpt)})
    with pytest.raises(Killed):
        train_decoder(TINY, images, out, {"base": str(base_ckpt)}, on_step=kill_at_3, progress=False)
    with pytest.raises(ValueError, match="different params"):
        train_decoder({**TINY, "lr": 1e-3}, images, out, {"base": str(base_ckpt)}, progress=False)


def test_needs_one_base_checkpoint(setup):
    root, images, base_ckpt = setup
    with pytest.raises(ValueError, match="requires"):
        train_decoder(TINY, images, root / "x.pth", {})
    with pytest.raises(ValueError, match="requires"):
        train_decoder(TINY, images, root / "x.pth", {"a": base_ckpt, "b": base_ckpt})
    # the workflow passes required models by config name
    train_decoder({**TINY, "steps": 1}, images, root / "x.pth", {"cgdm_base": base_ckpt}, progress=False)
    assert load_decoder(root / "x.pth")[1]["steps"] == 1


def test_cgdm_train_dispatches_decoder_stage(setup):
    import yaml

    from cgdm.cli_train import train_main

    root, images, base_ckpt = setup
    cfg = root / "dec.yaml"
    out = root / "cli.pth"
    cfg.write_text(yaml.safe_dump({"stage": "decoder", "out": str(out), "train_images": [str(p) for p in images],
                                   "requires": {"base": str(base_ckpt)}, "params": TINY}))
    assert train_main(["--config", str(cfg)]) == 0
    assert np.isfinite(load_decoder(out)[1]["final"]["loss"])


def test_perceptual_losses_are_recorded_and_a_missing_one_is_an_error(setup, tmp_path, monkeypatch):
    """perceptual: adversarial trains a critic and says so in the checkpoint; perceptual: lpips without the
    LPIPS-VGG weights stops before the first step with the fix (never a silent skip)."""
    root, images, base_ckpt = setup
    out = tmp_path / "adv.pth"
    train_decoder({**TINY, "perceptual": "adversarial", "adversarial_start": 0.0}, images, out,
                  {"base": str(base_ckpt)}, progress=False)
    _, meta = load_decoder(out)
    assert meta["losses"] == ["diffusion", "consistency", "deviation", "adversarial", "sff_rate"]
    assert "critic" in meta["final"] and "adversarial" in meta["final"]
    none = tmp_path / "none.pth"
    train_decoder({**TINY, "perceptual": "none"}, images, none, {"base": str(base_ckpt)}, progress=False)
    assert load_decoder(none)[1]["losses"] == ["diffusion", "consistency", "deviation", "sff_rate"]

    monkeypatch.setenv("CGDM_WEIGHTS_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ValueError, match=r"lpips.*(fetch|--list)"):
        train_decoder({**TINY, "perceptual": "lpips", "lpips_weight": 0.1}, images, tmp_path / "l.pth",
                      {"base": str(base_ckpt)}, progress=False)
    assert not (tmp_path / "l.pth").exists() and not (tmp_path / "l.pth.state").exists()
    # auto falls back to the adversarial term alone, and records it
    train_decoder({**TINY, "perceptual": "auto", "lpips_weight": 0.1}, images, tmp_path / "a.pth",
                  {"base": str(base_ckpt)}, progress=False)
    used = load_decoder(tmp_path / "a.pth")[1]["losses"]
    assert [n for n in used if n in ("adversarial", "lpips")] == ["adversarial"]
    with pytest.raises(ValueError, match="unknown perceptual"):
        train_decoder({**TINY, "perceptual": "gan"}, images, tmp_path / "x.pth", {"base": str(base_ckpt)})
