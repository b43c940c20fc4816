"""Training utilities shared by every trainer of the suite (CGDM base and decoder, the learned baselines).

Kept small on purpose: the learning-rate schedule is a pure function of the step, so a run resumed from
its state file continues on the same schedule without storing a scheduler object.
"""

from __future__ import annotations

import math

import torch

__all__ = ["lr_factor", "rd_optimizers", "set_lr"]


def lr_factor(step: int, total: int, final: float) -> float:
    """Cosine decay from 1 to ``final`` over ``total`` steps (a function of the step: resumable)."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def set_lr(optimizers, lr: float, step: int, total: int, final: float) -> None:
    """Set every param group of ``optimizers`` (None entries skipped) to ``lr * lr_factor(...)``."""
    value = float(lr) * lr_factor(step, total, float(final))
    for opt in optimizers:
        for group in (opt.param_groups if opt is not None else []):
            group["lr"] = value


def rd_optimizers(net: torch.nn.Module, lr: float, aux_lr: float):
    """Adam for the network and a second Adam for the entropy bottlenecks' quantiles, which the auxiliary
    loss trains (CompressAI's recipe)."""
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=float(lr)), torch.optim.Adam(aux, lr=float(aux_lr))
