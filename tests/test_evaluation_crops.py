"""Side-by-side crops at matched bpp."""

import numpy as np
import pandas as pd
from PIL import Image

from cgdm.evaluation.crops import crops_figure, detail_window, matched_points


def test_detail_window_finds_the_textured_region(rng):
    img = np.full((120, 160, 3), 128, np.uint8)
    img[60:100, 100:140] = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    y, x = detail_window(img, 40)
    assert 50 <= y <= 70 and 90 <= x <= 110


def test_each_codec_contributes_its_rate_point_closest_to_the_target():
    enc = pd.DataFrame({"image": ["a"] * 5, "codec": ["x", "x", "x", "y", "y"], "rate": [0, 1, 2, 0, 1],
                        "bpp": [0.1, 0.22, 0.5, 0.05, 0.4], "status": ["ok"] * 5})
    got = matched_points(enc, "a", 0.2).set_index("codec")["rate"].to_dict()
    assert got == {"x": 1, "y": 0}  # |0.05 - 0.2| < |0.4 - 0.2|


def test_crops_figure_is_written(tmp_path, rng):
    orig = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(orig)
    enc = pd.DataFrame({"image": ["a", "a"], "codec": ["x", "y"], "rate": [0, 0], "bpp": [0.2, 0.3],
                        "status": ["ok", "ok"], "original": [str(orig)] * 2, "reconstruction": [str(orig)] * 2})
    out = crops_figure(enc, tmp_path / "crops.png", size=32)
    assert out.stat().st_size > 1000
