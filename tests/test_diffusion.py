"""Noise schedule, DDIM sampler and conditional U-Net (cgdm.diffusion)."""

import pytest
import torch

from cgdm.diffusion import (
    ConditionalUNet,
    DDIMSampler,
    NoiseSchedule,
    sampling_timesteps,
)


def test_schedule_coefficients_are_variance_preserving():
    for kind in ("linear", "cosine"):
        s = NoiseSchedule(1000, kind)
        a, b = s.coefficients(torch.arange(-1, 1000))
        assert torch.allclose(a**2 + b**2, torch.ones_like(a))
        assert a[0] == 1 and bool((a[1:] < a[:-1]).all()), "signal must decay monotonically"
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule(kind="quadratic")


def test_sampling_timesteps():
    assert sampling_timesteps(250, 4) == [250, 188, 125, 62]
    assert sampling_timesteps(7, 1) == [7]
    with pytest.raises(ValueError):
        sampling_timesteps(2, 5)
    with pytest.raises(ValueError):
        DDIMSampler(NoiseSchedule(), steps=2, t0=1000)


def test_ddim_with_exact_x0_recovers_the_image():
    """With a perfect x0 predictor, DDIM lands exactly on x0 whatever the start noise."""
    x0 = torch.rand(1, 3, 8, 8) * 2 - 1
    sampler = DDIMSampler(NoiseSchedule(), steps=3, t0=400)
    g = torch.Generator().manual_seed(0)
    out = sampler.sample(torch.zeros_like(x0), lambda x, t: x0, g)
    assert torch.allclose(out, x0)


def test_sampler_is_seeded_and_uses_every_option():
    x = torch.rand(1, 3, 8, 8)

    def predict(x_t, t):  # a smooth function of x_t, so the start noise matters
        return 0.5 * x_t + 0.01 * t

    def run(seed=0, steps=3, t0=300, eta=0.0):
        return DDIMSampler(NoiseSchedule(), steps, t0, eta).sample(x, predict, torch.Generator().manual_seed(seed))

    ref = run()
    assert torch.equal(ref, run()), "same seed must give the same result"
    assert not torch.equal(ref, run(seed=1))
    assert not torch.equal(ref, run(steps=2))
    assert not torch.equal(ref, run(t0=200))
    a, b = run(eta=1.0), run(eta=1.0)
    assert torch.equal(a, b) and not torch.equal(a, ref)


def test_guidance_hook_sees_every_prediction():
    seen = []
    sampler = DDIMSampler(NoiseSchedule(), steps=4, t0=300)
    sampler.sample(torch.zeros(1, 3, 4, 4), lambda x, t: x * 0, torch.Generator().manual_seed(0),
                   guide=lambda x0: seen.append(x0) or x0 + 1)
    assert len(seen) == 4


def _unet(**kw):
    torch.manual_seed(0)
    return ConditionalUNet(num_rates=3, **{"channels": (8, 16), "emb_dim": 16, **kw}).eval()


def test_unet_shapes_and_conditioning():
    net = _unet(feature_channels=4)
    assert net.multiple == 8
    x, xb = torch.randn(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    f = torch.randn(2, 4, 4, 6)
    t, r = torch.tensor([10, 10]), torch.tensor([0, 0])
    with torch.no_grad():
        out = net(x, t, xb, r, f)
        assert out.shape == x.shape
        assert not torch.allclose(out, net(x, t, xb, torch.tensor([2, 2]), f)), "rate must condition"
        assert not torch.allclose(out, net(x, t + 300, xb, r, f)), "timestep must condition"
        assert not torch.allclose(out, net(x, t, xb, r, f + 1)), "features must condition"
        assert not torch.allclose(out, net(x, t, xb + 0.1, r, f)), "base reconstruction must condition"
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 3, 12, 16), t[:1], torch.rand(1, 3, 12, 16), r[:1], torch.randn(1, 4, 3, 4))
    with pytest.raises(ValueError, match="features must be given"):
        net(x, t, xb, r, None)


def test_unet_predicts_a_residual_on_the_base_reconstruction():
    net = _unet()
    torch.nn.init.zeros_(net.conv_out.weight)
    torch.nn.init.zeros_(net.conv_out.bias)
    xb = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(torch.randn(1, 3, 16, 16), torch.tensor([5]), xb, torch.tensor([1])), xb)
