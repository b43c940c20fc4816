"""Training of CGDM's base codec (the trainer ``cgdm.train:train_base``; ``cgdm train`` runs it, :mod:`cgdm.cli_train`).

Loss (per image, averaged over the batch): ``lambda[r] * 255^2 * MSE + bpp`` with ``r`` the image's rate
index, drawn uniformly per sample so every batch mixes rate points of the variable-rate model; ``bpp``
counts all three streams (y, z, neural syntax). The entropy bottlenecks' quantiles are trained by the
auxiliary loss with their own optimizer, as in CompressAI's ``examples/train.py``.

Determinism and resume: crops, flips and rate indices come from one seeded ``torch.Generator``; the
quantisation noise from the global torch RNG seeded at start. Every ``checkpoint_every`` steps a state
file ``<out>.state`` is written atomically with the model, both optimizers and both RNG states, so a
killed run resumed with the same params continues at the same step with the same optimizer state (and,
on the same device and thread count, the same weights as an uninterrupted run). At the end the CDFs are
built (``update(force=True)``), the checkpoint is exported to ``out`` atomically and the state file is
removed.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cgdm.codec import ARCH, BaseCodec, estimate_bits
from cgdm.crops import RandomCrops
from cgdm.training import (
    check_extension,
    check_restarts,
    params_hash,
    rd_optimizers,
    restore_rng_states,
    rng_states,
    segment,
    segment_seed,
    set_lr,
)
from cgdm.zoo import atomic_torch_save, load_training_state, save_checkpoint

__all__ = ["DEFAULT_PARAMS", "extend_state", "train_base"]

#: quick-profile defaults; the paper profile sets N=128, M=192 and more steps
DEFAULT_PARAMS: dict = {
    "N": 64,
    "M": 96,
    "syntax_dim": 16,
    "syntax_pool_channels": None,
    # CompressAI's quality 1-3 lambdas (0.0018, 0.0035, 0.0067) and one octave below them: the
    # low-rate end, where a diffusion decoder helps most
    "lambdas": [0.0009, 0.0018, 0.0035, 0.0067],
    "steps": 1500,
    "batch_size": 8,
    "patch_size": 128,
    "lr": 3e-4,
    "lr_final": 0.1,  # cosine decay to this fraction of lr over `steps` (over each segment with restarts)
    "restarts": [],  # warm restarts (cgdm.training): fresh cosine, optimizers and random streams at these steps
    "aux_lr": 1e-3,
    "clip_max_norm": 1.0,
    "seed": 0,
    "checkpoint_every": 100,
    "threads": None,  # torch.set_num_threads; None = torch's default
}
# params that may change between a run and its resumption (they do not change what one step does)
_RESUMABLE_KEYS = {"steps", "checkpoint_every", "threads"}


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state")


def _params_hash(p: dict) -> str:
    return params_hash(p, _RESUMABLE_KEYS)


def extend_state(params: dict, checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``<out>.state`` so that :func:`train_base` with ``params`` continues from the weights of a
    finished, shorter run (``checkpoint``) instead of training from scratch.

    Allowed when ``params`` are the checkpoint's own except ``steps`` and ``restarts``, and the
    checkpoint's steps are one of ``params["restarts"]`` (:func:`cgdm.training.check_extension`): the
    continuation is then exactly the longer run trained from scratch (the weights are float32)."""
    p = {**DEFAULT_PARAMS, **params}
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    done = int(ckpt["meta"]["steps"])
    check_extension(p, done, ckpt["meta"]["params_hash"], _RESUMABLE_KEYS, checkpoint)
    model = BaseCodec(N=p["N"], M=p["M"], num_rates=len(p["lambdas"]), syntax_dim=p["syntax_dim"],
                      syntax_pool_channels=p["syntax_pool_channels"])
    fresh = model.state_dict()
    # the CDF tables built at export are empty during training: keep the fresh (empty) ones
    weights = {k: (fresh[k] if fresh[k].shape != v.shape else v.float() if v.is_floating_point() else v)
               for k, v in ckpt["state_dict"].items()}
    model.load_state_dict(weights)
    path = _state_path(Path(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"step": done, "params_hash": _params_hash(p), "params": p, "model": model.state_dict(),
                       "optimizer": None, "aux_optimizer": None, "torch_rng": None, "crop_rng": None,
                       "cuda_rng": None, "extended_from": str(checkpoint)}, path)
    return path


