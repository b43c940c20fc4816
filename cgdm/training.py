"""Training utilities shared by every trainer of the suite (CGDM base and decoder, the learned baselines).

Kept small on purpose: the learning-rate schedule is a pure function of the step, so a run resumed from
its state file continues on the same schedule without storing a scheduler object.

Warm restarts (``restarts``, SGDR): the steps are cut into segments at the given steps; each segment
runs its own cosine decay from ``lr``, with fresh optimisers and random streams seeded by the segment
(:func:`segment_seed`). A run's first segments are then exactly a shorter run: a model trained for
``S`` steps can be extended to ``S + n`` steps with ``restarts: [S]`` from its weights alone (no optimiser
state is needed at a restart), which is how the shipped zoo is extended (``cgdm zoo-extend``).
"""

from __future__ import annotations

import math

import torch

from cgdm.hashing import config_hash

__all__ = ["check_extension", "check_restarts", "lr_factor", "params_hash", "rd_optimizers", "restore_rng_states",
           "rng_states", "segment", "segment_seed", "set_lr"]


def lr_factor(step: int, total: int, final: float) -> float:
    """Cosine decay from 1 to ``final`` over ``total`` steps (a function of the step: resumable)."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def check_restarts(restarts, steps: int) -> list[int]:
    """``restarts`` as a sorted list of ints, each strictly inside ``(0, steps)``; else ValueError."""
    out = [int(r) for r in (restarts or [])]
    if out != sorted(set(out)) or any(not 0 < r < int(steps) for r in out):
        raise ValueError(f"restarts must be increasing steps strictly between 0 and steps={steps}, got {restarts}")
    return out


def segment(step: int, total: int, restarts=()) -> tuple[int, int, int]:
    """``(index, start, end)`` of the schedule segment that ``step`` (0-based) falls in."""
    bounds = [0, *restarts, total]
    index = sum(1 for r in restarts if step >= r)
    return index, bounds[index], bounds[index + 1]


def segment_seed(seed: int, index: int) -> int:
    """Seed of segment ``index``'s random streams: segment 0 keeps ``seed`` (a run without restarts is
    unchanged), later ones get their own so a restart does not replay the first segment's crops."""
    return int(seed) + 1_000_003 * int(index)


def set_lr(optimizers, lr: float, step: int, total: int, final: float, restarts=()) -> None:
    """Set every param group of ``optimizers`` (None entries skipped) to ``lr * lr_factor(...)``, the cosine
    of the segment ``step`` falls in (one segment without ``restarts``)."""
    _, start, end = segment(step, total, restarts)
    value = float(lr) * lr_factor(step - start, end - start, float(final))
    for opt in optimizers:
        for group in (opt.param_groups if opt is not None else []):
            group["lr"] = value


def rd_optimizers(net: torch.nn.Module, lr: float, aux_lr: float):
    """Adam for the network and a second Adam for the entropy bottlenecks' quantiles, which the auxiliary
    loss trains (CompressAI's recipe)."""
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=float(lr)), torch.optim.Adam(aux, lr=float(aux_lr))


def rng_states(device: torch.device | str) -> dict:
    """torch's global random states, for a training state file: CompressAI's quantisation noise draws from
    them (on a GPU from the device's own generator), so a resumed run without them would differ."""
    device = torch.device(device)
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng_states(state: dict, device: torch.device | str) -> None:
    """Set the states :func:`rng_states` saved. A state without them (a decoder state saved before they were
    stored, or weights only, made at a restart) leaves the random streams as they are."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    if torch.device(device).type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def params_hash(p: dict, resumable) -> str:
    """Hash of the params that change what a step does (the ``resumable`` keys left out). An empty
    ``restarts`` is left out too: a run without restarts hashes as it did before restarts existed, so the
    shipped zoo's hashes stay valid and its models can be extended."""
    return config_hash({k: v for k, v in p.items() if k not in resumable and not (k == "restarts" and not v)})


def check_extension(p: dict, done: int, done_hash: str, resumable, source) -> None:
    """ValueError unless a run of ``done`` steps hashed ``done_hash`` is the start of a run with ``p``: the
    same params apart from ``steps`` and ``restarts``, with a restart at ``done`` and the shorter run's
    own restarts before it (at a restart, optimisers and random streams start fresh, so the continuation
    from the weights alone is exactly the longer run)."""
    restarts = check_restarts(p["restarts"], p["steps"])
    if done not in restarts:
        raise ValueError(f"{source} ends at step {done}: to extend it, params.restarts must contain {done} "
                         f"(got {restarts})")
    earlier = {**p, "steps": done, "restarts": [r for r in restarts if r < done]}
    if params_hash(earlier, resumable) != done_hash:
        raise ValueError(f"{source} was trained with other params than these (only steps and restarts after "
                         f"step {done} may change when extending a run), or with other restarts before it")
