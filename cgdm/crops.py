"""The random crop sampler of both training stages (:mod:`cgdm.train`, :mod:`cgdm.train_diffusion`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from cgdm.imageio import load_image

__all__ = ["RandomCrops"]


class RandomCrops:
    """Seeded random crops (with horizontal flips) from a list of images held in memory as uint8."""

    def __init__(self, paths: list[Path], patch_size: int):
        if not paths:
            raise ValueError("no training images: point train_images at a folder of PNG/JPEG files")
        self.patch_size = patch_size
        self.images = []
        for p in paths:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # alpha dropped: documented rule of cgdm.imageio
                img = torch.from_numpy(load_image(p)).permute(2, 0, 1).contiguous()
            h, w = img.shape[-2:]
            if h < patch_size or w < patch_size:  # small images: replicate-pad up to one patch
                img = F.pad(img[None].float(), (0, max(0, patch_size - w), 0, max(0, patch_size - h)),
                            mode="replicate")[0].to(torch.uint8)
            self.images.append(img)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        p = self.patch_size
        out = torch.empty(batch_size, 3, p, p)
        for i in range(batch_size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            h, w = img.shape[-2:]
            top = int(torch.randint(h - p + 1, (1,), generator=generator))
            left = int(torch.randint(w - p + 1, (1,), generator=generator))
            crop = img[:, top:top + p, left:left + p]
            if bool(torch.randint(2, (1,), generator=generator)):
                crop = crop.flip(-1)
            out[i] = crop.float().div(255.0)
        return out
