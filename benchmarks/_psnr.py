"""The benchmarks' one PSNR: 8-bit RGB arrays, one MSE over all channels, peak 255 (as the workflow's
pyiqa ``psnr`` and CompressAI's ``psnr-rgb``). A lossless pair is capped at 100 dB, not infinity, so
means over images stay finite."""

from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 255.0**2 * 1e-10))
