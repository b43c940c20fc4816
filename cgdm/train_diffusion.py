"""Training of the CGDM diffusion decoder (the workflow's ``stage: decoder`` trainer).

The base codec (``requires["base"]``) is frozen and run in eval mode, so the decoder trains on exactly
the reconstructions, features and syntax vectors it gets at decode time. Per step, for a batch of random
crops with a random rate index each:

* ``y, features, syntax = base(x, r)`` (no gradient);
* consistency branch (unless ``no_consistency``): ``features_c, x_c = branch(features, y)``,
  loss ``consistency_weight * MSE(x_c, x)``;
* diffusion (``formulation: resshift``, :mod:`cgdm.diffusion.resshift`): ``t ~ U{0..T-1}``,
  ``x_t = x + eta_t (y - x) + kappa sqrt(eta_t) eps``, exactly the inputs the sampler feeds the network;
  ``x0 = unet(x_t, t, y, r, features_c, syntax)``, loss ``MSE(x0, x)``;
* deviation bound (unless ``no_consistency``): ``deviation_weight * deviation_loss(x0, x_c)``
  (:func:`cgdm.consistency.deviation_loss`);
* SFF stream (``sff_stream_dim > 0``, full SFF only; :class:`cgdm.fusion.SFFStream`): the stream's vector
  for ``(x, y)`` steers the fusion in the ``x0`` prediction above, and its bits are priced as the base codec
  prices its own: ``4 / (255^2 lambda_r) * bits / pixels`` (lambda_r the base codec's training lambda of the
  sample's rate point; 4 because the diffusion range [-1, 1] quadruples the MSE). Its entropy model's
  quantiles are trained by CompressAI's auxiliary loss with their own optimiser;
* perceptual terms (``perceptual``): ``adversarial`` = non-saturating loss of a conditional patch
  discriminator (:mod:`cgdm.discriminator`, trained alternately, needs no weights); ``lpips`` = LPIPS-VGG
  (VGG, so that AlexNet LPIPS stays an unbiased test metric), which needs its weights in the cache.
  ``auto`` = adversarial, plus LPIPS-VGG when its weights are there; naming ``lpips`` without the weights
  is an error that says how to fetch them. The checkpoint's meta records the losses used.

The optimiser follows a cosine learning-rate decay; an exponential moving average of the decoder's
weights (``ema_decay``) is what the checkpoint stores.

``formulation: ddim`` keeps the older variance-preserving training (noised originals, ``t < t_max``) for
comparison; its sampler starts from the noised base reconstruction, an input it never trained on.

Variants (``params["variant"]``): ``full``, ``no_consistency`` (no branch, no consistency and deviation
losses), ``no_sff`` (fixed fusion). ``no_boundary`` only changes decoding and trains like ``full``.

Determinism and resume follow :mod:`cgdm.train`: crops, rates, timesteps and noise come from one seeded
generator; ``<out>.state`` is written every ``checkpoint_every`` steps (decoder, discriminator, EMA,
optimizers, generator) and a rerun with the same params continues from it; the final checkpoint is
written atomically by :func:`cgdm.zoo.save_checkpoint` and the state file removed.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cgdm import weights as W
from cgdm.consistency import deviation_loss
from cgdm.crops import RandomCrops
from cgdm.diffusion_decoder import DECODER_ARCH, CGDMDecoder, DecoderConfig
from cgdm.discriminator import PatchDiscriminator, discriminator_loss, generator_loss
from cgdm.hashing import config_hash
from cgdm.model import base_lambdas, load_base
from cgdm.training import rd_optimizers, restore_rng_states, rng_states, set_lr
from cgdm.variants import Variant
from cgdm.weights import DownloadBlocked, no_downloads, torch_home
from cgdm.zoo import atomic_torch_save, load_training_state, save_checkpoint

__all__ = ["DEFAULT_PARAMS", "PAPER_PARAMS", "PERCEPTUAL", "decoder_config", "train_decoder", "uses_lpips"]

log = logging.getLogger(__name__)

#: quick profile: ~3 minutes per variant on 2 CPU cores
DEFAULT_PARAMS: dict = {
    "variant": "full",
    # architecture (DecoderConfig)
    "channels": [32, 64, 96],
    "unshuffle": 4,
    "emb_dim": 128,
    "consistency_channels": 32,
    "consistency_hidden": 64,
    "consistency_blocks": 2,
    "formulation": "resshift",
    "num_train_timesteps": 4,
    "kappa": 0.2,
    "refine_channels": 0,  # full-resolution output head; hurt PSNR and SWD in 600-step CPU runs (benchmark)
    # SFF stream length (cgdm.fusion.SFFStream); 0 = none, the fusion reads the base syntax alone. Off by
    # default: in 1,200-step CPU runs the stream collapsed to a constant and changed nothing measurable
    # (benchmarks/results/sff_stream.json)
    "sff_stream_dim": 0,
    "schedule": "linear",  # ddim only
    "t_max": 500,  # ddim only: highest training step
    # losses
    "consistency_weight": 1.0,
    "deviation_weight": 1.0,
    "bound": 0.02,
    "factor": None,  # block size of the deviation bound; None = 2 * unshuffle, as sampling guidance uses
    "perceptual": "auto",  # see PERCEPTUAL
    "adversarial_weight": 0.005,
    "adversarial_start": 0.25,  # fraction of steps trained without the adversarial term (a usable x0 first)
    "lpips_weight": 0.1,
    "disc_channels": 32,
    # optimisation
    "steps": 1200,
    "batch_size": 8,
    "patch_size": 128,
    "lr": 4e-4,
    "lr_final": 0.1,  # cosine decay to this fraction of lr
    "aux_lr": 1e-3,  # the SFF stream's entropy-model quantiles (CompressAI's auxiliary optimiser)
    # pixels the SFF stream's bits are spread over in its rate term; None = the training crop's. The stream
    # codes one vector per image, so at decode its bits are spread over the whole image
    "sff_rate_pixels": None,
    "ema_decay": 0.995,
    "clip_max_norm": 1.0,
    "seed": 0,
    "checkpoint_every": 100,
    "threads": None,
}

#: paper-size decoder (for a GPU): wider U-Net at 1/2 resolution, more steps
PAPER_PARAMS: dict = {**DEFAULT_PARAMS, "channels": [64, 128, 256], "unshuffle": 2, "emb_dim": 256,
                      "consistency_channels": 64, "consistency_hidden": 128, "consistency_blocks": 4,
                      "steps": 100_000, "batch_size": 16, "patch_size": 256, "lr": 2e-4}

_RESUMABLE_KEYS = {"steps", "checkpoint_every", "threads"}
_ARCH_KEYS = ("channels", "unshuffle", "emb_dim", "consistency_channels", "consistency_hidden",
              "consistency_blocks", "formulation", "schedule", "num_train_timesteps", "kappa", "refine_channels",
              "sff_stream_dim")

#: ``perceptual`` settings -> perceptual losses (``auto`` adds LPIPS-VGG only when its weights are cached)
PERCEPTUAL = {"none": (), "adversarial": ("adversarial",), "lpips": ("lpips",),
              "adversarial+lpips": ("adversarial", "lpips"), "auto": ("adversarial",)}


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def decoder_config(params: dict, base) -> DecoderConfig:
    """Decoder architecture for ``base`` from training params."""
    v = Variant.from_name(params["variant"])
    if not v.boundary:
        v = Variant(v.consistency, v.sff)  # no_boundary is a decode option: train the full decoder
    return DecoderConfig(num_rates=base.num_rates, feature_channels=base.N, syntax_dim=base.syntax_dim,
                         consistency=v.consistency, sff=v.sff,
                         **{k: (tuple(params[k]) if k == "channels" else params[k]) for k in _ARCH_KEYS})


def _base_checkpoint(requires: dict | None):
    """The frozen base codec's checkpoint: ``requires["base"]``, or the only required model (the workflow
    passes required models by their config name, e.g. ``requires: [cgdm_base]``)."""
    requires = dict(requires or {})
    if "base" in requires:
        return requires["base"]
    if len(requires) == 1:
        return next(iter(requires.values()))
    raise ValueError("the decoder stage needs exactly one base codec checkpoint: in the workflow config set "
                     f"`requires: [<base model name>]` (got {sorted(requires) or 'none'})")


def uses_lpips(params: dict) -> bool:
    """Whether training with ``params`` adds LPIPS-VGG (``auto``: only when its weights are cached). The
    workflow's state-file dependency (cgdm.availability) asks the same question."""
    p = {**DEFAULT_PARAMS, **params}
    wanted = p["perceptual"] == "auto" or "lpips" in PERCEPTUAL.get(p["perceptual"], ())
    return wanted and float(p["lpips_weight"] or 0) > 0


