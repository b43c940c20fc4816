"""SWD on Laplacian-pyramid patch descriptors (cgdm.evaluation.realism) on synthetic images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cgdm.evaluation import DATASET_IMAGE
from cgdm.evaluation import fid as F
from cgdm.evaluation import realism as R
from cgdm.evaluation.tidy import shown_metrics, validate_tidy

from helpers.evaluation import make_encode_table


def _textures(n: int = 6, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[np.ndarray]:
    """Natural-ish images: smooth random fields at several scales plus fine texture, 8-bit RGB."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = sum(ndimage.gaussian_filter(rng.normal(0, 1, (*size, 3)), (s, s, 0)) * s for s in (1, 3, 8))
        img = (img - img.min()) / (img.max() - img.min()) * 255
        out.append(img.astype(np.uint8))
    return out


def _blur(images, sigma):
    return [np.clip(ndimage.gaussian_filter(x.astype(float), (sigma, sigma, 0)), 0, 255) for x in images]


def _noise(images, sd, seed=1):
    rng = np.random.default_rng(seed)
    return [np.clip(x + rng.normal(0, sd, x.shape), 0, 255) for x in images]


@pytest.fixture(scope="module")
def images():
    return _textures()


def test_identical_sets_give_zero(images):
    res = R.swd(images, [x.copy() for x in images])
    assert res.value == 0.0 and (res.levels == 0).all()
    assert res.ci_low == 0.0 and res.ci_high == 0.0


def test_blur_and_noise_increase_it_and_more_blur_more(images):
    base = R.swd(_noise(images, 0.5), images).value  # (near-)invisible change
    b1, b2, b3 = (R.swd(_blur(images, s), images).value for s in (0.7, 1.5, 3.0))
    n1, n2 = (R.swd(_noise(images, s), images).value for s in (4.0, 12.0))
    assert base < b1 < b2 < b3
    assert base < n1 < n2
    assert b1 > 2 * base and n1 > 2 * base


def test_symmetric_and_deterministic(images):
    rec = _blur(images, 1.0)
    ab, ba = R.swd(rec, images), R.swd(images, rec)
    assert ab.value == pytest.approx(ba.value, rel=1e-12)
    np.testing.assert_allclose(ab.levels, ba.levels, rtol=1e-12)
    assert (ab.ci_low, ab.ci_high) == pytest.approx((ba.ci_low, ba.ci_high), rel=1e-12)
    again = R.swd(rec, images)
    assert again.value == ab.value and again.ci_high == ab.ci_high
    other_seed = R.swd(rec, images, seed=1)
    assert other_seed.value != ab.value and other_seed.value == pytest.approx(ab.value, rel=0.25)


def test_interval_brackets_the_value_and_per_level_values(images):
    res = R.swd(_blur(images, 1.5), images)
    assert 0 <= res.ci_low < res.value < res.ci_high
    assert res.value == pytest.approx(res.levels.mean())
    # 96 px short side: 96, 48, 24 px levels (12 px would be below 16)
    assert len(res.levels) == 3 and res.level_sizes == [(96, 128), (48, 64), (24, 32)]
    assert res.levels[0] > res.levels[-1]  # blur removes fine detail: the finest level moves most
    names = R.metric_names(3)
    assert set(res.as_metrics()) == set(names) == {"swd", "swd_ci_low", "swd_ci_high", "swd_l0", "swd_l1",
                                                   "swd_l2"}
    assert [R.is_detail_metric(m) for m in names] == [False, True, True, True, True, True]


def test_num_levels():
    assert R.num_levels(512, 768) == 6  # Kodak: 512 ... 16 px (Karras: 1024 ... 16 = 7 levels)
    assert R.num_levels(1024, 1024) == 7
    assert R.num_levels(15, 400) == 0 and R.num_levels(16, 16) == 1 and R.num_levels(30, 64) == 1
    assert R.num_levels(31, 64) == 2  # [::2] keeps 16 of 31 rows


@pytest.mark.parametrize("shape", [(64, 64), (57, 83)])
def test_laplacian_pyramid_reconstructs_the_image(shape):
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3)).astype(np.uint8)
    pyr = R.laplacian_pyramid(img, 3)
    assert [p.shape for p in pyr][0] == (3, *shape)
    rec = pyr[-1]
    for level in reversed(pyr[:-1]):
        rec = level + R.pyr_up(rec, level.shape[-2:])
    np.testing.assert_allclose(rec.transpose(1, 2, 0), img, atol=1e-3)
    # band-pass levels have (near) zero mean; the residual keeps the image's mean
    assert abs(pyr[0].mean()) < 2 and pyr[-1].mean() == pytest.approx(img.mean(), rel=0.05)


