"""Weight-free noise schedule and DDIM sampler (diffusers' split: the network knows nothing of this).

CGDM post-processes a decoded image, so sampling does not start from pure noise at ``T``: the base
reconstruction is noised to an intermediate step ``t0 < T`` ("SDEdit"-style start) and a few DDIM
steps bring it back to ``t = 0``. This cuts the number of network evaluations from hundreds to a
handful while the sample keeps the layout of the decoded image.

The denoiser is parameterised to predict the clean image ``x0`` directly (the base reconstruction plus
a residual, see :mod:`cgdm.diffusion.unet`). With an ``x0`` prediction, the consistency guidance of
:mod:`cgdm.consistency` can edit the prediction between steps, and the DDIM update is re-derived from
the edited ``x0``.

Randomness comes only from an explicit :class:`torch.Generator` passed by the caller (the start noise,
and the fresh noise of each step when ``eta > 0``): the same seed gives the same pixels on the same
device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DDIMSampler", "NoiseSchedule", "Sampler", "randn_like", "sampling_timesteps"]


@dataclass(frozen=True)
class NoiseSchedule:
    """Discrete variance-preserving schedule ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

    Args:
        num_train_timesteps: ``T``.
        kind: ``"linear"`` (DDPM betas 1e-4..0.02) or ``"cosine"`` (Nichol & Dhariwal 2021).
    """

    num_train_timesteps: int = 1000
    kind: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"unknown noise schedule {self.kind!r}; use 'linear' or 'cosine'")
        if self.num_train_timesteps < 2:
            raise ValueError("num_train_timesteps must be >= 2")

    def alphas_cumprod(self) -> Tensor:
        """``abar_t`` for t = 0..T-1 as float64 (computed, never stored: the schedule has no state)."""
        T = self.num_train_timesteps
        if self.kind == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float64)
        else:
            s = 0.008
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return torch.cumprod(1.0 - betas, dim=0)

    def coefficients(self, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` for integer step(s) ``t``; t = -1 means the clean image."""
        abar = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod()])
        t = torch.as_tensor(t, dtype=torch.long) + 1
        a = abar[t]
        return a.sqrt(), (1 - a).sqrt()

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """Forward process: noise ``x0`` to step ``t`` (scalar or one step per batch item)."""
        a, s = self.coefficients(t)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = a.to(x0.dtype).to(x0.device).reshape(shape)
        s = s.to(x0.dtype).to(x0.device).reshape(shape)
        return a * x0 + s * noise


