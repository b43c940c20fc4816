"""Continuous online optimisation at encode time (cgdm.online)."""

import pytest
import torch

from cgdm import bitstream as bs
from cgdm.online import _decoder_output, online_compress
from cgdm.sampling_options import SamplingOptions
from cgdm.tensors import image_to_tensor

from helpers.diffusion import test_image, tiny_base, tiny_cgdm


@pytest.fixture(scope="module")
def model():
    """A tiny base fitted for 100 steps to the test image (a random base has no usable RD landscape)."""
    from cgdm.train import rd_loss

    x = image_to_tensor(test_image(64, 64))
    base = tiny_base().train()
    opt = torch.optim.Adam([p for n, p in base.named_parameters() if not n.endswith("quantiles")], 3e-3)
    for i in range(100):
        loss = rd_loss(base(x, torch.tensor([i % 2])), x, torch.tensor([0.01]))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    base.update(force=True)
    return tiny_cgdm(base=base.eval().requires_grad_(False))


def test_online_mode_lowers_its_objective(model):
    x = image_to_tensor(test_image(64, 64))
    res = online_compress(model, x, 1, steps=8, lr=0.05, lmbda=0.01)
    assert len(res["objective"]) == 9
    assert res["final"]["loss"] < res["initial"]["loss"]
    assert res["final"]["loss"] == min(res["objective"]), "the best iterate is kept"
    # the coded streams give the decoder exactly the latent whose objective was measured
    c = res["compressed"]
    dec = model.base.decompress(c["strings"], 1, (64, 64))
    with torch.no_grad():
        out = _decoder_output(model, dec["x_hat"], dec["features"], dec["syntax"], torch.tensor([1]), model.options)
    mse = float(((out.clamp(0, 1) - x) ** 2).mean())
    assert mse == pytest.approx(res["final"]["mse"], rel=1e-3)


def test_online_objective_sees_the_decoders_first_prediction(model):
    """The surrogate is what the decoder returns after its first sampler step, from the start noise a decode
    with the same settings draws: a one-step decode without guidance on one tile gives the same image."""
    x = image_to_tensor(test_image(64, 64))
    with torch.no_grad():
        out = model.base(x, 1)
        for seed in (0, 3):
            options = SamplingOptions(steps=1, seed=seed, guidance=0.0, tile=64, overlap=0)
            surrogate = _decoder_output(model, out["x_hat"], out["features"], out["syntax"], torch.tensor([1]),
                                        options)
            decoded = model.postprocess(out["x_hat"], out["features"], out["syntax"], 1, options=options)
            assert torch.allclose(surrogate.clamp(0, 1), decoded, atol=1e-5)
    other = _decoder_output(model, out["x_hat"], out["features"], out["syntax"], torch.tensor([1]),
                            SamplingOptions(steps=1, seed=1, guidance=0.0, tile=64, overlap=0))
    assert not torch.allclose(other, surrogate), "the start noise follows the decode seed"


def test_online_file_decodes_with_the_unchanged_decoder(model):
    img = test_image(48, 80)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = model.compress(img, 0, online_steps=3, lr=0.05, lmbda=0.01)
    assert bs.read_header(data).flags & bs.ONLINE
    out = model.decompress(data)
    assert out.shape == img.shape
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "weights must not change"
    plain = model.compress(img, 0)
    assert not bs.read_header(plain).flags & bs.ONLINE


def test_online_needs_a_tradeoff(model):
    with pytest.raises(ValueError, match="lmbda"):
        online_compress(model, image_to_tensor(test_image(32, 32)), 0, steps=1)


def test_online_encoding_is_reproducible_whatever_the_global_random_state(model):
    """The relaxation's noise is seeded: the same image gives the same file in any process (the global
    generator's state differs between processes), and the caller's random state is left alone."""
    img = test_image(48, 64)
    torch.manual_seed(1)
    first = model.compress(img, 0, online_steps=3, lr=0.05, lmbda=0.01)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    assert model.compress(img, 0, online_steps=3, lr=0.05, lmbda=0.01) == first
    assert torch.equal(torch.get_rng_state(), state)
    assert model.compress(img, 0, online_steps=3, lr=0.05, lmbda=0.01, seed=5) != first
