"""BD-rate (cgdm.evaluation.bdrate): known values, published curves, refusals, bootstrap, CLI.

The published curves are copies (tests/data/eval/compressai-kodak/, see its README) of CompressAI's
Kodak results, taken from ../shared/reference/compressai/kodak/ so the test does not read ../shared.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
import pytest

from cgdm.evaluation import bdrate as B
from cgdm.results import TIDY_COLUMNS

DATA = Path(__file__).parent / "data" / "eval" / "compressai-kodak"
VTM = DATA / "vtm.json"
HYPERPRIOR = DATA / "compressai-bmshj2018-hyperprior_mse_cuda.json"

ANCHOR_RATE = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
ANCHOR_PSNR = np.array([27.0, 29.5, 32.0, 34.6, 37.1])


@pytest.mark.parametrize("method", B.METHODS)
@pytest.mark.parametrize("factor", [0.9, 1.25])
def test_known_value_constant_rate_factor(method, factor):
    """A test curve needing ``factor`` x the anchor's rate at every quality has BD-rate (factor-1) x 100 %."""
    bd = B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, factor * ANCHOR_RATE, ANCHOR_PSNR, method=method)
    assert bd == pytest.approx(100 * (factor - 1), abs=1e-9)


@pytest.mark.parametrize("method", B.METHODS)
def test_known_value_with_shifted_rate_points(method):
    """Same underlying curve q = 10 log10(r) + 37 sampled at other rates, 20 % cheaper: -20 % (exact for
    cubic, whose fit of a log-linear curve is exact; Akima is exact on straight lines too)."""
    rt = np.array([0.15, 0.3, 0.5, 1.0, 1.4])
    q = lambda r: 10 * np.log10(r) + 37
    bd = B.bd_rate(ANCHOR_RATE, q(ANCHOR_RATE), 0.8 * rt, q(rt), method=method)
    assert bd == pytest.approx(-20.0, abs=1e-6)


def test_lower_is_better_metrics_are_negated():
    lpips = 0.5 - 0.1 * np.log2(ANCHOR_RATE / 0.1)  # decreasing with rate
    bd = B.bd_rate(ANCHOR_RATE, lpips, 0.9 * ANCHOR_RATE, lpips, lower_better=True)
    assert bd == pytest.approx(-10.0, abs=1e-9)
    with pytest.raises(B.BDRateError, match="not monotonic"):
        B.bd_rate(ANCHOR_RATE, lpips, 0.9 * ANCHOR_RATE, lpips, lower_better=False)


@pytest.mark.parametrize("method", B.METHODS)
def test_published_vtm_vs_hyperprior_matches_bjontegaard(method):
    vtm, hp = (json.loads(p.read_text())["results"] for p in (VTM, HYPERPRIOR))
    table = B.bd_rate_table(pd.concat([B.from_compressai_json(VTM, "kodak", "vtm"),
                                       B.from_compressai_json(HYPERPRIOR, "kodak", "hyperprior")]),
                            "vtm", methods=(method,))
    for key, metric in (("psnr-rgb", "psnr"), ("ms-ssim-rgb", "ms_ssim")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bjontegaard warns about < 75 % overlap
            ref = bjontegaard.bd_rate(vtm["bpp"], vtm[key], hp["bpp"], hp[key], method=method, min_overlap=0)
        row = table[table["metric"] == metric].iloc[0]
        assert row.status == "ok"
        assert row.bd_rate == pytest.approx(ref, abs=0.1)
    # regression anchor: value of bjontegaard 1.3.0 on these files (hyperprior needs ~30 % more bits than VTM)
    psnr = table[table["metric"] == "psnr"]["bd_rate"].item()
    assert psnr == pytest.approx({"akima": 30.47, "cubic": 30.14}[method], abs=0.1)


def test_refuses_too_few_points():
    with pytest.raises(B.BDRateError, match="3 rate points; BD-rate needs at least 4"):
        B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE[:3], ANCHOR_PSNR[:3])


def test_refuses_curves_that_do_not_overlap():
    with pytest.raises(B.BDRateError, match="do not overlap in quality"):
        B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR + 20)