def _lpips_loss(device: torch.device, required: bool):
    """pyiqa LPIPS-VGG as a loss when its weights are cached (never downloaded here). Missing weights:
    ``required`` (``perceptual`` names lpips) -> ValueError naming the fix; else None (``auto``)."""
    cache = W.default_cache()
    ok, reason = W.status("lpips-vgg", cache)
    if not ok:
        if required:
            raise ValueError(f"perceptual loss lpips is configured but {reason}; or set perceptual: adversarial")
        log.info("perceptual: auto without LPIPS-VGG (%s)", reason)
        return None
    import pyiqa  # lazy: pyiqa is slow to import and only this loss needs it

    try:
        with torch_home(cache), no_downloads():
            return pyiqa.create_metric("lpips-vgg", as_loss=True, device=device,
                                       pretrained_model_path=str(W.WEIGHTS["lpips_vgg_v0.1"].path(cache)))
    except DownloadBlocked as exc:
        if required:
            raise ValueError(f"perceptual loss lpips is configured but its weights are incomplete ({exc}); "
                             f"{W.fetch_hint(cache)}") from exc
        log.info("perceptual: auto without LPIPS-VGG (%s)", exc)
        return None


def train_decoder(params: dict, train_images: list[Path], out: str | os.PathLike, requires: dict | None = None,
                  device: str = "cpu", *, resume: bool = True, on_step: Callable[[int], None] | None = None,
                  progress: bool = True) -> Path:
    """Train the diffusion decoder on a frozen base codec and write the checkpoint ``out``.

    ``requires``: ``{"base": checkpoint}`` or ``{<base model name>: checkpoint}`` (base codec checkpoint or
    zoo name). ``resume``: continue from
    ``<out>.state`` if it exists and was made with the same params (except steps / checkpoint_every /
    threads). ``on_step(step)`` is called after every step (tests simulate a kill with it).
    """
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown decoder training params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **params}
    base_path = _base_checkpoint(requires)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    device = torch.device(device)
    if p["formulation"] == "ddim" and not 0 < int(p["t_max"]) <= int(p["num_train_timesteps"]):
        raise ValueError(f"t_max must be in 1..num_train_timesteps, got {p['t_max']}")
    if p["perceptual"] not in PERCEPTUAL:
        raise ValueError(f"unknown perceptual setting {p['perceptual']!r}; use one of {sorted(PERCEPTUAL)}")
    wanted = PERCEPTUAL[p["perceptual"]]

    base, base_meta = load_base(base_path, str(device))
    base.requires_grad_(False)
    phash = config_hash({**{k: v for k, v in p.items() if k not in _RESUMABLE_KEYS},
                         "base": base_meta.get("weights_sha256")})

    data = RandomCrops([Path(f) for f in train_images], int(p["patch_size"]))
    torch.manual_seed(int(p["seed"]))
    config = decoder_config(p, base)
    decoder = CGDMDecoder(config).to(device).train()
    m = decoder.multiple
    if int(p["patch_size"]) % m:
        raise ValueError(f"patch_size must be a multiple of {m} for this decoder, got {p['patch_size']}")
    factor = int(p["factor"] or 2 * config.unshuffle)
    if int(p["patch_size"]) % factor:
        raise ValueError(f"patch_size must be a multiple of the deviation block size {factor}")
    # LPIPS is checked before any training step: a configured loss that cannot run stops the job now
    lpips = _lpips_loss(device, required="lpips" in wanted) if uses_lpips(p) else None
    disc = d_opt = None
    if "adversarial" in wanted and float(p["adversarial_weight"]) > 0:
        disc = PatchDiscriminator(int(p["disc_channels"])).to(device).train()
        # beta1 0.5: the usual GAN setting; the critic's target moves every step
        d_opt = torch.optim.Adam(disc.parameters(), lr=float(p["lr"]), betas=(0.5, 0.9))
    losses_used = ["diffusion"] + (["consistency", "deviation"] if config.consistency else []) \
        + (["adversarial"] if disc is not None else []) + (["lpips"] if lpips is not None else []) \
        + (["sff_rate"] if config.has_sff_stream else [])
    aux_opt = rate_weight = None
    if config.has_sff_stream:
        lambdas = base_lambdas(base_meta)
        if not lambdas or len(lambdas) != base.num_rates:
            raise ValueError(f"the SFF stream's bits are priced at the base codec's lambdas, but {base_path} "
                             "records none per rate point: train the base with cgdm train, or set sff_stream_dim: 0")
        rate_weight = torch.tensor([4.0 / (255**2 * lam) for lam in lambdas], device=device)
        rate_pixels = float(p["sff_rate_pixels"] or int(p["patch_size"]) ** 2)
        optimizer, aux_opt = rd_optimizers(decoder, p["lr"], p["aux_lr"])
    else:
        optimizer = torch.optim.Adam(decoder.parameters(), lr=float(p["lr"]))
    ema = copy.deepcopy(decoder).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(int(p["seed"]))
    step = 0

    state_path = _state_path(out)
    if resume and state_path.exists():
        # loaded on the CPU: the RNG states must stay there (a CUDA run crashed here when it resumed); the
        # modules and optimisers copy their tensors to the parameters' device
        state = load_training_state(state_path, phash, "different params or another base checkpoint",
                                    weights_only=False)
        decoder.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if aux_opt is not None:
            aux_opt.load_state_dict(state["aux_optimizer"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["disc_optimizer"])
        generator.set_state(state["rng"])
        restore_rng_states(state, device)  # CompressAI's training noise (the SFF stream's rate)
        step = int(state["step"])
    elif state_path.exists():
        warnings.warn(f"{state_path} exists from an earlier run and will be overwritten (resume=False)",
                      stacklevel=2)

    def save_state() -> None:
        extra = {} if disc is None else {"disc": disc.state_dict(), "disc_optimizer": d_opt.state_dict()}
        if aux_opt is not None:
            extra["aux_optimizer"] = aux_opt.state_dict()
        atomic_torch_save({"step": step, "params_hash": phash, "params": p, "model": decoder.state_dict(),
                           "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                           "rng": generator.get_state(), **rng_states(device), **extra}, state_path)

    total, every = int(p["steps"]), max(1, int(p["checkpoint_every"]))
    t_range = int(p["num_train_timesteps"]) if config.formulation == "resshift" else int(p["t_max"])
    bar = tqdm(total=total, initial=step, desc=f"train {out.name}", unit="step", disable=not progress,
               dynamic_ncols=True)
    t_start, timed, last = time.perf_counter(), 0, {}
    while step < total:
        set_lr((optimizer, d_opt), p["lr"], step, total, p["lr_final"])
        x = data.sample(int(p["batch_size"]), generator).to(device)
        b = x.size(0)
        r = torch.randint(base.num_rates, (b,), generator=generator).to(device)
        t = torch.randint(t_range, (b,), generator=generator).to(device)
        eps = torch.randn(x.shape, generator=generator).to(device)
        with torch.no_grad():
            bo = base(x, r)
        xb = bo["x_hat"].clamp(0, 1) * 2 - 1
        target = x * 2 - 1
        losses = {}
        features, x_c = decoder.condition(bo["features"], xb)
        if x_c is not None:
            losses["consistency"] = float(p["consistency_weight"]) * F.mse_loss(x_c, target)
        stream = None
        if decoder.sff_stream is not None:
            stream, s_lik = decoder.sff_stream(target, xb)
            bits = -torch.log2(s_lik).flatten(1).sum(1)
            losses["sff_rate"] = (rate_weight[r] * bits).mean() / rate_pixels
        syntax = decoder.fusion_syntax(bo["syntax"], stream)
        x0 = decoder(decoder.training_input(target, xb, eps, t), t, xb, r, features, syntax)
        losses["diffusion"] = F.mse_loss(x0, target)
        if x_c is not None and float(p["deviation_weight"]) > 0:
            losses["deviation"] = float(p["deviation_weight"]) * deviation_loss(x0, x_c, float(p["bound"]), factor)
        adversarial = disc is not None and step >= float(p["adversarial_start"]) * total
        if adversarial:
            disc.requires_grad_(False)  # the generator step must not accumulate critic gradients
            losses["adversarial"] = float(p["adversarial_weight"]) * generator_loss(disc(x0, xb))
        if lpips is not None:
            losses["lpips"] = float(p["lpips_weight"]) * lpips((x0.clamp(-1, 1) + 1) / 2, x).mean()
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step}; lower lr (now {p['lr']})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p["clip_max_norm"]:
            # the optimiser's parameters: not the quantiles, whose auxiliary gradient is not this loss's
            torch.nn.utils.clip_grad_norm_([q for g in optimizer.param_groups for q in g["params"]],
                                           float(p["clip_max_norm"]))
        optimizer.step()
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
            decoder.sff_stream.entropy_bottleneck.loss().backward()
            aux_opt.step()
        if adversarial:
            disc.requires_grad_(True)
            d_loss = discriminator_loss(disc(target, xb), disc(x0.detach(), xb))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            losses["critic"] = d_loss.detach()
        # EMA with a warm-up (short runs would otherwise keep mostly the initial weights)
        decay = min(float(p["ema_decay"]), (1 + step) / (10 + step))
        with torch.no_grad():
            for e, w in zip(ema.state_dict().values(), decoder.state_dict().values(), strict=True):
                if e.dtype.is_floating_point:
                    e.lerp_(w, 1 - decay)
                else:
                    e.copy_(w)
        step += 1
        timed += 1
        last = {k: v.item() for k, v in losses.items()} | {"loss": loss.item()}
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()}, refresh=False)
        if step % every == 0 or step == total:
            save_state()
        if on_step is not None:
            on_step(step)
    bar.close()
    ms_per_step = 1000.0 * (time.perf_counter() - t_start) / max(1, timed)

    ema.update(force=True)  # the SFF stream's range-coder tables, from the final (EMA) weights
    meta = {
        "arch": DECODER_ARCH, "steps": step, "variant": config.variant.name, "config": config.to_dict(),
        "params": p, "params_hash": phash, "base_weights_sha256": base_meta.get("weights_sha256"),
        "losses": losses_used, "lpips": lpips is not None, "ema_decay": float(p["ema_decay"]),
        "train_images": len(data.images), "device": str(device), "ms_per_step": round(ms_per_step, 1),
        "final": last,
    }
    save_checkpoint(out, ema.state_dict(), meta)
    state_path.unlink(missing_ok=True)
    log.info("decoder %s: %d steps, %.0f ms/step, losses %s, final %s", config.variant.name, step, ms_per_step,
             "+".join(losses_used), {k: round(v, 5) for k, v in last.items()})
    return out