def sampling_timesteps(t0: int, steps: int) -> list[int]:
    """The ``steps`` timesteps visited from ``t0`` down (evenly spaced, ``t0`` first, all >= 0).

    After the last one the sampler jumps to the clean image (t = -1).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if t0 < steps - 1:
        raise ValueError(f"t0={t0} is too small for {steps} distinct steps; use t0 >= steps - 1")
    ts = torch.linspace(t0, 0, steps + 1)[:-1] if steps > 1 else torch.tensor([float(t0)])
    return [round(float(t)) for t in ts]


class Sampler:
    """The sampling loop, one algorithm for both samplers (:class:`DDIMSampler` below and
    :class:`~cgdm.diffusion.resshift.ResShiftSampler`); they differ only in what a subclass gives:

    * ``timesteps``: the training steps visited, from the start down (the clean image, ``t = -1``, follows);
    * ``start(x_base, noise)``: the first network input, from the base reconstruction and standard noise;
    * ``step(x_t, x0_pred, t, t_prev, noise)``: ``x_t -> x_{t_prev}`` given the (guided) prediction;
    * ``stochastic``: whether a step takes fresh noise.
    """

    timesteps: list[int]

    def __init__(self, schedule, t0: int, eta: float):
        """The checks both samplers share: the start is a trained step, the noise scale is not negative."""
        T = schedule.num_train_timesteps
        if not 0 <= t0 < T:
            raise ValueError(f"t0 must be in [0, {T - 1}] for this decoder (trained with {T} steps), got {t0}")
        if eta < 0:
            raise ValueError("eta must be >= 0")
        self.schedule = schedule
        self.t0 = t0
        self.eta = float(eta)

    def sample(
        self,
        x_base: Tensor,
        predict_x0: Callable[[Tensor, int], Tensor],
        generator: torch.Generator,
        guide: Callable[[Tensor], Tensor] | None = None,
        progress: bool = False,
        trace: list[Tensor] | None = None,
    ) -> Tensor:
        """Run the sampler on a whole tensor: from its start, at each of ``timesteps`` predict ``x0``, guide
        it, and step to the next step (to the clean image after the last), with fresh noise when
        ``stochastic`` (none after the last step).

        Args:
            x_base: base reconstruction in the denoiser's value range, (B, C, H, W).
            predict_x0: ``(x_t, t) -> x0`` (the denoiser, possibly patch-wise).
            generator: seeded generator on ``x_base.device``; all noise is drawn from it, in order.
            guide: optional ``x0 -> x0`` applied to every prediction (consistency guidance); it may modify
                the prediction in place.
            progress: show a progress bar over the steps.
            trace: if given, every network input ``x_t`` is appended to it (tests compare them with the
                training marginals).
        """
        x = self.start(x_base, randn_like(x_base, generator))
        ts = self.timesteps + [-1]
        it = range(len(self.timesteps))
        if progress:
            from tqdm.auto import tqdm  # lazy: only decodes with a progress bar need it

            it = tqdm(it, desc="diffusion", leave=False)
        for i in it:
            t, t_prev = ts[i], ts[i + 1]
            if trace is not None:
                trace.append(x.clone())
            x0 = predict_x0(x, t)
            if guide is not None:
                x0 = guide(x0)
            fresh = randn_like(x, generator) if self.stochastic and t_prev >= 0 else None
            x = self.step(x, x0, t, t_prev, fresh)
        return x


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021) from a noised start, with an ``x0`` hook for guidance.

    Args:
        schedule: the noise schedule the denoiser was trained with.
        steps: number of denoiser evaluations.
        t0: start step (``0 <= t0 < T``); smaller keeps more of the base reconstruction.
        eta: 0 = deterministic DDIM given the start noise; 1 = DDPM-like fresh noise each step.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int = 4, t0: int = 250, eta: float = 0.0):
        super().__init__(schedule, t0, eta)
        self.steps = steps
        self.timesteps = sampling_timesteps(t0, steps)

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def start(self, x_base: Tensor, noise: Tensor) -> Tensor:
        """Noised base reconstruction at ``t0``, ``sqrt(abar) x_base + sqrt(1 - abar) noise``: the sampler's
        starting point. Built in the buffer of ``noise``, which it overwrites (8 MP images)."""
        a, s = (float(v) for v in self.schedule.coefficients(self.t0))
        return noise.mul_(s).add_(x_base, alpha=a)

    def step(self, x_t: Tensor, x0_pred: Tensor, t: int, t_prev: int, noise: Tensor | None = None) -> Tensor:
        """One DDIM update ``x_t -> x_{t_prev}`` given the (possibly guided) prediction ``x0_pred``.

        ``noise`` is needed only when ``eta > 0``; it must have the shape of ``x_t``.
        """
        a_t, s_t = (float(v) for v in self.schedule.coefficients(t))
        a_p, s_p = (float(v) for v in self.schedule.coefficients(t_prev))
        if t_prev < 0:
            return x0_pred
        sigma = 0.0
        if self.eta > 0:
            # DDIM eq. (16): sigma^2 = eta^2 (1 - abar_p)/(1 - abar_t) (1 - abar_t/abar_p)
            sigma = self.eta * math.sqrt(max((s_p**2 / s_t**2) * (1 - a_t**2 / a_p**2), 0.0))
            if noise is None:
                raise ValueError("eta > 0 needs fresh noise for each step")
        # x_prev = a_p x0 + sqrt(s_p^2 - sigma^2) eps + sigma z with eps = (x_t - a_t x0) / s_t, computed
        # in place: one image-sized allocation per step (this runs on whole 8 MP images)
        eps = torch.sub(x_t, x0_pred, alpha=a_t).div_(max(s_t, 1e-8))
        x_prev = eps.mul_(math.sqrt(max(s_p**2 - sigma**2, 0.0))).add_(x0_pred, alpha=a_p)
        if sigma > 0:
            x_prev.add_(noise, alpha=sigma)
        return x_prev


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator`` (on the generator's device)."""
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
