"""BD-rate (cgdm.evaluation.bdrate): known values, published curves, refusals, bootstrap, CLI; one test
per rule of the module docstring (overlap refusal, Akima/cubic flag, usable bootstrap resamples).

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
    def q(r):
        return 10 * np.log10(r) + 37

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
    for r, (rate, q) in enumerate(zip(ANCHOR_RATE, ANCHOR_PSNR, strict=True)):
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
        assert r.status == "ok" and r.n_images == 12 and r.n_boot == r.n_boot_drawn == 200 and r.ci_status == "ok"
        assert r.ci_low < r.bd_rate < r.ci_high
        assert r.bd_rate == pytest.approx(-20, abs=3)


def test_unavailable_metric_propagates_its_reason():
    a = _per_image_rows("anchor", 1.0, metric="lpips")
    t = _per_image_rows("test", 0.8, metric="lpips")
    t["status"], t["value"] = "unavailable: lpips weights not available", np.nan
    table = B.bd_rate_table(pd.concat([a, t]), "anchor", methods=("akima",))
    assert table["status"].tolist() == ["unavailable: lpips weights not available"]
    assert np.isnan(table["bd_rate"].item())


def _bjontegaard(anchor: Path, test: Path, key: str, method: str) -> float:
    a, t = (json.loads(p.read_text())["results"] for p in (anchor, test))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bjontegaard's own (union) overlap warning
        return bjontegaard.bd_rate(a["bpp"], a[key], t["bpp"], t[key], method=method, min_overlap=0)


def test_cli_on_compressai_json_files(capsys):
    """`cgdm bd-rate vtm.json bmshj2018-hyperprior.json` prints Akima and cubic side by side and the overlap;
    the numbers are bjontegaard's own on these files (Akima PSNR +30.47 % before the overlap/bootstrap rules
    were added, unchanged by them since the curves overlap fully)."""
    assert B.main([str(VTM), str(HYPERPRIOR)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key, metric in (("psnr-rgb", "psnr"), ("ms-ssim-rgb", "ms_ssim")):
        line = next(ln for ln in lines if ln.startswith(f"{metric} "))
        akima, cubic = (_bjontegaard(VTM, HYPERPRIOR, key, m) for m in ("akima", "cubic"))
        assert f"akima {akima:+.2f} %" in line and f"cubic {cubic:+.2f} %" in line and "overlap 100 %" in line
        # MS-SSIM: Akima +12.3 % vs cubic +20.6 %, flagged; PSNR: +30.5 vs +30.1, not flagged
        assert ("! Akima and cubic differ" in line) == (abs(akima - cubic) > B.DISAGREE_MARGIN)
    assert "+30.47 %" in lines[0]  # regression anchor (bjontegaard 1.3.0)
    assert any("! Akima and cubic differ by 8.3 points" in ln for ln in lines)


def test_vendored_compressai_files_are_the_ones_the_issue_names():
    vendored = Path(__file__).parent.parent / "baselines" / "published_data" / "compressai" / "kodak"
    for f in (VTM, HYPERPRIOR):
        assert (vendored / f.name).read_bytes() == f.read_bytes()


# -- rule 1: overlap ------------------------------------------------------------------------------------


def test_overlap_is_relative_to_the_shorter_curve():
    assert B.overlap([0, 10], [2, 4]) == 1.0  # the short curve lies inside the long one
    assert B.overlap([0, 10], [8, 18]) == pytest.approx(0.2)
    assert B.overlap([0, 10], [11, 20]) == 0.0


@pytest.mark.parametrize("shift, refused", [(0.0, False), (3.0, False), (6.0, True), (9.9, True)])
def test_refuses_below_minimum_overlap(shift, refused):
    """Anchor PSNR 27-37.1 dB; a test curve shifted up by ``shift`` dB shares (10.1 - shift) / 10.1."""
    test_q = ANCHOR_PSNR + shift
    share = (ANCHOR_PSNR.max() - test_q.min()) / np.ptp(ANCHOR_PSNR)
    if refused:
        with pytest.raises(B.BDRateError, match=rf"^overlap {100 * share:.0f} % < 50 %;"):
            B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, test_q)
        # the threshold is a parameter; 0 keeps the old behaviour (any overlap above zero)
        assert np.isfinite(B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, test_q, min_overlap=0))
    else:
        assert np.isfinite(B.bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, test_q))


def test_refused_overlap_shows_its_reason_in_table_and_cli(tmp_path, capsys):
    far = _per_image_rows("far", 1.0)
    far["value"] += 7.0  # shares (10.1 - 7) / 10.1 = 31 % of the anchor's quality range
    df = pd.concat([_per_image_rows("anchor", 1.0), far])
    table = B.bd_rate_table(df, "anchor", n_boot=0)
    assert (table["status"].str.startswith("refused: overlap 3")).all()
    assert table["bd_rate"].isna().all() and (table["overlap"] < 0.5).all()
    from cgdm.evaluation import tables

    cell = tables.bd_tables(table)[0].frame.set_index("codec").loc["far"]
    assert cell["akima [95 % CI]"].startswith("refused: overlap 3") and cell["akima [95 % CI]"].endswith("< 50 %")
    csv = tmp_path / "r.csv"
    df.to_csv(csv, index=False)
    assert B.main(["anchor", "far", "--csv", str(csv), "--bootstrap", "0"]) == 1  # nothing valid
    assert "refused: overlap 3" in capsys.readouterr().out
    assert B.main(["anchor", "far", "--csv", str(csv), "--bootstrap", "0", "--min-overlap", "0.2"]) == 0


# -- rule 2: Akima vs cubic ----------------------------------------------------------------------------


def test_akima_cubic_disagreement_is_flagged():
    hp = B.from_compressai_json(HYPERPRIOR, "kodak", "hyperprior")
    table = B.bd_rate_table(pd.concat([B.from_compressai_json(VTM, "kodak", "vtm"), hp]), "vtm")
    for metric, flagged in (("psnr", False), ("ms_ssim", True)):
        rows = table[table["metric"] == metric].set_index("method")
        diff = rows.loc["akima", "bd_rate"] - rows.loc["cubic", "bd_rate"]
        assert np.allclose(rows["akima_cubic_diff"], diff)
        assert B.disagrees(diff) is flagged
    from cgdm.evaluation import tables

    blocks = {b.caption: b for b in tables.bd_tables(table)}
    ms = blocks["kodak, MS-SSIM (RGB): BD-rate vs vtm"]
    assert ms.frame["akima - cubic"].item().endswith(" !")
    assert any("differ by more than 5 points" in n for n in ms.notes)
    psnr = blocks["kodak, PSNR (RGB) [dB]: BD-rate vs vtm"]
    assert "!" not in psnr.frame["akima - cubic"].item()
    assert list(psnr.frame.columns[:3]) == ["codec", "akima [95 % CI]", "cubic [95 % CI]"]
    # one method only: no difference column, nothing flagged
    single = B.bd_rate_table(pd.concat([B.from_compressai_json(VTM, "kodak", "vtm"), hp]), "vtm", methods=("akima",))
    assert single["akima_cubic_diff"].isna().all()


# -- rule 3: honest bootstrap ---------------------------------------------------------------------------


def test_bootstrap_interval_rule():
    boots = np.linspace(-10, 10, 1000)
    low, high, status = B.bootstrap_interval(boots, 1000)
    assert status == "ok" and (low, high) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])))
    # 5 % unusable: widened, as if every unusable resample lay beyond each bound
    part = boots[25:975]
    low_w, high_w, status = B.bootstrap_interval(part, 1000)
    assert status == "widened: 950/1000 usable"
    assert low_w <= np.quantile(part, 0.025) and high_w >= np.quantile(part, 0.975)
    assert (low_w, high_w) == (part.min(), part.max())  # 50 unusable > the 25 of a 2.5 % tail
    low_w, high_w, _ = B.bootstrap_interval(boots[:990], 1000)  # 10 unusable < 25: an inner quantile
    assert low_w == pytest.approx(np.quantile(boots[:990], 15 / 990))
    assert high_w == pytest.approx(np.quantile(boots[:990], 975 / 990))
    # fewer than 90 % usable: refused
    low, high, status = B.bootstrap_interval(boots[:887], 1000)
    assert np.isnan(low) and np.isnan(high) and status == "refused: 887/1000 resamples usable < 90 %"


def _flat_top_rows(codec, gap, sigma, seed, n_images=12):
    """Per-image rows whose top two rate points are ``gap`` dB apart with per-image noise ``sigma``: some
    bootstrap resamples then put the top point below the one before (non-monotonic, unusable)."""
    q = ANCHOR_PSNR.copy()
    q[4] = q[3] + gap
    rng = np.random.default_rng(seed)
    rows = [dict(dataset="kodak", image=f"im{i}", codec=codec, kind="learned", rate=str(r), bpp=rate, metric="psnr",
                 value=qq + rng.normal(0, sigma), lower_better=False, status="ok")
            for r, (rate, qq) in enumerate(zip(ANCHOR_RATE, q, strict=True)) for i in range(n_images)]
    return pd.DataFrame(rows).reindex(columns=TIDY_COLUMNS)


@pytest.mark.parametrize("gap, expected", [(0.5, "refused: "), (1.3, "widened: "), (2.5, "ok")])
def test_bootstrap_reports_usable_resamples_and_widens_or_refuses(gap, expected):
    df = pd.concat([_flat_top_rows("anchor", gap, 1.0, seed=0), _per_image_rows("test", 0.8, seed=1)])
    r = B.bd_rate_table(df, "anchor", methods=("akima",), n_boot=200).iloc[0]
    assert r.status == "ok" and np.isfinite(r.bd_rate)  # the point estimate stands in every case
    assert r.n_boot_drawn == 200 and str(r.ci_status).startswith(expected)
    usable = r.n_boot / r.n_boot_drawn
    if expected == "ok":
        assert r.n_boot == 200 and r.ci_low < r.bd_rate < r.ci_high
    elif expected == "widened: ":
        assert 0.9 <= usable < 1 and r.ci_status == f"widened: {r.n_boot}/200 usable" and r.ci_low < r.ci_high
    else:
        assert usable < 0.9 and np.isnan(r.ci_low) and np.isnan(r.ci_high)
    from cgdm.evaluation import tables

    cell = tables.bd_tables(B.bd_rate_table(df, "anchor", methods=("akima",), n_boot=200))[0].frame["resamples usable"]
    assert cell.item().startswith(f"{r.n_boot}/200") and (("CI" in cell.item()) == (expected != "ok"))


def test_cli_on_tidy_csv(tmp_path, capsys):
    df = pd.concat([_per_image_rows("jpeg", 1.0), _per_image_rows("hyperprior", 0.7)])
    csv = tmp_path / "results.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "bd.csv"
    assert B.main(["jpeg", "hyperprior", "--csv", str(csv), "--bootstrap", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hyperprior vs jpeg" in printed and "95 % paired bootstrap" in printed
    assert "50/50 resamples usable" in printed
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
