"""Continuous online optimisation at encode time (``cgdm compress --online-steps N``).

The encoder's amortised analysis transform gives a good but not optimal latent for a given image. Here
the encoder refines, for this one image, the continuous latent ``y`` (after the rate gain) and the
neural-syntax vector ``s`` by gradient steps on the rate-distortion objective

    J = bits / pixels + lambda * 255^2 * MSE(decoder output, x)

through the differentiable decoder path, then entropy-codes the refined values with the unchanged
entropy models. The decoder (and its weights) stay exactly as they are, so any CGDM decoder reads the
file; only the ``ONLINE`` header flag records that the mode was used.

* Quantisation is relaxed as in the base codec's training: additive uniform noise for the rate terms,
  straight-through rounding for what the decoder sees.
* The "decoder output" is a differentiable surrogate of what the diffusion decoder returns: its ``x0``
  prediction at the sampler's first step, from the exact start a decode of the file will use (residual
  shifting: ``y + kappa eps`` with ``eps`` the first draw of the decode seed's generator, so the objective
  is not noisy), conditioned as at decode (consistency features, rate, syntax). The later sampler steps
  and the tiling are not differentiated through (a few more network calls each, on the whole image).
  Decoders of the older DDIM formulation (whose start is not their training input) fall back to the
  consistency reconstruction ``x_c``, or the base reconstruction without a consistency branch.
* The exact objective (hard rounding, as the decoder will see it) is evaluated after every step and the
  best iterate is kept, so the result is never worse than the amortised encoding.
* The relaxation's noise comes from torch's generator seeded with ``seed`` inside a forked random state:
  one image, one seed, one file, in any process, and the caller's random state is left as it was.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from compressai.ops import quantize_ste
from torch import Tensor
from tqdm.auto import tqdm

from cgdm.diffusion.resshift import ResShiftSchedule
from cgdm.diffusion.scheduler import randn_like
from cgdm.sampling_options import SamplingOptions
from cgdm.syntax import code_vector
from cgdm.tensors import pad_to

__all__ = ["online_compress", "rd_objective"]

log = logging.getLogger(__name__)


def _decoder_output(model, x_hat: Tensor, features: Tensor, syntax: Tensor, rate: Tensor,
                    options: SamplingOptions, sff: Tensor | None = None) -> Tensor:
    """Differentiable surrogate of the decoder's output in [0, 1] (see the module docstring)."""
    dec = model.decoder
    H, W = x_hat.shape[-2:]
    m, s = dec.multiple, dec.config.feature_stride
    Hp, Wp = -(-H // m) * m, -(-W // m) * m
    xb = pad_to(x_hat * 2 - 1, Hp, Wp)
    feats, x_c = dec.condition(pad_to(features, Hp // s, Wp // s), xb)
    if isinstance(dec.schedule, ResShiftSchedule):
        sampler = dec.sampler(options.steps, options.t0, options.eta)
        # the decode's start noise: the first draw of its seeded generator, for the whole padded image
        # (cgdm.boundary draws it once, globally); a constant here, so no gradient flows into it
        gen = torch.Generator(device=xb.device).manual_seed(options.seed)
        x_t = sampler.start(xb, randn_like(xb, gen))
        out = dec(x_t, sampler.timesteps[0], xb, rate, feats, dec.fusion_syntax(syntax, sff))
    elif x_c is not None:
        out = x_c
    else:
        return x_hat
    return (out[..., :H, :W] + 1) / 2


def rd_objective(model, x: Tensor, y_g: Tensor, s: Tensor, rate: Tensor, lmbda: float,
                 relaxed: bool, options: SamplingOptions | None = None, sff: Tensor | None = None
                 ) -> dict[str, Tensor]:
    """Rate-distortion objective of a candidate ``(y_g, s)`` for image ``x`` (1, 3, H, W) in [0, 1].

    ``relaxed=True``: noise for the rates and straight-through rounding (differentiable);
    ``relaxed=False``: the values the decoder will actually get. ``options``: the decoding settings the
    file will carry (default: the model's), which fix the decoder's start noise. ``sff``: the SFF stream's
    vector for decoders that have one (held fixed: its bits do not depend on ``y_g``; see :func:`online_compress`).
    """
    base = model.base
    H, W = x.shape[-2:]
    z = base.h_a(y_g) * base._gain(base.log_hyper_gain, rate)
    z_hat, z_lik = base.entropy_bottleneck(z, training=relaxed)
    scales, means = base.h_s(z_hat * base._gain(base.log_hyper_inv_gain, rate)).chunk(2, 1)
    _, y_lik = base.gaussian_conditional(y_g, scales, means=means, training=relaxed)
    y_hat = quantize_ste(y_g - means) + means
    s_hat, s_lik = code_vector(base.syntax.entropy_bottleneck, s, relaxed)
    x_hat, features = base._synthesize(y_hat * base._gain(base.log_inv_gain, rate), s_hat, (H, W))
    out = _decoder_output(model, x_hat, features, s_hat, rate, options or model.options, sff)
    bits = sum((-torch.log2(lik)).sum() for lik in (y_lik, z_lik, s_lik))
    bpp = bits / (H * W)
    mse = F.mse_loss(out.clamp(0, 1) if not relaxed else out, x)
    return {"loss": bpp + lmbda * 255**2 * mse, "bpp": bpp, "mse": mse}


def online_compress(model, x: Tensor, rate_idx: int, steps: int, lr: float = 0.05, lmbda: float | None = None,
                    progress: bool = False, seed: int = 0, options: SamplingOptions | None = None) -> dict:
    """Refine ``y`` and ``s`` for ``x`` (1, 3, H, W) in [0, 1] by ``steps`` Adam steps and entropy-code them.

    Args:
        model: a :class:`cgdm.model.CGDM`.
        lmbda: RD trade-off; default: the training lambda of ``rate_idx`` (``model.lambdas``).
        options: the decoding settings the file will carry (default: the model's).

    Returns ``{"compressed": <BaseCodec.compress-style dict>, "objective": [exact J per step, J0 first],
    "initial": {"loss", "bpp", "mse"} of the amortised encoding, "final": the same for the kept iterate}``.
    """
    base = model.base
    if lmbda is None:
        lambdas = getattr(model, "lambdas", None)
        if not lambdas:
            raise ValueError("online mode needs the RD trade-off: pass lmbda=..., or use a base checkpoint whose "
                             "meta records its training lambdas")
        lmbda = float(lambdas[rate_idx])
    rate = torch.tensor([int(rate_idx)], device=x.device)
    with torch.no_grad():
        y = base.g_a(base._pad(x))
        y_g0 = y * base._gain(base.log_gain, rate)
        s0 = base.syntax.analyse(y)
        # the SFF stream is coded after this optimisation, from the final base reconstruction
        # (CGDM.compress); the objective holds it at its value for the amortised reconstruction
        sff = None if model.decoder.sff_stream is None else model.sff_vector(x, base(x, rate)["x_hat"])
    y_g = y_g0.clone().requires_grad_(True)
    s = s0.clone().requires_grad_(True)
    opt = torch.optim.Adam([y_g, s], lr=lr)

    def exact() -> dict[str, float]:
        with torch.no_grad():
            j = rd_objective(model, x, y_g, s, rate, lmbda, relaxed=False, options=options, sff=sff)
            return {k: float(v) for k, v in j.items()}

    # CompressAI's entropy models draw their training noise from the global generator: fork and seed it
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(int(seed))
        first = exact()
        history = [first["loss"]]
        best = (first, y_g0, s0)
        it = range(steps)
        if progress:
            it = tqdm(it, desc="online", leave=False)
        for _ in it:
            opt.zero_grad(set_to_none=True)
            rd_objective(model, x, y_g, s, rate, lmbda, relaxed=True, options=options, sff=sff)["loss"].backward()
            opt.step()
            j = exact()
            history.append(j["loss"])
            if j["loss"] < best[0]["loss"]:
                best = (j, y_g.detach().clone(), s.detach().clone())
    log.info("online optimisation: J %.5f -> %.5f in %d steps", history[0], best[0]["loss"], steps)
    return {"compressed": base.compress_latents(best[1], best[2], rate, tuple(x.shape[-2:])),
            "objective": history, "initial": first, "final": best[0]}


