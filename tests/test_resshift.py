"""Residual-shifting diffusion (cgdm.diffusion.resshift): the sampler feeds the network exactly the
inputs training draws, step by step (issue 13: train and sample the same process)."""

import pytest
import torch

from cgdm.diffusion.resshift import ResShiftSampler, ResShiftSchedule
from cgdm.diffusion.scheduler import DDIMSampler, NoiseSchedule

from helpers.diffusion import tiny_decoder


def _pair(seed=0, shape=(1, 3, 96, 96)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    y = (x0 + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1)  # a "decoded" image off the original
    return x0, y


def test_schedule_ends_at_the_decoded_image():
    s = ResShiftSchedule(num_train_timesteps=4, kappa=0.2)
    etas = s.etas()
    assert etas[-1] == pytest.approx(1.0) and etas[0] == pytest.approx(s.eta_min)
    assert torch.all(etas[1:] > etas[:-1])
    x0, y = _pair()
    # at T-1 the training input is y + kappa eps, exactly the sampler's start
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(s.add_noise(x0, y, eps, 3), y + 0.2 * eps, atol=1e-6)
    with pytest.raises(ValueError):
        ResShiftSchedule(kappa=-1)


@pytest.mark.parametrize("steps", [4, 2])
def test_sampler_inputs_follow_the_training_marginals(steps):
    """With an oracle denoiser (returns the true x0), every input the sampler gives the network at step t
    must be distributed as the training input at t: mean x0 + eta_t (y - x0), std kappa sqrt(eta_t),
    independent per pixel. Checked on 3 x 96 x 96 pixels x 8 seeds per step; this would fail for a
    sampler that started from a noised base image under a schedule trained on noised originals."""
    sched = ResShiftSchedule(num_train_timesteps=4, kappa=0.5)
    sampler = ResShiftSampler(sched, steps=steps)
    x0, y = _pair()
    etas = sched.etas().float()
    by_step: dict[int, list[torch.Tensor]] = {}
    for seed in range(8):
        trace: list[torch.Tensor] = []
        out = sampler.sample(y, lambda x, t: x0.clone(), torch.Generator().manual_seed(seed), trace=trace)
        assert torch.equal(out, x0)  # the last step returns the prediction
        for t, x_t in zip(sampler.timesteps, trace, strict=True):
            by_step.setdefault(t, []).append(x_t)
    assert sorted(by_step, reverse=True) == sampler.timesteps
    g = torch.Generator().manual_seed(99)
    for t, xs in by_step.items():
        mean, std = x0 + etas[t] * (y - x0), 0.5 * etas[t].sqrt()
        z = (torch.cat(xs) - mean) / std  # standardised sampler inputs
        assert abs(float(z.mean())) < 0.02 and float(z.std()) == pytest.approx(1.0, abs=0.02)
        # the same statistics for inputs drawn the training way
        train = sched.add_noise(x0.expand(8, -1, -1, -1), y.expand(8, -1, -1, -1),
                                torch.randn((8, *x0.shape[1:]), generator=g), t)
        zt = (train - mean) / std
        assert abs(float(z.std()) - float(zt.std())) < 0.03
        # pixels are independent: the correlation of neighbours is ~0 (a deterministic step would not be)
        corr = float((z[..., 1:] * z[..., :-1]).mean())
        assert abs(corr) < 0.03


def test_ddim_start_is_not_its_training_input():
    """Why the formulation changed: DDIM trains on sqrt(abar) x0 + noise but starts sampling from
    sqrt(abar) y + noise; the mean of the first network input is off by sqrt(abar_t0) (y - x0)."""
    x0, y = _pair()
    sched = NoiseSchedule()
    sampler = DDIMSampler(sched, steps=4, t0=250)
    start = sampler.start(y, torch.zeros_like(y))
    trained = sched.add_noise(x0, torch.zeros_like(x0), 250)
    assert float((start - trained).abs().mean()) > 0.1


def test_eta_zero_is_deterministic_after_the_start_and_seeds_reproduce():
    sched = ResShiftSchedule(num_train_timesteps=4, kappa=0.3)
    x0, y = _pair()

    def pred(x, t):
        return 0.5 * (x + x0)  # depends on the input, so the noise path matters

    def run(seed, eta):
        return ResShiftSampler(sched, eta=eta).sample(y, pred, torch.Generator().manual_seed(seed))

    assert torch.equal(run(3, 1.0), run(3, 1.0))
    assert not torch.equal(run(3, 1.0), run(4, 1.0))
    assert not torch.equal(run(3, 1.0), run(3, 0.0))
    # eta = 0: only the start noise is random; the steps add none
    trace: list[torch.Tensor] = []
    ResShiftSampler(sched, eta=0.0).sample(y, pred, torch.Generator().manual_seed(3), trace=trace)
    g = torch.Generator().manual_seed(3)
    x = y + 0.3 * torch.randn(y.shape, generator=g)
    assert torch.allclose(trace[0], x)


def test_sampler_rejects_settings_the_decoder_was_not_trained_for():
    sched = ResShiftSchedule(num_train_timesteps=4)
    for bad in ({"t0": 4}, {"t0": -1}, {"steps": 5}, {"t0": 1, "steps": 3}, {"eta": -0.1}):
        with pytest.raises(ValueError):
            ResShiftSampler(sched, **bad)
    assert ResShiftSampler(sched).timesteps == [3, 2, 1, 0]
    assert ResShiftSampler(sched, steps=2).timesteps == [3, 0]
    assert ResShiftSampler(sched, steps=1, t0=2).timesteps == [2]


def test_decoder_training_input_is_the_samplers():
    dec = tiny_decoder()
    x0, y = _pair(shape=(2, 3, 32, 32))
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 1])
    assert torch.allclose(dec.training_input(x0, y, eps, t), dec.schedule.add_noise(x0, y, eps, t))
    # the old formulation is kept for old checkpoints
    old = tiny_decoder(formulation="ddim", num_train_timesteps=1000)
    assert torch.allclose(old.training_input(x0, y, eps, 5), old.schedule.add_noise(x0, eps, 5))
