"""Shared helpers of the evaluation tests (no tests here).

* :func:`seed_weights_cache` writes RANDOM weight files in the metric cache layout and points the weights
  table's sha256 at them, so the real pyiqa / torchvision / clean-fid code paths load and run them. The
  official files (hundreds of MB) cannot be downloaded in tests.
* :func:`make_encode_table` writes originals, distorted reconstructions and an encode CSV.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from cgdm.imageio import save_png
from cgdm.results import ENCODE_COLUMNS


def _backbone_state(ctor, generator) -> dict:
    """State dict of a torchvision classifier: random conv ``features``, constant classifier.

    LPIPS / DISTS use only the conv features; the (huge) classifier tensors are stored as expanded
    zeros -- one element on disk each -- so the files stay a few MB while ``load_state_dict`` accepts them.
    """
    import torch

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ctor().state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.startswith("features") and key.endswith("weight"):
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.startswith("features"):
            state[key] = torch.zeros(shape)
        else:
            state[key] = torch.zeros(1).expand(shape)
    return state


def _tiny_inception(path: Path, generator) -> None:
    """A TorchScript stand-in with the interface clean-fid's InceptionV3W uses (``layers`` -> 2048)."""
    import torch
    from torch import nn

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 5, stride=4)
            self.head = nn.Linear(16 * 4, 2048)
            self.pool = nn.AdaptiveAvgPool2d(2)

        def forward(self, x):
            h = self.pool(torch.relu(self.conv(x))).flatten(1)
            return self.head(h)[:, :, None, None]

    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = Layers()

        def forward(self, x, return_features: bool = False):
            return self.layers(x)

    base = Base()
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    torch.jit.script(base).save(str(path))


def seed_weights_cache(cache: Path, monkeypatch, keys=("lpips_alex_v0.1", "alexnet", "dists", "vgg16", "inception")):
    """Write random weights for ``keys`` into ``cache`` and make the weights table expect exactly them."""
    import torch
    import torchvision

    from cgdm import weights as W

    g = torch.Generator().manual_seed(0)
    writers = {
        "lpips_alex_v0.1": lambda: {f"lin{i}.model.1.weight": torch.rand((1, c, 1, 1), generator=g) * 0.1
                                    for i, c in enumerate([64, 192, 384, 256, 256])},
        "alexnet": lambda: _backbone_state(torchvision.models.alexnet, g),
        "dists": lambda: {k: torch.rand((1, 1475, 1, 1), generator=g) * 0.1 + 0.05 for k in ("alpha", "beta")},
        "vgg16": lambda: _backbone_state(torchvision.models.vgg16, g),
    }
    paths = {}
    for key in keys:
        w = W.WEIGHTS[key]
        path = w.path(cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        if key == "inception":
            _tiny_inception(path, g)
        else:
            torch.save(writers[key](), path)
        monkeypatch.setitem(W.WEIGHTS, key, dataclasses.replace(w, sha256=W.sha256_file(path), size=None))
        paths[key] = path
    return paths


def make_encode_table(folder: Path, sizes=((176, 192), (192, 176)), noise: float = 6.0, codec: str = "toy",
                      rate: str = "0", failed: int = 0, seed: int = 0, dataset: str = "toyset") -> Path:
    """Originals + noisy reconstructions (PNG) and their encode CSV; ``failed`` extra rows are unavailable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 64) * 4], -1)
        img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        rec = np.clip(img.astype(float) + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        orig_p, rec_p = folder / f"orig{i}.png", folder / f"rec{i}.png"
        save_png(orig_p, img)
        save_png(rec_p, rec)
        rows.append(dict(dataset=dataset, image=f"im{i}", codec=codec, kind="classical", rate=rate, width=w,
                         height=h, bytes=1000 + i, bpp=8 * (1000 + i) / (h * w), bitstream=str(folder / f"{i}.bin"),
                         reconstruction=str(rec_p), original=str(orig_p), encode_s=0.1, decode_s=0.05,
                         codec_version="toy-1", weights="none", device="cpu", code_revision="rev",
                         config_hash="cfg", status="ok"))
    for j in range(failed):
        rows.append(dict(dataset=dataset, image=f"bad{j}", codec=codec, kind="classical", rate=rate,
                         original=str(folder / "orig0.png"), status="unavailable: toy codec binary not found"))
    path = folder / "encode.csv"
    pd.DataFrame(rows, columns=ENCODE_COLUMNS).to_csv(path, index=False)
    return path