def test_refuses_non_monotonic_curve():
    bumpy = ANCHOR_PSNR.copy()
    bumpy[2] = bumpy[3] + 1
    with pytest.raises(B.BDRateError, match="test is not monotonic"):
        B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, bumpy)


def _per_image_rows(codec, factor, n_images=12, seed=0, metric="psnr"):
    """Per-image tidy rows: image i has quality offset o_i; the codec needs ``factor`` x the rate."""
    offsets = np.random.default_rng(100).normal(0, 1.5, n_images)  # the same images for every codec
    rng = np.random.default_rng(seed)
    rows = []
    for r, (rate, q) in enumerate(zip(ANCHOR_RATE, ANCHOR_PSNR)):
        for i, o in enumerate(offsets):
            rows.append(dict(dataset="kodak", image=f"im{i}", codec=codec, kind="learned", rate=str(r),
                             bpp=factor * rate * np.exp(rng.normal(0, 0.05)), metric=metric,
                             value=q + o + rng.normal(0, 0.1), lower_better=False, status="ok"))
    return pd.DataFrame(rows).reindex(columns=TIDY_COLUMNS)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible():
    df = pd.concat([_per_image_rows("anchor", 1.0, seed=0), _per_image_rows("test", 0.8, seed=1)])
    t1 = B.bd_rate_table(df, "anchor", n_boot=200, seed=3)
    t2 = B.bd_rate_table(df, "anchor", n_boot=200, seed=3)
    pd.testing.assert_frame_equal(t1, t2)
    for _, r in t1.iterrows():
        assert r.status == "ok" and r.n_images == 12 and r.n_boot > 150
        assert r.ci_low < r.bd_rate < r.ci_high
        assert r.bd_rate == pytest.approx(-20, abs=3)


def test_unavailable_metric_propagates_its_reason():
    a = _per_image_rows("anchor", 1.0, metric="lpips")
    t = _per_image_rows("test", 0.8, metric="lpips")
    t["status"], t["value"] = "unavailable: lpips weights not available", np.nan
    table = B.bd_rate_table(pd.concat([a, t]), "anchor", methods=("akima",))
    assert table["status"].tolist() == ["unavailable: lpips weights not available"]
    assert np.isnan(table["bd_rate"].item())


def test_cli_on_compressai_json_files(capsys):
    assert B.main([str(VTM), str(HYPERPRIOR), "--method", "akima"]) == 0
    out = capsys.readouterr().out
    assert "psnr" in out and "+30.47 %" in out and "overlap" in out


def test_cli_on_tidy_csv(tmp_path, capsys):
    df = pd.concat([_per_image_rows("jpeg", 1.0), _per_image_rows("hyperprior", 0.7)])
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "bd.csv"
    assert B.main(["jpeg", "hyperprior", "--csv", str(csv), "--bootstrap", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hyperprior vs jpeg" in printed and "95% CI" in printed
    table = pd.read_csv(out)
    assert set(table["method"]) == {"akima", "cubic"} and (table["bd_rate"] < -20).all()


def test_cli_mixes_json_and_csv_and_reports_missing_codec(tmp_path, capsys):
    df = _per_image_rows("mine", 1.0)
    df["bpp"] *= 0.3
    csv = tmp_path / "r.csv"
    df.to_csv(csv, index=False)
    assert B.main([str(VTM), "mine", "--csv", str(csv), "--metric", "psnr", "--bootstrap", "0"]) in (0, 1)
    assert "mine vs vtm" in capsys.readouterr().out
    assert B.main(["nope", "--csv", str(csv)]) == 2
    assert "codecs ['nope'] not found" in capsys.readouterr().err


def test_compressai_json_rows_are_published_tidy_rows():
    df = B.from_compressai_json(VTM, "kodak")
    assert list(df.columns) == TIDY_COLUMNS
    assert set(df["metric"]) == {"psnr", "ms_ssim"} and (df["kind"] == "published").all()
    assert (df["image"] == B.PUBLISHED_IMAGE).all() and len(df) == 16 and df["codec"].iloc[0] == "vtm"
