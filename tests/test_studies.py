"""Re-decode studies (cgdm.evaluation.studies) and their statistics (cgdm.evaluation.paired): the decode
step's reuse of pixels, the study rows, the paired differences to full CGDM with their intervals (known
answers), the ablation / D-P tables and figure."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cgdm import bitstream as bs
from cgdm.evaluation import DATASET_IMAGE, realism, studies, tables
from cgdm.evaluation.paired import dp_points, paired_differences
from cgdm.evaluation.studies import STUDY_TIDY_COLUMNS
from cgdm.imageio import load_image, save_png
from cgdm.results import ENCODE_COLUMNS, write_table
from cgdm.sampling_options import SamplingOptions

VARIANTS = {"full": "cgdm", "no_sff": "cgdm_no_sff"}


def row(codec, image, seed, metric, value, rate="0", setting=None, **extra):
    ok = value is not None and np.isfinite(value)
    r = dict(dataset="kodak", image=image, codec=codec, kind="cgdm", rate=rate, bpp=0.25, metric=metric,
             value=value if ok else np.nan, lower_better=metric != "psnr", status="ok" if ok else "unavailable: x",
             encode_s=1.0, decode_s=1.0, codec_version="v", weights="w", device="cpu", code_revision="r",
             config_hash="h", study="ablations", setting=setting or f"seed{seed}", seed=seed, point=np.nan,
             overrides=json.dumps({"seed": seed}), options=json.dumps({"seed": seed, "tile": 128}),
             decoded_as=setting or f"seed{seed}", bootstrap="")
    r.update(extra)
    return r


def frame(rows):
    return studies.validate_study(pd.DataFrame(rows, columns=STUDY_TIDY_COLUMNS))


DELTAS = np.array([0.5, -0.2, 0.3, 0.1, 0.4])


def psnr_rows():
    rows = []
    for i, delta in enumerate(DELTAS):
        for s in (0, 1, 2):
            full = 30.0 + i + 0.1 * s
            rows.append(row("cgdm", f"im{i}", s, "psnr", full))
            # seed effect -0.05, 0, +0.05: averages out over the three seeds
            rows.append(row("cgdm_no_sff", f"im{i}", s, "psnr", full + delta + 0.05 * (s - 1)))
    return rows


def test_per_image_paired_difference_is_the_t_interval_over_images():
    p = paired_differences(frame(psnr_rows()), VARIANTS)
    v = p[(p["variant"] == "no_sff") & (p["metric"] == "psnr")].iloc[0]
    half = stats.t.ppf(0.975, len(DELTAS) - 1) * DELTAS.std(ddof=1) / np.sqrt(len(DELTAS))
    assert v["diff"] == pytest.approx(DELTAS.mean())
    assert (v["ci_low"], v["ci_high"]) == pytest.approx((DELTAS.mean() - half, DELTAS.mean() + half))
    assert (v["n_images"], v["n_seeds"], v["seeds"], v["method"], v["status"]) == (5, 3, "0,1,2", "t", "ok")
    full_vals = [30.0 + i + 0.1 * s for i in range(5) for s in range(3)]
    assert v["mean"] == pytest.approx(np.mean(full_vals) + DELTAS.mean())
    f = p[(p["variant"] == "full") & (p["metric"] == "psnr")].iloc[0]
    assert f["method"] == "reference" and np.isnan(f["diff"]) and f["mean"] == pytest.approx(np.mean(full_vals))


def test_only_images_and_seeds_both_codecs_have_are_paired():
    rows = [r for r in psnr_rows() if not (r["codec"] == "cgdm_no_sff" and r["image"] == "im4")]
    rows += [row("cgdm_no_sff", "im0", 9, "psnr", 99.0)]  # a seed the full model lacks: not paired
    v = paired_differences(frame(rows), VARIANTS).query("variant == 'no_sff' and metric == 'psnr'").iloc[0]
    assert v["n_images"] == 4 and v["seeds"] == "0,1,2"
    assert v["diff"] == pytest.approx(DELTAS[:4].mean())


def swd_rows(codec, values, boots, images=("im0", "im1")):
    rows = []
    for s, (value, boot) in enumerate(zip(values, boots, strict=True)):
        rows.append(row(codec, DATASET_IMAGE, s, "swd", value, bootstrap=json.dumps(list(boot))))
        rows += [row(codec, im, s, "psnr", 30.0) for im in images]
    return rows


def test_swd_difference_with_one_seed_is_the_paired_image_bootstrap():
    rng = np.random.default_rng(0)
    common = 20 + rng.normal(0, 1, 100)  # what the shared resamples do to both codecs
    e = rng.normal(0, 0.5, 100)  # what they do to the difference
    df = frame(swd_rows("cgdm", [20.0], [common]) + swd_rows("cgdm_no_sff", [23.0], [common + 3 + e]))
    v = paired_differences(df, VARIANTS).query("variant == 'no_sff' and metric == 'swd'").iloc[0]
    half = stats.norm.ppf(0.975) * e.std(ddof=1)
    assert v["diff"] == pytest.approx(3.0)
    assert (v["ci_low"], v["ci_high"]) == pytest.approx((3 - half, 3 + half))
    assert v["method"] == "bootstrap" and v["n_seeds"] == 1 and v["n_images"] == 2
    assert v["mean"] == pytest.approx(23.0)


def test_swd_difference_over_seeds_resamples_the_seeds_too():
    base = np.linspace(19, 21, 100)
    # the same difference for every seed and every image resample: no uncertainty at all
    same = paired_differences(frame(swd_rows("cgdm", [20, 21, 22], [base] * 3)
                                     + swd_rows("cgdm_no_sff", [22, 23, 24], [base + 2] * 3)), VARIANTS)
    s = same.query("variant == 'no_sff' and metric == 'swd'").iloc[0]
    assert (s["diff"], s["ci_low"], s["ci_high"]) == pytest.approx((2.0, 2.0, 2.0))
    # seeds disagree (differences 1, 2, 6), images agree: the interval comes from the seeds alone
    spread = paired_differences(frame(swd_rows("cgdm", [20, 20, 20], [base] * 3)
                                       + swd_rows("cgdm_no_sff", [21, 22, 26], [base + d for d in (1, 2, 6)])),
                                VARIANTS).query("variant == 'no_sff' and metric == 'swd'").iloc[0]
    assert spread["diff"] == pytest.approx(3.0)
    assert spread["ci_low"] < 3.0 < spread["ci_high"]
    # a bootstrap of the mean of 3 values: sd about sd(d) * sqrt(2/3) / sqrt(3)
    expected = stats.norm.ppf(0.975) * np.std([1, 2, 6], ddof=1) * np.sqrt(2 / 3) / np.sqrt(3)
    assert (spread["ci_high"] - spread["ci_low"]) / 2 == pytest.approx(expected, rel=0.2)
    # equals the realism function on the same numbers
    direct = realism.paired_difference([21, 22, 26], [base + d for d in (1, 2, 6)], [20, 20, 20], [base] * 3)
    assert (spread["diff"], spread["ci_low"], spread["ci_high"]) == pytest.approx(direct)


def test_swd_sets_of_different_images_are_not_paired():
    base = np.linspace(19, 21, 100)
    df = frame(swd_rows("cgdm", [20.0], [base]) + swd_rows("cgdm_no_sff", [21.0], [base], images=("im0", "im9")))
    v = paired_differences(df, VARIANTS).query("variant == 'no_sff' and metric == 'swd'").iloc[0]
    assert v["status"].startswith("unavailable") and "not paired" in v["status"] and np.isnan(v["diff"])


def test_ablation_seed_table_shows_means_differences_removals_and_seam():
    base = np.linspace(19, 21, 100)
    rows = psnr_rows() + swd_rows("cgdm", [20, 20, 20], [base] * 3, images=()) + swd_rows(
        "cgdm_no_sff", [21, 22, 26], [base + d for d in (1, 2, 6)], images=())
    rows += [row(c, f"im{i}", s, "seam", 1.0 + (0.5 if c == "cgdm_no_sff" else 0.0))
             for c in VARIANTS.values() for i in range(5) for s in range(3)]
    rows += [row(c, f"im{i}", s, "lpips", None) for c in VARIANTS.values() for i in range(5) for s in range(3)]
    df = frame(rows)
    blocks = tables.ablation_seed_tables(paired_differences(df, VARIANTS), df, VARIANTS)
    assert len(blocks) == 1
    t = blocks[0].frame
    assert list(t["variant"]) == ["full", "no_sff"]
    assert "syntax" in t.loc[1, "removes"] and "nothing" in t.loc[0, "removes"]
    assert t.loc[0, "\u0394 PSNR (RGB) [95 % CI]"] == "ref"
    assert t.loc[1, "\u0394 PSNR (RGB) [95 % CI]"].startswith("+0.22 [")
    assert t.loc[1, "Seam ratio \u2193"] == "1.500" and t.loc[1, "\u0394 Seam ratio [95 % CI]"].startswith("+0.500")
    assert t.loc[1, "\u0394 SWD [95 % CI]"].startswith("+3.00 [")
    md = blocks[0].markdown()
    assert "Student-t" in md and "two-level bootstrap" in md and "LPIPS" in md and "128 px" in md
    assert "LPIPS (AlexNet) \u2193" not in t.columns  # no value at all: a note, not a column


# -- the decode and metrics steps on real files ---------------------------------------------------------
class FakeCodec:
    """Decodes any file to a fixed image plus a seed-dependent offset; counts its decodes."""

    name = "fake"

    def __init__(self, image):
        self.image, self.calls = image, 0

    def decode(self, data):
        from cgdm.redecode import decoder_options

        self.calls += 1
        o = decoder_options(data)
        return np.clip(self.image.astype(int) + 3 * o.seed + int(10 * o.guidance), 0, 255).astype(np.uint8)


class FakeMetrics:
    names = ["psnr"]
    lower_better = {"psnr": False}

    def __call__(self, recon, orig):
        mse = np.mean((recon.astype(float) - orig.astype(float)) ** 2)
        return {"psnr": (10 * np.log10(255 ** 2 / max(mse, 1e-10)), "ok")}


def _encode_table(tmp_path, flags):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        orig = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        save_png(tmp_path / f"im{i}.png", orig)
        header = bs.CGDMHeader("cgdm", b"\x01" * 8, 64, 48, 0, flags)
        data = bs.write_cgdm(header, {"main": b"m" * 50, "hyper": b"h" * 9, "syntax": b"s" * 8,
                                      "decoder": SamplingOptions(steps=2, tile=32, overlap=16).pack()})
        (tmp_path / f"im{i}.cgdm").write_bytes(data)
        save_png(tmp_path / f"im{i}_rec.png", FakeCodec(orig).decode(data))
        rows.append(dict(dataset="kodak", image=f"im{i}", codec="cgdm", kind="cgdm", rate="0", width=64, height=48,
                         bytes=len(data), bpp=8 * len(data) / (64 * 48), bitstream=str(tmp_path / f"im{i}.cgdm"),
                         reconstruction=str(tmp_path / f"im{i}_rec.png"), original=str(tmp_path / f"im{i}.png"),
                         encode_s=0.1, decode_s=0.2, codec_version="v", weights="w", device="cpu",
                         code_revision="r0", config_hash="h", status="ok"))
    return pd.DataFrame(rows, columns=ENCODE_COLUMNS)


def test_decode_step_reuses_pixels_and_the_rows_feed_the_table(tmp_path):
    enc = _encode_table(tmp_path, bs.DIFFUSION | bs.TILED)
    codec = FakeCodec(load_image(tmp_path / "im0.png"))
    settings = [{"name": f"seed{s}", "overrides": {"seed": s}} for s in (0, 1, 2)]
    dec = studies.redecode(enc, settings, codec, tmp_path / "out", "ablations", progress=False)
    assert codec.calls == 3 * 2  # seed 0 is the encoded setting: the encode step's pixels are used
    assert list(dec.loc[dec["setting"] == "seed0", "decoded_as"].unique()) == ["encode"]
    assert (dec.loc[dec["setting"] == "seed0", "reconstruction"] == enc["reconstruction"].to_numpy()).all()
    assert (dec["bytes"] == enc["bytes"].iloc[0]).all()  # same size: bpp unchanged
    for r in dec.itertuples():
        assert r.bpp == pytest.approx(8 * len(open(r.bitstream, "rb").read()) / (64 * 48))
        assert json.loads(r.options)["seed"] == r.seed
    write_table(dec, tmp_path / "decode.csv")
    rows = studies.study_metrics(studies.read_decode_table(tmp_path / "decode.csv"), FakeMetrics(), progress=False,
                                 swd_kwargs={"n_boot": 20})
    write_table(rows, tmp_path / "metrics.csv")
    df = studies.aggregate([tmp_path / "metrics.csv"])
    assert set(df["metric"]) >= {"psnr", "seam", "swd", "swd_ci_low", "swd_l0"}
    swd = df[df["metric"] == "swd"]
    assert len(swd) == 3 and all(len(json.loads(b)) == 20 for b in swd["bootstrap"])
    seam = df[df["metric"] == "seam"]
    assert (seam["status"] == "ok").all()  # tile 32 < 64 x 48: borders to probe
    # the same study rows under a second codec name: the paired difference to itself is zero
    twin = pd.concat([df, df.assign(codec="cgdm_no_sff")])
    p = paired_differences(studies.validate_study(twin), VARIANTS).query("variant == 'no_sff'")
    assert np.allclose(p["diff"], 0) and set(p["metric"]) == {"psnr", "seam", "swd"}


def test_guidance_points_of_a_variant_without_consistency_decode_once(tmp_path):
    enc = _encode_table(tmp_path, bs.DIFFUSION | bs.NO_CONSISTENCY)
    codec = FakeCodec(load_image(tmp_path / "im0.png"))
    points = [{"guidance": 0.0}, {"guidance": 0.5}, {"guidance": 1.0, "bound": 0.005}]
    settings = [{"name": f"p{i}_seed1", "point": i, "overrides": {**p, "seed": 1}} for i, p in enumerate(points)]
    dec = studies.redecode(enc, settings, codec, tmp_path / "out", "dp_curve", progress=False)
    assert codec.calls == 3  # one decode per image: the points differ only in settings without effect
    assert set(dec["decoded_as"]) == {"p0_seed1"}


def test_dither_setting_adds_seeded_noise_to_the_pixels_it_reuses(tmp_path):
    """The noise-alone control: the base codec's pixels (here the encode step's, reused, not decoded again)
    plus white noise of the given level, the same field for an image at every level."""
    enc = _encode_table(tmp_path, bs.DIFFUSION | bs.TILED)
    codec = FakeCodec(load_image(tmp_path / "im0.png"))
    settings = [{"name": "as_encoded", "overrides": {}},
                *({"name": f"dither{i}", "point": i, "overrides": {}, "dither": d} for i, d in ((1, 2.0), (2, 4.0)))]
    dec = studies.redecode(enc, settings, codec, tmp_path / "out", "dp_curve", progress=False)
    assert codec.calls == 0
    plain = dec[dec["setting"] == "as_encoded"].set_index("image")
    for name, sigma in (("dither1", 2.0), ("dither2", 4.0)):
        d = dec[dec["setting"] == name].set_index("image")
        assert set(d["decoded_as"]) == {"encode+dither"} and set(d["overrides"]) == {json.dumps({"dither": sigma})}
        for image in d.index:
            noise = load_image(d.loc[image, "reconstruction"]).astype(float) - load_image(
                plain.loc[image, "reconstruction"]).astype(float)
            inside = np.abs(noise) < 30  # away from clipping at 0 and 255
            assert noise[inside].std() == pytest.approx(sigma, rel=0.1)
    again = studies.redecode(enc, settings, codec, tmp_path / "again", "dp_curve", progress=False)
    for a, b in zip(dec["reconstruction"], again["reconstruction"], strict=True):
        assert np.array_equal(load_image(a), load_image(b)), "seeded: the same control every run"
    with pytest.raises(ValueError, match="dither"):
        studies.check_settings([{"name": "x", "dither": -1}])


def _dp_rows():
    rows = []
    points = [{"guidance": 0.0}, {"guidance": 0.5}, {"guidance": 1.0}]
    for codec, psnrs, swds, same in (("cgdm", [28, 27.5, 27], [30, 25, 22], False),
                                     ("cgdm_no_consistency", [27.8] * 3, [26] * 3, True)):
        for i, (p, ps, sw) in enumerate(zip(points, psnrs, swds, strict=True)):
            st = f"p{i}_seed0"
            extra = dict(study="dp_curve", setting=st, point=i, overrides=json.dumps({**p, "seed": 0}),
                         decoded_as="encode" if same else st)
            rows += [row(codec, f"im{k}", 0, "psnr", ps + k, rate="1", **extra) for k in range(2)]
            rows += [row(codec, DATASET_IMAGE, 0, m, v, rate="1", **extra)
                     for m, v in (("swd", sw), ("swd_ci_low", sw - 1), ("swd_ci_high", sw + 1))]
    base = dict(study="dp_curve", setting="base", overrides="{}", options="", decoded_as="encode")
    rows += [row("cgdm_base", f"im{k}", np.nan, "psnr", 29 + k, rate="1", **base) for k in range(2)]
    rows += [row("cgdm_base", DATASET_IMAGE, np.nan, "swd", 40.0, rate="1", **base)]
    noisy = dict(study="dp_curve", setting="dither1", point=1, overrides=json.dumps({"dither": 2.0}), options="",
                 decoded_as="encode+dither")
    rows += [row("cgdm_base", f"im{k}", np.nan, "psnr", 28.8 + k, rate="1", **noisy) for k in range(2)]
    rows += [row("cgdm_base", DATASET_IMAGE, np.nan, "swd", 33.0, rate="1", **noisy)]
    return frame(rows)


def test_dp_points_table_and_figure(tmp_path):
    variants = {"full": "cgdm", "no_consistency": "cgdm_no_consistency"}
    pts = dp_points(_dp_rows(), variants, base="cgdm_base")
    assert list(pts["variant"]) == ["full"] * 3 + ["no_consistency"] * 3 + ["base"] * 2
    full = pts[pts["variant"] == "full"]
    assert list(full["psnr"]) == [28.5, 28.0, 27.5] and list(full["swd"]) == [30, 25, 22]
    assert list(full["label"]) == ["guidance=0.0", "guidance=0.5", "guidance=1.0"]
    assert not full["coincide"].any() and pts[pts["variant"] == "no_consistency"]["coincide"].all()
    b = pts[pts["variant"] == "base"].iloc[0]
    assert (b["point"], b["psnr"], b["swd"]) == (-1, 29.5, 40.0)
    noisy = pts[pts["variant"] == "base"].iloc[1]
    assert (noisy["point"], noisy["label"], noisy["psnr"], noisy["swd"]) == (1, "dither=2.0", 29.3, 33.0)
    md = tables.dp_curve_tables(pts)[0].markdown()
    assert "same for every point" in md and "guidance=0.5" in md and "[21.00, 23.00]" in md
    assert "dither=2.0" in md and "noise-alone control" in md
    from cgdm.evaluation.plots import plot_dp_curve

    written = plot_dp_curve(pts, tmp_path / "dp.pdf", tmp_path / "dp.png")
    assert all(p.stat().st_size > 1000 for p in written)
