"""FID/KID on the FID/256 patch protocol (cgdm.evaluation.fid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cgdm.evaluation import DATASET_IMAGE
from cgdm.evaluation import fid as F
from cgdm.evaluation.tidy import read_encode_table
from cgdm.results import TIDY_COLUMNS

from helpers.evaluation import make_encode_table, seed_weights_cache


@pytest.mark.parametrize("shape", [(512, 768, 3), (768, 512, 3)])
def test_kodak_sized_image_gives_8_patches(shape):
    img = np.zeros(shape, np.uint8)
    ps = F.patches(img)
    assert len(ps) == 8 == F.num_patches(*shape[:2])  # 6 on the grid from (0, 0) + 2 shifted by 128
    assert all(p.shape == (256, 256, 3) for p in ps)


def test_patch_positions_are_grid_then_shifted_grid():
    h, w = 512, 768
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], -1).astype(np.uint8)
    ps = F.patches(img)
    corners = [(int(p[0, 0, 0]), int(p[0, 0, 1]), int(p[0, 0, 2])) for p in ps]
    assert corners[:6] == [(0, 0, 16 * r + c) for r in range(2) for c in range(3)]
    assert corners[6:] == [(128, 128, 0), (128, 128, 1)]  # second pass starts at (128, 128)
    assert np.array_equal(ps[7], img[128:384, 384:640])


def test_kodak_gives_192_patches(kodak_dir):
    sizes = [Image.open(p).size for p in sorted(kodak_dir.glob("*.png"))]
    assert len(sizes) == 24
    assert sum(F.num_patches(h, w) for w, h in sizes) == 192


def test_small_and_odd_sizes():
    assert F.num_patches(255, 1000) == 0
    assert F.num_patches(256, 256) == 1  # no room for the shifted pass
    assert F.num_patches(384, 384) == 2  # one on the grid, one shifted
    assert len(F.patches(np.zeros((384, 640, 3), np.uint8))) == F.num_patches(384, 640) == 4


def test_offline_fid_rows_are_unavailable(tmp_path):
    enc = make_encode_table(tmp_path / "enc", sizes=((256, 384),))
    out = tmp_path / "fid.csv"
    assert F.main(["--encode-csv", str(enc), "--out", str(out), "--cache", str(tmp_path / "empty")]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == TIDY_COLUMNS
    assert (df["image"] == DATASET_IMAGE).all() and df["lower_better"].all()
    # SWD (in the default metrics) needs no weights: its rows are filled offline
    swd = df[df["metric"].str.startswith("swd")]
    by_metric = swd.set_index("metric")["status"]
    assert by_metric["swd"] == by_metric["swd_l0"] == "ok"
    assert by_metric["swd_ci_low"] == "unavailable: swd_ci_low undefined for 1 image(s)"  # no bootstrap
    df = df[~df["metric"].str.startswith("swd")]
    assert sorted(df["metric"]) == ["fid", "kid"]
    assert df["value"].isna().all()
    assert df["status"].str.contains("inception-2015-12-05.pt").all()
    assert df["status"].str.startswith("unavailable: fid weights not available").all()


def _mean_term(mu1, s1, mu2, s2, eps=1e-6):
    """Stand-in for clean-fid's frechet_distance, whose 2048x2048 sqrtm takes ~30 s on one core (the
    real one runs in the slow test below): the mean term of FID, enough to check the plumbing."""
    return float(((mu1 - mu2) ** 2).sum())


def test_seeded_inception_fills_fid_and_kid(tmp_path, monkeypatch):
    """Random TorchScript 'Inception' in the cache: clean-fid's wrapper, resize and KID run for real."""
    import cleanfid.fid

    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("inception",))
    calls = []

    def spy(mu1, s1, mu2, s2, eps=1e-6):
        calls.append((mu1.shape, s1.shape))
        return _mean_term(mu1, s1, mu2, s2)

    monkeypatch.setattr(cleanfid.fid, "frechet_distance", spy)
    enc = make_encode_table(tmp_path / "enc", sizes=((256, 384), (256, 512)), failed=0)
    df = F.compute(read_encode_table(enc), cache=tmp_path / "cache", feature_cache=tmp_path / "feats")
    assert calls == [((2048,), (2048, 2048))]  # 3 patches each side -> one 2048-d Frechet distance
    assert (df["status"] == "ok").all() and np.isfinite(df["value"]).all()
    assert df.loc[df.metric == "fid", "value"].item() > 0
    assert df["bpp"].iloc[0] == pytest.approx(read_encode_table(enc)["bpp"].mean())
    # the originals' features were cached and are reused: same numbers, KID seeded
    again = F.compute(read_encode_table(enc), cache=tmp_path / "cache", feature_cache=tmp_path / "feats")
    assert len(list((tmp_path / "feats").glob("*.npy"))) == 1
    pd.testing.assert_frame_equal(df, again)


def test_identical_reconstruction_gives_identical_statistics(tmp_path, monkeypatch):
    """Originals and reconstructions go through exactly the same patching, resize and network."""
    import cleanfid.fid

    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("inception",))
    seen = []

    def spy(mu1, s1, mu2, s2, eps=1e-6):
        seen.append(np.allclose(mu1, mu2) and np.allclose(s1, s2))
        return 0.0

    monkeypatch.setattr(cleanfid.fid, "frechet_distance", spy)
    enc = make_encode_table(tmp_path / "enc", sizes=((256, 512), (256, 512)), noise=0.0)
    F.compute(read_encode_table(enc), cache=tmp_path / "cache")
    assert seen == [True]


def test_images_without_reconstruction_make_fid_unavailable(tmp_path, monkeypatch):
    """FID over a subset of the images would not be comparable with the other rate points."""
    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("inception",))
    enc = make_encode_table(tmp_path / "enc", sizes=((256, 384),), failed=1)
    df = F.compute(read_encode_table(enc), cache=tmp_path / "cache")
    assert df["value"].isna().all()
    assert df["status"].str.contains("1 of 2 images have no reconstruction").all()


@pytest.mark.slow
def test_seeded_inception_with_clean_fid_frechet_distance(tmp_path, monkeypatch):
    """The real clean-fid Frechet distance (scipy sqrtm of a 2048x2048 matrix) on seeded features."""
    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("inception",))
    enc = make_encode_table(tmp_path / "enc", sizes=((512, 512), (512, 768)))
    df = F.compute(read_encode_table(enc), cache=tmp_path / "cache")
    assert (df["status"] == "ok").all() and df.loc[df.metric == "fid", "value"].item() > 0