def rd_loss(out: dict, x: torch.Tensor, lambdas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``lambda * 255^2 * MSE + bpp``, averaged; also returns the batch's bpp and MSE."""
    num_pixels = x.shape[-2] * x.shape[-1]
    bpp = sum(estimate_bits(out["likelihoods"]).values()) / num_pixels
    mse = F.mse_loss(out["x_hat"], x, reduction="none").flatten(1).mean(1)
    loss = (lambdas * 255.0 ** 2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse.mean()}


def train_base(params: dict, train_images: list[Path], out: str | os.PathLike, requires: dict | None = None,
               device: str = "cpu", *, resume: bool = True,
               on_step: Callable[[int], None] | None = None, progress: bool = True) -> Path:
    """Train the variable-rate base codec and export it to ``out`` (the workflow's trainer function).

    ``resume``: continue from ``<out>.state`` when it exists and was made with the same params
    (ignoring ``steps``/``checkpoint_every``/``threads``, so a finished run can also be extended).
    ``on_step(step)`` is called after every completed step (tests use it to simulate a kill).
    """
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown training params {sorted(unknown)}; known: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **params}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lambdas = [float(v) for v in p["lambdas"]]
    if not lambdas or any(v <= 0 for v in lambdas):
        raise ValueError(f"lambdas must be a non-empty list of positive numbers, got {p['lambdas']}")
    restarts = check_restarts(p["restarts"], p["steps"])
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    device = torch.device(device)
    phash = _params_hash(p)

    data = RandomCrops([Path(f) for f in train_images], int(p["patch_size"]))
    torch.manual_seed(int(p["seed"]))  # network init and quantisation noise
    model = BaseCodec(N=p["N"], M=p["M"], num_rates=len(lambdas), syntax_dim=p["syntax_dim"],
                      syntax_pool_channels=p["syntax_pool_channels"])
    model.init_gains(lambdas)
    model.to(device).train()
    optimizer, aux_optimizer = rd_optimizers(model, p["lr"], p["aux_lr"])
    generator = torch.Generator().manual_seed(int(p["seed"]))
    step, extended_from = 0, None

    state_path = _state_path(out)
    if resume and state_path.exists():
        # RNG states must stay on the CPU; the optimizers move their state to the parameters' device
        state = load_training_state(state_path, phash, "different training params")
        model.load_state_dict(state["model"])
        step = int(state["step"])
        extended_from = state.get("extended_from")  # kept through every later save (provenance)
        if state["optimizer"] is None:  # made by extend_state: weights only, at a restart (reset below)
            if step not in restarts:
                raise ValueError(f"{state_path} holds weights only, at step {step}, which is not one of the "
                                 f"restarts {restarts}; delete it to start over")
        else:
            optimizer.load_state_dict(state["optimizer"])
            aux_optimizer.load_state_dict(state["aux_optimizer"])
            generator.set_state(state["crop_rng"])
            restore_rng_states(state, device)
    elif state_path.exists():
        warnings.warn(f"{state_path} exists from an earlier run and will be overwritten (resume=False)",
                      stacklevel=2)

    def save_state() -> None:
        atomic_torch_save({"step": step, "params_hash": phash, "params": p, "model": model.state_dict(),
                           "optimizer": optimizer.state_dict(), "aux_optimizer": aux_optimizer.state_dict(),
                           "crop_rng": generator.get_state(), **rng_states(device),
                           "extended_from": extended_from}, state_path)

    lam = torch.tensor(lambdas, device=device)
    total = int(p["steps"])
    every = max(1, int(p["checkpoint_every"]))
    bar = tqdm(total=total, initial=step, desc=f"train {out.name}", unit="step", disable=not progress,
               dynamic_ncols=True)
    t_start, steps_timed, last = time.perf_counter(), 0, {}
    while step < total:
        if step in restarts:
            # 1. a warm restart: fresh optimizers and random streams of the new segment, so this state depends
            #    on the weights alone and a shorter run's weights can be extended (extend_state)
            optimizer, aux_optimizer = rd_optimizers(model, p["lr"], p["aux_lr"])
            seed = segment_seed(int(p["seed"]), segment(step, total, restarts)[0])
            torch.manual_seed(seed)
            generator.manual_seed(seed)
        set_lr((optimizer,), p["lr"], step, total, p["lr_final"], restarts)
        x = data.sample(int(p["batch_size"]), generator).to(device)
        r = torch.randint(len(lambdas), (x.size(0),), generator=generator).to(device)
        optimizer.zero_grad(set_to_none=True)
        aux_optimizer.zero_grad(set_to_none=True)
        res = rd_loss(model(x, r), x, lam[r])
        if not torch.isfinite(res["loss"]):
            raise FloatingPointError(f"loss is {res['loss'].item()} at step {step}; lower lr (now {p['lr']})")
        res["loss"].backward()
        if p["clip_max_norm"]:
            torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], float(p["clip_max_norm"]))
        optimizer.step()
        aux = model.aux_loss()
        aux.backward()
        aux_optimizer.step()
        step += 1
        steps_timed += 1
        last = {k: v.item() for k, v in res.items()} | {"aux": aux.item()}
        bar.update(1)
        bar.set_postfix(loss=f"{last['loss']:.3f}", bpp=f"{last['bpp']:.3f}",
                        psnr=f"{-10 * math.log10(max(last['mse'], 1e-10)):.2f}", refresh=False)
        if step % every == 0 or step == total:
            save_state()
        if on_step is not None:
            on_step(step)
    bar.close()
    ms_per_step = 1000.0 * (time.perf_counter() - t_start) / max(1, steps_timed)

    model.update(force=True)  # CDF tables for the range coder, from the final quantiles
    model.eval()
    meta = {
        "arch": ARCH, "steps": step, "config": model.config, "num_rates": model.num_rates,
        "N": model.N, "M": model.M, "lambdas": lambdas, "params": p, "params_hash": phash,
        "train_images": len(data.images), "device": str(device), "ms_per_step": round(ms_per_step, 1),
        "final": last,
    }
    if extended_from:
        meta["extended_from"] = extended_from
    save_checkpoint(out, model.state_dict(), meta)
    state_path.unlink(missing_ok=True)
    return out

