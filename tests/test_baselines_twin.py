"""Our run of a codec against its published twin: Pillow JPEG vs CompressAI's published Kodak JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from baselines.classical import JPEG
from baselines.published import load_published, published_twin_diff
from cgdm.imageio import list_images, load_image

KODAK = Path(__file__).resolve().parent.parent / "data" / "kodak"


def test_jpeg_reproduces_compressai_published_curve():
    codec = JPEG("jpeg")  # Pillow defaults, like CompressAI's published run (Pillow 7.1.2)
    rows = []
    for path in list_images(KODAK):
        img = load_image(path)
        for q in (10, 25, 50, 75):
            data = codec.encode(img, q)
            mse = np.mean((codec.decode(data).astype(np.float64) - img) ** 2)
            rows.append({"codec": "jpeg", "image": path.stem, "rate": q, "metric": "psnr", "status": "ok",
                         "bpp": 8 * len(data) / (img.shape[0] * img.shape[1]), "value": 10 * np.log10(255**2 / mse)})
    ours = pd.DataFrame(rows)
    assert ours["image"].nunique() == 24
    published = load_published({"source": "compressai/kodak/jpeg.json", "dataset": "kodak"})
    diff = published_twin_diff(ours, published, metrics=("psnr",)).iloc[0]
    assert diff["points"] == 4
    # same library, same settings, same images: equal within the libjpeg-turbo version drift
    assert abs(diff["mean_delta"]) < 0.3, diff.to_dict()
    assert abs(diff["bd_rate_percent"]) < 5, diff.to_dict()