def test_bootstrap_distance_with_unit_weights_is_the_sorted_w1():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (40, 5)), rng.normal(0.3, 1.2, (40, 5))
    dirs = R.directions(5, 16, rng)
    boot = R._BootLevel(a @ dirs, b @ dirs, np.repeat(np.arange(4), 10))
    assert boot.distance(np.ones(4)) / 40 == pytest.approx(R.sliced_wasserstein(a, b, dirs), rel=1e-10)
    # weights 2, 0, 1, 1 on the images == the sorted W1 of the resampled (duplicated) sets
    w = np.array([2.0, 0.0, 1.0, 1.0])
    idx = np.concatenate([np.arange(0, 10), np.arange(0, 10), np.arange(20, 40)])
    assert boot.distance(w) / 40 == pytest.approx(R.sliced_wasserstein(a[idx], b[idx], dirs), rel=1e-10)


def test_bad_inputs_are_named():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(R.RealismError, match="shape"):
        R.swd([img], [np.zeros((32, 40, 3), np.uint8)])
    with pytest.raises(R.RealismError, match="1 originals"):
        R.swd([img, img], [img])
    with pytest.raises(R.RealismError, match="at least 16x16"):
        R.swd([img[:8]], [img[:8]])


def test_kodak_speed_budget_constants():
    """The defaults are Karras': 7x7 neighbourhoods, 128 per image and level, 4 x 128 directions, x 1e3."""
    assert (R.NHOOD_SIZE, R.NHOODS_PER_IMAGE, R.DIR_REPEATS, R.DIRS_PER_REPEAT, R.SCALE) == (7, 128, 4, 128, 1e3)


def test_distribution_rows_of_an_encode_table(tmp_path):
    enc = make_encode_table(tmp_path / "enc", sizes=((64, 80), (80, 64), (64, 64)), noise=8.0)
    out = tmp_path / "swd.csv"
    assert F.main(["--encode-csv", str(enc), "--out", str(out), "--metrics", "swd"]) == 0
    df = validate_tidy(pd.read_csv(out, dtype={"rate": str}))
    assert list(df["metric"]) == ["swd", "swd_ci_low", "swd_ci_high", "swd_l0", "swd_l1", "swd_l2"]
    assert (df["status"] == "ok").all() and (df["image"] == DATASET_IMAGE).all() and df["lower_better"].all()
    v = df.set_index("metric")["value"]
    assert v["swd_ci_low"] <= v["swd"] <= v["swd_ci_high"] and v["swd"] > 0
    assert shown_metrics(df) == ["swd"]


def test_missing_reconstructions_and_tiny_images_give_unavailable_rows(tmp_path):
    enc = make_encode_table(tmp_path / "a", sizes=((64, 64), (64, 64)), failed=1)
    df = F.compute(pd.read_csv(enc, dtype={"rate": str}), metrics=["swd"])
    assert len(df) == 3 + 3 and df["value"].isna().all()  # 3 levels of 64 px images
    assert df["status"].str.contains("1 of 3 images have no reconstruction").all()
    enc = make_encode_table(tmp_path / "b", sizes=((12, 40),))
    df = F.compute(pd.read_csv(enc, dtype={"rate": str}), metrics=["swd"])
    assert list(df["metric"]) == ["swd", "swd_ci_low", "swd_ci_high"]
    assert df["status"].str.contains("swd: SWD needs images of at least 16x16 px").all()


def test_rd_tables_show_swd_with_its_interval_and_a_per_level_table(tmp_path):
    from cgdm.evaluation import tables

    frames = [F.compute(pd.read_csv(make_encode_table(tmp_path / r, sizes=((64, 64), (64, 80)), noise=n,
                                                      rate=r), dtype={"rate": str}), metrics=["swd"])
              for r, n in (("0", 12.0), ("1", 3.0))]
    df = validate_tidy(pd.concat(frames, ignore_index=True))
    rd, levels = tables.rd_tables(df)
    header = list(rd.frame.columns)
    assert "SWD [x1e3] \u2193" in header and not any("L0" in c or "CI" in c for c in header)
    cell = rd.frame["SWD [x1e3] \u2193"].iloc[0]
    assert cell.count("[") == 1 and cell.endswith("]")  # "value [low, high]"
    assert levels.caption == "toyset: SWD per pyramid level"
    assert list(levels.frame.columns) == ["codec", "rate", "bpp", "SWD (mean)", "95 % CI", "level 0", "level 1",
                                          "level 2"]
    v = df[df.metric == "swd"].set_index("rate")["value"]
    assert v["0"] > v["1"]  # more noise, further from the originals' patch statistics
    assert "level 0 = full resolution" in levels.markdown()
