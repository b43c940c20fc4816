"""Per-image metrics (cgdm.evaluation.metrics): pyiqa configured for RGB, offline behaviour, seeded cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cgdm import weights as W
from cgdm.evaluation import metrics as M
from cgdm.results import TIDY_COLUMNS

from helpers.evaluation import make_encode_table, seed_weights_cache


@pytest.fixture
def encode_csv(tmp_path):
    return make_encode_table(tmp_path / "enc", failed=1)


def test_offline_run_fills_psnr_msssim_and_marks_lpips_dists_unavailable(tmp_path, encode_csv):
    out = tmp_path / "metrics.csv"
    rc = M.main(["--encode-csv", str(encode_csv), "--out", str(out), "--metrics", "psnr,ms_ssim,lpips,dists",
                 "--cache", str(tmp_path / "empty-cache")])
    assert rc == 0
    df = pd.read_csv(out, dtype={"rate": str})
    assert list(df.columns) == TIDY_COLUMNS
    good = df[df["image"].str.startswith("im")]
    for metric in ("psnr", "ms_ssim"):
        rows = good[good["metric"] == metric]
        assert len(rows) == 2 and (rows["status"] == "ok").all() and rows["value"].notna().all()
    assert good[good.metric == "psnr"]["value"].between(25, 45).all()
    for metric in ("lpips", "dists"):
        rows = good[good["metric"] == metric]
        assert rows["value"].isna().all()
        assert rows["status"].str.startswith(f"unavailable: {metric} weights not available").all()
        assert rows["status"].str.contains("--fetch").all()
    # lower_better comes from pyiqa
    lb = good.groupby("metric")["lower_better"].first()
    assert not lb["psnr"] and not lb["ms_ssim"] and lb["lpips"] and lb["dists"]
    # an image the codec could not encode keeps its reason on every metric row
    bad = df[df["image"] == "bad0"]
    assert len(bad) == 4 and bad["value"].isna().all()
    assert (bad["status"] == "unavailable: toy codec binary not found").all()
    # provenance carried from the encode rows
    assert (good["codec_version"] == "toy-1").all() and (good["code_revision"] == "rev").all()


def test_psnr_is_rgb_peak_255_and_ms_ssim_matches_compressai(tmp_path):
    """PSNR: one MSE over R, G, B at peak 255; MS-SSIM: RGB like pytorch_msssim (CompressAI), not luma."""
    import pytorch_msssim
    import torch

    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (176, 200, 3), dtype=np.uint8)
    rec = ref.copy()
    rec[..., 2] = np.clip(rec[..., 2].astype(int) + rng.integers(-20, 21, rec.shape[:2]), 0, 255)  # blue only
    m = M.ImageMetrics(["psnr", "ms_ssim"], cache=tmp_path)
    values = m(rec, ref)
    mse = np.mean((rec.astype(float) - ref.astype(float)) ** 2)
    assert values["psnr"][0] == pytest.approx(10 * np.log10(255.0**2 / mse), abs=1e-3)

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].double()

    expected = pytorch_msssim.ms_ssim(t(rec), t(ref), data_range=255).item()
    assert values["ms_ssim"][0] == pytest.approx(expected, abs=1e-5)
    # pyiqa's default MS-SSIM is luma-only and sees a blue-only error much less: not what we measure
    import pyiqa

    luma = pyiqa.create_metric("ms_ssim", device="cpu")(t(rec).float() / 255, t(ref).float() / 255).item()
    assert (1 - luma) < 0.5 * (1 - values["ms_ssim"][0])


def test_float32_ms_ssim_matches_pyiqa_float64_module():
    """MSSSIM is pyiqa's MS-SSIM evaluated in float32: same value as pyiqa's (float64) RGB module."""
    import pyiqa
    import torch

    rng = np.random.default_rng(2)
    ref = rng.integers(0, 256, (1, 3, 180, 170)).astype(np.float32) / 255
    rec = np.clip(ref + rng.normal(0, 0.05, ref.shape), 0, 1).astype(np.float32)
    rec = np.round(rec * 255) / 255
    x, y = torch.from_numpy(rec), torch.from_numpy(ref)
    reference = pyiqa.create_metric("ms_ssim", test_y_channel=False, device="cpu")(x, y).item()
    assert M.MSSSIM()(x, y).item() == pytest.approx(reference, abs=1e-5)


def test_ms_ssim_small_image_is_unavailable_not_an_error(tmp_path):
    img = np.zeros((120, 160, 3), np.uint8)
    values = M.ImageMetrics(["psnr", "ms_ssim"], cache=tmp_path)(img, img)
    assert values["psnr"][1] == "ok"
    assert np.isnan(values["ms_ssim"][0]) and "at least 161 px" in values["ms_ssim"][1]


def test_shape_mismatch_is_an_error(tmp_path):
    m = M.ImageMetrics(["psnr"], cache=tmp_path)
    with pytest.raises(ValueError, match="shape"):
        m(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12, 3), np.uint8))


def test_unknown_metric_is_rejected_with_the_fix(tmp_path, encode_csv, capsys):
    with pytest.raises(SystemExit):
        M.main(["--encode-csv", str(encode_csv), "--out", str(tmp_path / "o.csv"), "--metrics", "psnr,lpipz"])
    assert "unknown metrics ['lpipz']" in capsys.readouterr().err


def test_no_reference_metric_without_weights_is_unavailable_without_network(tmp_path, monkeypatch):
    """pyiqa would download NIQE's parameters; downloads are blocked, so the metric is unavailable."""
    import torch.hub

    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: calls.append(a))
    m = M.ImageMetrics(["niqe"], cache=tmp_path)
    assert "niqe" in m.unavailable and "would download" in m.unavailable["niqe"]
    assert calls == []  # our guard replaced the download function while the metric was built
    assert torch.hub.download_url_to_file is not None


def test_wrong_weight_file_is_never_used(tmp_path):
    """A file at the right place with the wrong content (e.g. random weights) -> unavailable, no number."""
    import torch

    for key in ("lpips_alex_v0.1", "alexnet"):
        path = W.WEIGHTS[key].path(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": torch.zeros(3)}, path)
    m = M.ImageMetrics(["lpips"], cache=tmp_path)
    assert "lpips" in m.unavailable
    reason = m.unavailable["lpips"]
    assert "bytes, expected" in reason or "sha256" in reason


def test_seeded_cache_fills_lpips(tmp_path, monkeypatch, encode_csv):
    """Random weights in the cache (sha256 table pointed at them): the real pyiqa LPIPS path runs."""
    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("lpips_alex_v0.1", "alexnet"))
    out = tmp_path / "m.csv"
    assert M.main(["--encode-csv", str(encode_csv), "--out", str(out), "--metrics", "lpips",
                   "--cache", str(tmp_path / "cache")]) == 0
    df = pd.read_csv(out)
    good = df[df["image"].str.startswith("im")]
    assert (good["status"] == "ok").all() and np.isfinite(good["value"]).all() and (good["value"] > 0).all()


def test_seeded_cache_fills_dists(tmp_path, monkeypatch):
    seed_weights_cache(tmp_path / "cache", monkeypatch, keys=("dists", "vgg16"))
    m = M.ImageMetrics(["dists"], cache=tmp_path / "cache")
    assert m.unavailable == {}
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    same, status = m(ref, ref)["dists"]
    other, _ = m(255 - ref, ref)["dists"]
    assert status == "ok" and abs(same) < 1e-4 < other
