"""Trainer of the learned baselines: one small CompressAI model per λ, all in one checkpoint file.

The workflow trainer of the config's ``models:`` entries with ``trainer: baselines.learned_training:train``,
run by ``cgdm train`` (the workflow's rule ``train_model``, or ``cgdm train --config FILE.yaml`` by hand).
The codec that reads its checkpoints is :class:`baselines.learned.CompressAITrained`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from baselines.learned import build_model, load_checkpoint
from cgdm.crops import RandomCrops
from cgdm.training import (
    check_extension,
    check_restarts,
    params_hash,
    rd_optimizers,
    restore_rng_states,
    rng_states,
    segment_seed,
    set_lr,
)
from cgdm.zoo import atomic_torch_save, load_training_state, save_checkpoint

#: defaults of the trainer's ``params`` (the config's ``models: {name: {params: ...}}``)
TRAIN_DEFAULTS = {
    "architecture": "mbt2018-mean",
    "N": 64,
    "M": 96,
    "lambdas": [0.0018, 0.0035, 0.0067, 0.0130],
    "steps": 500,          # optimisation steps per λ
    "batch_size": 8,
    "patch_size": 128,     # random square crops
    "lr": 1e-3,            # higher than CompressAI's 1e-4: a few hundred steps, not a million
    "lr_final": 0.1,       # cosine decay to this fraction of lr over each λ's steps (each segment's)
    "restarts": [],        # warm restarts within each λ's steps (cgdm.training); segment by segment, see train
    "aux_lr": 1e-3,
    "clip_max_norm": 1.0,
    "warm_start": True,    # each λ starts from the previous λ's weights: far better in few steps
    "seed": 0,
    "threads": None,       # torch intra-op threads (None: leave torch's setting)
    "checkpoint_every": 100,  # steps between writes of the resumable state file
}
# params that may change between a run and its resumption (they do not change what one step does)
_RESUMABLE_KEYS = {"checkpoint_every", "threads"}


def _load_weights(net: torch.nn.Module, state: dict) -> None:
    """``net.load_state_dict(state)`` where the entropy models' CDF tables may differ in size from the
    net's: CompressAI resizes only empty tables, and each λ's model has tables of its own size."""
    from compressai.entropy_models import EntropyModel  # lazy: CompressAI is slow to import (seconds)

    for module in net.modules():
        if isinstance(module, EntropyModel):
            for name in ("_quantized_cdf", "_offset", "_cdf_length"):
                getattr(module, name).resize_(0)
    net.load_state_dict(state)


def train(params: dict, train_images: list[Path], out: Path, requires: dict[str, Path] | None = None,
          device: str = "cpu", *, on_step=None) -> dict:
    """Train one small CompressAI model per λ and write them all to one checkpoint at ``out``.

    ``params`` override :data:`TRAIN_DEFAULTS`. Loss per λ: ``λ·255²·MSE + bpp`` (CompressAI's
    :class:`~compressai.losses.RateDistortionLoss`) plus the entropy bottleneck's auxiliary loss on its
    own optimiser; the learning rate follows a cosine decay to ``lr_final`` over each λ's steps. Before a
    λ's model is kept, ``update(force=True)`` builds the CDF tables the range coder needs.

    With ``restarts`` the steps of every λ are cut into segments, trained segment by segment: first each
    λ's first segment (the chain of warm starts), then each λ's second segment from its own weights, with
    fresh optimisers and random streams of that segment and λ, and so on. A run's first segments are
    therefore a shorter run, which :func:`extend_state` continues from its weights.

    Resumable like :func:`cgdm.train.train_base`: every ``checkpoint_every`` steps ``<out>.state`` holds
    the network, both optimisers, both RNG states and the models of the (segment, λ) units already done;
    a killed run started again with the same params continues where it stopped. ``on_step(step)`` is
    called after each step (tests use it to simulate a kill). Written atomically; returns the
    checkpoint's ``meta``.
    """
    from compressai.losses import RateDistortionLoss  # lazy: CompressAI is slow to import (seconds)

    unknown = set(params) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown trainer params {sorted(unknown)}; known: {sorted(TRAIN_DEFAULTS)}")
    p = {**TRAIN_DEFAULTS, **params}
    lambdas = sorted(float(x) for x in p["lambdas"])
    if not lambdas:
        raise ValueError("params.lambdas is empty")
    if not train_images:
        raise ValueError("no training images")
    steps, every = int(p["steps"]), max(1, int(p["checkpoint_every"]))
    restarts = check_restarts(p["restarts"], steps)
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    out = Path(out)
    state_path = out.with_name(out.name + ".state")
    phash = params_hash(p, _RESUMABLE_KEYS)

    gen = torch.Generator().manual_seed(int(p["seed"]))
    torch.manual_seed(int(p["seed"]))  # network initialisation
    data = RandomCrops([Path(f) for f in train_images], int(p["patch_size"]))
    net = build_model(p["architecture"], int(p["N"]), int(p["M"])).to(device)
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    bounds = [0, *restarts, steps]
    # (segment, λ index) in training order: segment-major, so the first segments are a shorter run
    units = [(seg, i) for seg in range(len(bounds) - 1) for i in range(len(lambdas))]
    states, stats, elapsed, done, resume, extended_from = [], [], 0.0, 0, None, None
    if state_path.exists():
        resume = load_training_state(state_path, phash, "different trainer params")
        states, stats, elapsed, done = resume["states"], resume["stats"], float(resume["elapsed"]), resume["done"]
        extended_from = resume.get("extended_from")

    def save_state(unit: int, step: int, opt, aux_opt, seconds: float) -> None:
        atomic_torch_save({"params_hash": phash, "params": p, "done": unit, "step": step,
                           "net": net.state_dict(), "optimizer": opt.state_dict(),
                           "aux_optimizer": aux_opt.state_dict(), "crop_rng": gen.get_state(),
                           **rng_states(device), "states": states, "stats": stats,
                           "elapsed": seconds, "extended_from": extended_from}, state_path)

    for k, (seg, i) in enumerate(units):
        if k < done:
            continue  # done before the run was interrupted
        lmbda, first, last = lambdas[i], bounds[seg], bounds[seg + 1]
        if seg == 0:  # the first segment: each λ starts from the previous λ's model (warm start) or afresh
            _load_weights(net, states[i - 1] if p["warm_start"] and i > 0 else init_state)
        else:
            # 1. a later segment continues this λ's own model with fresh random streams of its own, so it
            #    depends on that model's weights alone (what extend_state relies on)
            _load_weights(net, states[i])
            gen.manual_seed(segment_seed(int(p["seed"]), seg) + i)
            torch.manual_seed(segment_seed(int(p["seed"]), seg) + i)
        net.train()
        criterion = RateDistortionLoss(lmbda=lmbda)
        opt, aux_opt = rd_optimizers(net, p["lr"], p["aux_lr"])
        step = first
        if resume is not None and resume["step"] > first:  # mid-unit: its network, optimisers, streams
            _load_weights(net, resume["net"])
            step = int(resume["step"])
            opt.load_state_dict(resume["optimizer"])
            aux_opt.load_state_dict(resume["aux_optimizer"])
        if resume is not None and (step > first or seg == 0) and resume["crop_rng"] is not None:
            # the first segment's streams run on from λ to λ; a later segment's were just seeded
            gen.set_state(resume["crop_rng"])
            restore_rng_states(resume, device)
        resume = None
        t0 = time.perf_counter()

        # mininterval: the bar also goes to workflow log files, one update a second is plenty there
        part = f", segment {seg + 1}/{len(bounds) - 1}" if restarts else ""
        bar = tqdm(total=last - first, initial=step - first, unit="step", mininterval=1.0,
                   desc=f"{p['architecture']} λ={lmbda:g} ({i + 1}/{len(lambdas)}{part})")
        while step < last:
            set_lr((opt,), p["lr"], step, steps, p["lr_final"], restarts)
            x = data.sample(int(p["batch_size"]), gen).to(device)
            opt.zero_grad(set_to_none=True)
            aux_opt.zero_grad(set_to_none=True)
            loss = criterion(net(x), x)
            if not math.isfinite(loss["loss"].item()) or loss["loss"].item() > 1e6:
                raise RuntimeError(f"training diverged at λ={lmbda:g} step {step} (loss {loss['loss'].item():.3g}); "
                                   f"lower params.lr (now {p['lr']:g})")
            loss["loss"].backward()
            if p["clip_max_norm"]:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(p["clip_max_norm"]))
            opt.step()
            aux = net.aux_loss()
            aux.backward()
            aux_opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss['loss'].item():.3f}", bpp=f"{loss['bpp_loss'].item():.3f}",
                            psnr=f"{-10 * math.log10(max(loss['mse_loss'].item(), 1e-10)):.2f}", refresh=False)
            if step % every == 0 and step < last:
                save_state(k, step, opt, aux_opt, elapsed + time.perf_counter() - t0)
            if on_step is not None:
                on_step(step)
        bar.close()
        net.update(force=True)
        kept = {k_: v.detach().cpu().clone() for k_, v in net.state_dict().items()}
        if seg == 0:
            states.append(kept)
        else:
            states[i] = kept
        row = {"lambda": lmbda, "loss": loss["loss"].item(), "bpp": loss["bpp_loss"].item(),
               "mse": loss["mse_loss"].item(), "aux": aux.item()}
        if seg == 0:
            stats.append(row)
        else:
            stats[i] = row
        elapsed += time.perf_counter() - t0
        save_state(k + 1, 0, opt, aux_opt, elapsed)  # this unit done: a kill from here on restarts at the next

    import compressai  # lazy: CompressAI is slow to import (seconds)

    meta = {
        "arch": p["architecture"], "N": int(p["N"]), "M": int(p["M"]), "lambdas": lambdas,
        "steps": steps, "total_steps": steps * len(lambdas),
        "batch_size": int(p["batch_size"]), "patch_size": int(p["patch_size"]), "lr": float(p["lr"]),
        "lr_final": float(p["lr_final"]), "restarts": restarts, "warm_start": bool(p["warm_start"]),
        "seed": int(p["seed"]),
        "params_hash": phash, "train_images": sorted(Path(f).name for f in train_images),
        "final": stats, "seconds": elapsed, "ms_per_step": 1000 * elapsed / (steps * len(lambdas) or 1),
        "device": str(device), "compressai": str(compressai.__version__), "torch": str(torch.__version__),
    }
    if extended_from:
        meta["extended_from"] = extended_from
    save_checkpoint(out, states, meta)
    state_path.unlink(missing_ok=True)
    return meta


def extend_state(params: dict, checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``<out>.state`` so that :func:`train` with ``params`` continues from the models of a finished,
    shorter run (``checkpoint``): same params apart from ``steps`` and ``restarts``, whose steps per λ are
    one of ``params["restarts"]`` (:func:`cgdm.training.check_extension`). Trained segment by segment,
    the continuation is then the longer run itself; float16-stored tensors (a shipped zoo file) come back
    as float32, the one difference."""
    p = {**TRAIN_DEFAULTS, **params}
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt["meta"]
    done = int(meta["steps"])
    check_extension(p, done, meta["params_hash"], _RESUMABLE_KEYS, checkpoint)
    lambdas = sorted(float(x) for x in p["lambdas"])
    if len(ckpt["state_dict"]) != len(lambdas):
        raise ValueError(f"{checkpoint} holds {len(ckpt['state_dict'])} models for {len(lambdas)} λ")
    states = [{k: v.float() if v.is_floating_point() else v for k, v in sd.items()} for sd in ckpt["state_dict"]]
    segments_done = 1 + sum(1 for r in p["restarts"] if r < done)
    path = Path(out).with_name(Path(out).name + ".state")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"params_hash": params_hash(p, _RESUMABLE_KEYS), "params": p,
                       "done": segments_done * len(lambdas), "step": 0, "net": None, "optimizer": None,
                       "aux_optimizer": None, "crop_rng": None, "torch_rng": None, "states": states,
                       "stats": list(meta.get("final") or []), "elapsed": float(meta.get("seconds", 0.0)),
                       "extended_from": str(checkpoint)}, path)
    return path
