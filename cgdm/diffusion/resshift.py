"""Residual-shifting diffusion between the decoded image and the original (ResShift, Yue et al. 2023).

Why not the DDIM start of :mod:`cgdm.diffusion.scheduler`: a variance-preserving model trained on
noised *originals* is sampled from a noised *base reconstruction*, an input it never saw in training.
Here the forward process moves the clean image ``x0`` towards the decoded image ``y`` while adding noise::

    x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) eps,     eta_0 < ... < eta_{T-1} = 1

so the last step is exactly ``y + kappa eps``: what the sampler starts from is what training noised to
``t = T - 1``, and every later input comes from the same Gaussian posterior the training marginals
imply. Training and sampling are one process (checked numerically in tests/test_resshift.py).

Sampling takes the posterior ``q(x_s | x_t, x0)`` with the network's ``x0`` prediction::

    mean = (eta_s / eta_t) x_t + (1 - eta_s / eta_t) x0
    var  = kappa^2 eta_s (eta_t - eta_s) / eta_t

for any ``s < t`` of the training steps (so fewer sampling steps than ``T`` are allowed), and returns the
prediction at the last step. Its own noise (``kappa``) makes decoding stochastic; all of it comes from
the caller's seeded :class:`torch.Generator`, so one file and one seed give one image.

The sampling loop is the one of :class:`~cgdm.diffusion.scheduler.DDIMSampler`
(:class:`~cgdm.diffusion.scheduler.Sampler`: ``sample(x_base, predict_x0, generator, guide)``); this
sampler gives its own start and step. So globally uniform tiling (:mod:`cgdm.boundary`) and consistency
guidance work on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cgdm.diffusion.scheduler import Sampler

__all__ = ["ResShiftSampler", "ResShiftSchedule"]


@dataclass(frozen=True)
class ResShiftSchedule:
    """Shift schedule ``eta_t``, t = 0..T-1, with ``eta_{T-1} = 1``.

    Args:
        num_train_timesteps: ``T`` (few: 4 in the quick profile; the sampler may visit a subset).
        kappa: noise scale in the diffusion range [-1, 1]: the start is ``y + kappa eps``.
        eta_min: ``eta_0``, the smallest shift (``x_0`` noise std ``kappa sqrt(eta_min)``).
        power: ResShift's ``p``: ``sqrt(eta_t)`` is geometric in ``(t / (T - 1))^p (T - 1)``.
    """

    num_train_timesteps: int = 4
    kappa: float = 0.2
    eta_min: float = 0.04**2
    power: float = 0.3

    def __post_init__(self):
        if self.num_train_timesteps < 1:
            raise ValueError("num_train_timesteps must be >= 1")
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")
        if not 0 < self.eta_min <= 1:
            raise ValueError(f"eta_min must be in (0, 1], got {self.eta_min}")

    def etas(self) -> Tensor:
        """``eta_t`` for t = 0..T-1 as float64 (computed, never stored: the schedule has no state)."""
        T = self.num_train_timesteps
        if T == 1:
            return torch.ones(1, dtype=torch.float64)
        # 1. geometric in sqrt(eta) (ResShift eq. 10), ending exactly at 1 so that the start y + kappa eps
        #    is the training marginal at T - 1, not an approximation of it
        beta = (torch.arange(T, dtype=torch.float64) / (T - 1)) ** self.power * (T - 1)
        b0 = math.exp(math.log(1.0 / self.eta_min) / (2 * (T - 1)))
        return (math.sqrt(self.eta_min) * b0**beta) ** 2

    def add_noise(self, x0: Tensor, y: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """Training input at step(s) ``t``: ``x0 + eta_t (y - x0) + kappa sqrt(eta_t) noise``."""
        eta = self.etas()[torch.as_tensor(t, dtype=torch.long)]
        shape = (-1,) + (1,) * (x0.dim() - 1)
        eta = eta.to(x0.dtype).to(x0.device).reshape(shape)
        return x0 + eta * (y - x0) + self.kappa * eta.sqrt() * noise


class ResShiftSampler(Sampler):
    """Posterior sampling from ``y + kappa eps`` down to ``x0`` in ``steps`` network evaluations.

    Args:
        schedule: the schedule the denoiser was trained with.
        steps: network evaluations (<= T); the visited steps are evenly spread from ``t0`` to 0.
        t0: start step; ``T - 1`` (the default) is the exact start. A smaller ``t0`` starts from
            ``y + kappa sqrt(eta_t0) eps``, which drops the ``(1 - eta_t0)(y - x0)`` term of the true
            marginal: less freedom for the sampler, an approximation, allowed because the
            distortion-perception sweep may want it.
        eta: scale of the posterior noise at each step (1 = the true posterior, 0 = its mean only); the
            start noise is always drawn.
    """

    def __init__(self, schedule: ResShiftSchedule, steps: int | None = None, t0: int | None = None,
                 eta: float = 1.0):
        t0 = schedule.num_train_timesteps - 1 if t0 is None else int(t0)
        steps = t0 + 1 if steps is None else int(steps)
        super().__init__(schedule, t0, eta)
        self.steps = steps
        if not 1 <= steps <= t0 + 1:
            raise ValueError(f"steps must be in 1..t0 + 1 = {t0 + 1} (each visits a distinct trained step), "
                             f"got {steps}")
        # evenly spread from t0 down to 0 inclusive: the last network call sees the least noisy input
        self.timesteps = [t0] if steps == 1 else [round(t0 * (1 - i / (steps - 1))) for i in range(steps)]
        self._etas = [float(v) for v in schedule.etas()]

    @property
    def stochastic(self) -> bool:
        return self.eta > 0 and self.schedule.kappa > 0

    def start(self, x_base: Tensor, noise: Tensor) -> Tensor:
        """``y + kappa sqrt(eta_t0) noise``: the sampler's starting point."""
        return x_base + self.schedule.kappa * math.sqrt(self._etas[self.t0]) * noise

    def step(self, x_t: Tensor, x0_pred: Tensor, t: int, t_prev: int, noise: Tensor | None = None) -> Tensor:
        """One posterior step ``x_t -> x_{t_prev}`` given the (possibly guided) ``x0_pred``; ``t_prev < 0``
        returns the prediction. ``x_t`` is overwritten (it becomes ``x_{t_prev}``)."""
        if t_prev < 0:
            return x0_pred
        e_t, e_s = self._etas[t], self._etas[t_prev]
        ratio = e_s / e_t
        # 2. in place on x_t, which the sampler owns and no longer needs (same values as out of place): one
        #    image-sized buffer less at the peak, 0.4 GB at 7680x4320
        x_prev = x_t.mul_(ratio).add_(x0_pred, alpha=1.0 - ratio)
        std = self.eta * self.schedule.kappa * math.sqrt(max(e_s * (e_t - e_s) / e_t, 0.0))
        if std > 0:
            if noise is None:
                raise ValueError("a stochastic step needs fresh noise")
            x_prev.add_(noise, alpha=std)
        return x_prev
