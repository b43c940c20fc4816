"""Side-by-side crops at matched bpp: reference target, rate-matched classical codecs, stated tolerance."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cgdm.evaluation.crops import crop_panels, crops_figure, detail_window, matched_points, reference_point

KODIM = Path(__file__).resolve().parent.parent / "data" / "kodak" / "kodim23.png"
JPEG = {"class": "baselines.classical.JPEG", "params": {"subsampling": "4:2:0"}}
WEBP = {"class": "baselines.classical.WebP"}


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


@pytest.fixture
def scene(tmp_path):
    """A 256x384 Kodak crop; a 'cgdm' rate point at 0.60 bpp (its reconstruction: a blurred copy), a JPEG
    rate point far from it (quality 95), and a learned codec whose nearest point is 0.9 bpp."""
    img = np.asarray(Image.open(KODIM).convert("RGB"))[:256, :384]
    orig = tmp_path / "img.png"
    Image.fromarray(img).save(orig)
    rec = tmp_path / "rec.png"
    Image.fromarray(img).resize((96, 64)).resize((384, 256)).save(rec)

    def row(codec, kind, rate, bpp):
        return {"image": "img", "codec": codec, "kind": kind, "rate": rate, "bpp": bpp, "status": "ok",
                "original": str(orig), "reconstruction": str(rec)}

    enc = pd.DataFrame([row("cgdm", "cgdm", 0, 0.25), row("cgdm", "cgdm", 1, 0.60),
                        row("jpeg", "classical", 5, 2.4), row("webp", "classical", 3, 0.31),
                        row("hyper", "learned", 0, 0.9), row("hyper", "learned", 1, 1.8)])
    return enc, img


def test_reference_is_the_cgdm_rate_point_closest_to_the_request(scene):
    enc, _ = scene
    assert reference_point(enc, "img", 0.5)["bpp"] == 0.60
    assert reference_point(enc, "img", 0.1)["bpp"] == 0.25
    assert reference_point(enc, "img", 1.5, reference="hyper")["bpp"] == 1.8
    with pytest.raises(ValueError, match="reference codec 'nope'"):
        reference_point(enc, "img", 0.5, reference="nope")


def test_classical_codecs_are_rate_matched_to_the_reference_within_tolerance(scene):
    enc, img = scene
    target, ref, _, panels = crop_panels(enc, "img", 0.5, entries={"jpeg": JPEG, "webp": WEBP}, tolerance=0.05)
    assert ref == "cgdm" and target == 0.60
    by = {p.codec: p for p in panels}
    for name in ("jpeg", "webp"):
        p = by[name]
        assert p.how == "rate-matched" and p.within, (name, p.bpp)
        assert abs(p.bpp - 0.60) <= 0.05 * 0.60
        assert p.bpp not in (2.4, 0.31)          # re-encoded for this image, not the far-off rate point
        assert p.image.shape == img.shape and 20 < _psnr(p.image, img) < 45   # a real decode
    # the learned codec cannot be re-encoded: its nearest point is 50 % off and says so
    assert by["hyper"].how == "rate point" and not by["hyper"].within and "no rate point" in by["hyper"].note


def test_unreachable_target_is_marked_not_hidden(scene):
    enc, _ = scene
    enc = enc.assign(bpp=enc["bpp"].where(enc["codec"] != "cgdm", [0.02, 0.03] + [None] * 4))
    target, _, _, panels = crop_panels(enc, "img", 0.02, entries={"jpeg": JPEG}, tolerance=0.05)
    jpeg = next(p for p in panels if p.codec == "jpeg")
    assert target == 0.02 and not jpeg.within and jpeg.setting == "1"      # JPEG's lowest quality ...
    assert jpeg.note == f"cannot go below {jpeg.bpp:.3f} bpp" and jpeg.bpp > 0.05   # ... is far above


def test_bad_tolerance_is_rejected(scene):
    with pytest.raises(ValueError, match="tolerance"):
        crop_panels(scene[0], "img", 0.5, tolerance=0)


def test_crops_figure_and_table_are_written(scene, tmp_path):
    enc, _ = scene
    out = crops_figure(enc, tmp_path / "crops.png", target_bpp=0.5, size=96, entries={"jpeg": JPEG},
                       labels={"jpeg": "JPEG 4:2:0"}, table=tmp_path / "crops.csv")
    assert out.stat().st_size > 1000
    table = pd.read_csv(tmp_path / "crops.csv").set_index("codec")
    assert table.loc["cgdm", "how"] == "reference" and table.loc["jpeg", "label"] == "JPEG 4:2:0"
    assert table.loc["jpeg", "within_tolerance"] and abs(table.loc["jpeg", "rel_diff"]) <= 0.05
    assert not table.loc["webp", "within_tolerance"]   # no entry given: its rate point 0.31 is 48 % off
    assert (table["tolerance"] == 0.05).all() and (table["target_bpp"] == 0.60).all()


def _psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / mse)


def test_cli_writes_figure_and_table(scene, tmp_path):
    import json

    from cgdm.evaluation.crops import main

    enc, _ = scene
    enc.to_csv(tmp_path / "encode.csv", index=False)
    assert main([str(tmp_path / "encode.csv"), "--out", str(tmp_path / "c.png"), "--bpp", "0.2", "--size", "64",
                 "--entries", json.dumps({"webp": WEBP, "cgdm": {"class": "cgdm.harness.cgdm_codecs.CGDMCodec"}}),
                 "--tolerance", "0.1", "--table", str(tmp_path / "c.csv")]) == 0
    table = pd.read_csv(tmp_path / "c.csv").set_index("codec")
    assert table.loc["cgdm", "bpp"] == 0.25 and table.loc["webp", "how"] == "rate-matched"
    assert (table["tolerance"] == 0.1).all()
