"""Aggregation, RD curves, tables and the report CLI (cgdm.evaluation.{aggregate,plots,tables,report}),
plus an offline end-to-end run: real JPEG files of cropped Kodak images -> metrics -> FID -> report."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cgdm.evaluation import DATASET_IMAGE, aggregate, bdrate, fid, metrics, plots, report, tables
from cgdm.evaluation.tidy import TableError, rd_points, validate_tidy
from cgdm.imageio import load_image, save_png
from cgdm.results import ENCODE_COLUMNS, TIDY_COLUMNS, write_table

UNAVAILABLE = "unavailable: lpips weights not available: missing LPIPS_v0.1_alex-df73285e.pth"


def tidy(codecs=(("jpeg", 1.0, 5), ("hyperprior", 0.7, 4)), n_images=3, seed=0, dataset="kodak"):
    """Synthetic per-image tidy rows: psnr/ms_ssim ok, lpips unavailable."""
    rng = np.random.default_rng(seed)
    rows = []
    for codec, eff, n_rates in codecs:
        for r in range(n_rates):
            for i in range(n_images):
                bpp = 0.1 * 2 ** (0.7 * r) * eff * (1 + 0.05 * rng.standard_normal())
                base = dict(dataset=dataset, image=f"im{i}", codec=codec, kind="classical", rate=str(r), bpp=bpp,
                            encode_s=0.1 + 0.01 * i, decode_s=0.05, codec_version=f"{codec}-1.0", weights="none",
                            device="cpu", code_revision="abc123", config_hash="cfg42")
                q = 10 * np.log10(bpp / eff)
                rows += [dict(base, metric="psnr", value=35 + q + 0.2 * rng.standard_normal(), lower_better=False,
                              status="ok"),
                         dict(base, metric="ms_ssim", value=1 - 0.05 / (1 + bpp / eff), lower_better=False,
                              status="ok"),
                         dict(base, metric="lpips", value=np.nan, lower_better=True, status=UNAVAILABLE)]
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


# -- aggregate ----------------------------------------------------------------------------------------


def test_aggregate_concatenates_validates_and_sorts(tmp_path):
    df = tidy()
    write_table(df[df.codec == "jpeg"].iloc[::-1], tmp_path / "a.csv")
    write_table(df[df.codec == "hyperprior"], tmp_path / "b.csv")
    out = tmp_path / "results.csv"
    assert aggregate.main(["--out", str(out), str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 0
    got = pd.read_csv(out, dtype={"rate": str})
    assert list(got.columns) == TIDY_COLUMNS and len(got) == len(df)
    assert got["codec"].tolist() == sorted(got["codec"])  # deterministic order
    before = out.read_bytes()
    aggregate.main(["--out", str(out), str(tmp_path / "b.csv"), str(tmp_path / "a.csv")])
    assert out.read_bytes() == before


def test_aggregate_rejects_duplicates_missing_columns_and_inconsistent_status(tmp_path, capsys):
    df = tidy(n_images=1)
    write_table(df, tmp_path / "a.csv")
    assert aggregate.main(["--out", str(tmp_path / "o.csv"), str(tmp_path / "a.csv"), str(tmp_path / "a.csv")]) == 2
    assert "duplicated rows" in capsys.readouterr().err
    write_table(df.drop(columns=["config_hash"]), tmp_path / "b.csv")
    assert aggregate.main(["--out", str(tmp_path / "o.csv"), str(tmp_path / "b.csv")]) == 2
    assert "missing columns ['config_hash']" in capsys.readouterr().err
    bad = df.copy()
    bad.loc[0, "value"] = np.nan
    with pytest.raises(TableError, match="status 'ok' but no finite value"):
        validate_tidy(bad)
    bad = df.copy()
    bad.loc[2, "value"] = 0.5  # an lpips row: unavailable but with a number
    with pytest.raises(TableError, match="carry a value although their status is not 'ok'"):
        validate_tidy(bad)


# -- RD points, plots ---------------------------------------------------------------------------------


def test_rd_points_are_means_over_images():
    df = tidy()
    pts = rd_points(df)
    sel = df[(df.codec == "jpeg") & (df.rate == "2") & (df.metric == "psnr")]
    p = pts[(pts.codec == "jpeg") & (pts.rate == "2") & (pts.metric == "psnr")].iloc[0]
    assert p.value == pytest.approx(sel.value.mean()) and p.bpp == pytest.approx(sel.bpp.mean()) and p.n == 3
    lp = pts[pts.metric == "lpips"]
    assert lp["value"].isna().all() and (lp["n"] == 0).all()


def _with_published(df):
    pub = df[(df.codec == "jpeg") & (df.image == "im0")].copy()
    pub["codec"], pub["kind"], pub["image"] = "vtm", "published", DATASET_IMAGE
    pub["bpp"] *= 0.6
    pub = pub[pub.metric != "lpips"]
    return pd.concat([df, pub], ignore_index=True)


def test_rd_figure_shows_gaps_and_marks_published_curves():
    df = _with_published(tidy())
    fig = plots.rd_figure(df, "kodak")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["PSNR (RGB)", "MS-SSIM (RGB)", "LPIPS (AlexNet)"]
    texts = [t.get_text() for t in axes[2].texts]
    assert texts and texts[0].startswith("unavailable: lpips weights") and "LPIPS_v0.1" in texts[0].replace("\n", "")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["hyperprior", "jpeg", "vtm (published)"]
    dashed = {line.get_label(): line.get_linestyle() for line in axes[0].get_lines()}
    assert dashed.get("vtm (published)") == "--" and dashed.get("jpeg") == "-"
    assert axes[0].get_xlabel() == "bpp" and "dB" in axes[0].get_ylabel()


def test_plot_rd_writes_pdf_and_png(tmp_path):
    df = pd.concat([tidy(), tidy(dataset="clic")], ignore_index=True)
    pngs = plots.plot_rd(df, tmp_path / "rd_curves.pdf")
    assert (tmp_path / "rd_curves.pdf").read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in pngs] == ["rd_curves-clic.png", "rd_curves-kodak.png"]
    with Image.open(pngs[0]) as im:
        assert im.size[0] >= 1500 and im.size[1] >= 500  # 200 dpi, three panels
    assert pngs[0].stat().st_size > 30_000
    assert not list(tmp_path.glob(".*part"))


# -- tables -------------------------------------------------------------------------------------------


def test_rd_table_derives_from_rows_and_lists_gaps(tmp_path):
    df = tidy()
    df.loc[(df.codec == "jpeg") & (df.rate == "1") & (df.metric == "psnr"), "value"] = [30.0, 31.0, 35.0]
    t = tables.rd_tables(df)[0]
    row = t.frame[(t.frame.codec == "jpeg") & (t.frame.rate == "1")].iloc[0]
    assert row["PSNR (RGB) [dB] \u2191"] == "32.00"  # mean of 30, 31, 35
    assert row["LPIPS (AlexNet) \u2193"] == "n/a" and row["images"] == "3"
    md = t.markdown()
    assert "LPIPS (AlexNet): unavailable: lpips weights not available" in md
    paths = tables.write([t], tmp_path, "rd_table", "RD")
    tex = paths[1].read_text()
    assert "\\toprule" in tex and "LPIPS\\_v0.1\\_alex" in tex and "$\\uparrow$" in tex


def test_bd_table_marks_refused_and_low_overlap(tmp_path):
    df = _with_published(tidy())
    bd = bdrate.bd_rate_table(df, "jpeg", n_boot=20)
    blocks = tables.bd_tables(bd)
    # one block per (dataset, metric), Akima and cubic side by side
    assert [b.caption for b in blocks] == [f"kodak, {m}: BD-rate vs jpeg"
                                           for m in ("PSNR (RGB) [dB]", "MS-SSIM (RGB)", "LPIPS (AlexNet)")]
    psnr = blocks[0].frame.set_index("codec")
    assert list(psnr.columns) == ["akima [95 % CI]", "cubic [95 % CI]", "akima - cubic", "overlap", "resamples usable"]
    assert psnr.loc["hyperprior", "akima [95 % CI]"].startswith("-")
    assert "[" in psnr.loc["hyperprior", "cubic [95 % CI]"]  # bootstrap interval
    assert psnr.loc["hyperprior", "resamples usable"].split(" ")[0].endswith("/20")
    assert psnr.loc["vtm", "resamples usable"] == "-"  # a published curve has no per-image rows
    assert blocks[2].frame.set_index("codec").loc["hyperprior", "akima [95 % CI]"] == "n/a"
    assert any("hyperprior: unavailable" in n for n in blocks[2].notes)
    # a curve sharing less than half of the shorter curve's quality range is refused, with the reason in the cell
    far = df[df.codec == "hyperprior"].copy()
    far["codec"], far["value"] = "far", far["value"] + np.where(far["metric"] == "psnr", 100.0, 0.0)
    blocks = tables.bd_tables(bdrate.bd_rate_table(pd.concat([df, far]), "jpeg", metrics=["psnr"], n_boot=0))
    far_cell = blocks[0].frame.set_index("codec").loc["far", "akima [95 % CI]"]
    assert far_cell == "refused: curves do not overlap in quality"
    assert "curves do not overlap in quality" in blocks[0].latex()


def test_ablation_table_has_every_variant_at_every_rate():
    parts = []
    for i, codec in enumerate(["cgdm", "cgdm_no_consistency", "cgdm_no_sff"]):
        d = tidy(codecs=((codec, 1.0 - 0.1 * i, 4),), seed=i)
        parts.append(d)
    df = pd.concat(parts, ignore_index=True)
    variants = {"full": "cgdm", "no_consistency": "cgdm_no_consistency", "no_sff": "cgdm_no_sff",
                "no_boundary": "cgdm_no_boundary"}
    bd = bdrate.bd_rate_table(df, "cgdm", methods=("akima",), n_boot=0)
    blocks = tables.ablation_tables(df, variants, bd)
    main = blocks[0].frame
    assert main.groupby("variant").size().to_dict() == {v: 4 for v in variants}
    assert list(dict.fromkeys(main["variant"])) == list(variants)
    missing = main[main.variant == "no_boundary"]
    assert (missing["bpp"] == "n/a").all()
    # encode time per image (the cost of an encoder-side variant such as online optimisation)
    assert (main[main.variant == "full"]["encode s/image"] == "0.11").all()
    assert (missing["encode s/image"] == "n/a").all()
    assert "no_boundary (cgdm_no_boundary): no results" in blocks[0].notes
    assert set(blocks[1].frame["variant"]) == {"no_consistency", "no_sff"}


def test_runtime_and_provenance_tables():
    df = _with_published(tidy())
    rt = tables.runtime_tables(df)[0].frame.set_index("codec")
    assert "vtm" not in rt.index  # published curves have no timings
    assert rt.loc["jpeg", "encode s/image"] == "0.110 \u00b1 0.008" and rt.loc["jpeg", "images x rates"] == "15"
    prov = tables.provenance_tables(df)[0].frame.set_index("codec")
    assert prov.loc["jpeg", "code_revision"] == "abc123" and prov.loc["jpeg", "config_hash"] == "cfg42"
    assert prov.loc["vtm", "kind"] == "published"


# -- report CLI ---------------------------------------------------------------------------------------


def test_report_cli_main_and_ablations(tmp_path):
    df = _with_published(tidy())
    write_table(df, tmp_path / "results.csv")
    out = tmp_path / "out"
    assert report.main(["--results", str(tmp_path / "results.csv"), "--pdf", str(out / "rd_curves.pdf"),
                        "--tables", str(out / "tables"), "--anchor", "jpeg", "--bootstrap", "20"]) == 0
    for name in ("rd_table", "bd_rate_table", "runtime_table", "provenance_table"):
        assert (out / "tables" / f"{name}.md").stat().st_size > 100
        assert (out / "tables" / f"{name}.tex").read_text().startswith("%")
    assert (out / "rd_curves-kodak.png").exists()
    assert set(pd.read_csv(out / "tables" / "bd_rate.csv")["codec"]) == {"hyperprior", "vtm"}
    # no anchor configured: the BD-rate table says so instead of failing
    assert report.main(["--results", str(tmp_path / "results.csv"), "--pdf", str(out / "b.pdf"),
                        "--tables", str(out / "t2"), "--anchor"]) == 0
    assert "no anchor codec configured" in (out / "t2" / "bd_rate_table.md").read_text()

    abl = pd.concat([tidy(codecs=(("cgdm", 1.0, 4),)), tidy(codecs=(("cgdm_no_sff", 0.9, 4),), seed=1)])
    write_table(abl, tmp_path / "abl.csv")
    assert report.main(["--ablations", str(tmp_path / "abl.csv"), "--pdf", str(out / "ablations.pdf"),
                        "--tables", str(out / "tables"), "--full", "cgdm", "--variants", "no_sff=cgdm_no_sff",
                        "no_boundary=cgdm_no_boundary", "--bootstrap", "0"]) == 0
    md = (out / "tables" / "ablation_table.md").read_text()
    assert "no_boundary (cgdm_no_boundary): no results" in md and "BD-rate of each variant" in md


# -- offline end to end -------------------------------------------------------------------------------


def _jpeg_encode_table(kodak_dir, folder, codec, subsampling, quality, rate, names):
    rows = []
    for name in names:
        img = load_image(kodak_dir / f"{name}.png")[:192, :192]
        orig = folder / "orig" / f"{name}.png"
        if not orig.exists():
            save_png(orig, img)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        bits = folder / codec / rate / f"{name}.jpg"
        bits.parent.mkdir(parents=True, exist_ok=True)
        bits.write_bytes(buf.getvalue())
        rec = folder / codec / rate / f"{name}.png"
        save_png(rec, load_image(bits))
        rows.append(dict(dataset="kodak-crop", image=name, codec=codec, kind="classical", rate=rate, width=192,
                         height=192, bytes=bits.stat().st_size, bpp=8 * bits.stat().st_size / 192**2,
                         bitstream=str(bits), reconstruction=str(rec), original=str(orig), encode_s=0.01,
                         decode_s=0.01, codec_version="Pillow", weights="none", device="cpu",
                         code_revision="test", config_hash="test", status="ok"))
    path = folder / codec / rate / "encode.csv"
    pd.DataFrame(rows, columns=ENCODE_COLUMNS).to_csv(path, index=False)
    return path


def test_offline_end_to_end_fills_the_weight_free_metrics_and_marks_the_rest_unavailable(tmp_path, kodak_dir):
    cache = tmp_path / "empty-cache"
    tidy_csvs = []
    for codec, sub in (("jpeg420", 2), ("jpeg444", 0)):
        for rate, q in enumerate((10, 30, 60, 90)):
            enc = _jpeg_encode_table(kodak_dir, tmp_path, codec, sub, q, str(rate), ["kodim23", "kodim01"])
            m_out, f_out = enc.with_name("metrics.csv"), enc.with_name("fid.csv")
            assert metrics.main(["--encode-csv", str(enc), "--out", str(m_out), "--cache", str(cache),
                                 "--metrics", "psnr,ms_ssim,lpips,dists,nlpd,gmsd"]) == 0
            assert fid.main(["--encode-csv", str(enc), "--out", str(f_out), "--cache", str(cache),
                             "--metrics", "fid,kid,swd"]) == 0
            tidy_csvs += [str(m_out), str(f_out)]
    results = tmp_path / "results.csv"
    assert aggregate.main(["--out", str(results), *tidy_csvs]) == 0
    assert report.main(["--results", str(results), "--pdf", str(tmp_path / "rd_curves.pdf"), "--tables",
                        str(tmp_path / "tables"), "--anchor", "jpeg420"]) == 0
    df = pd.read_csv(results)
    ok = df[df.status == "ok"]
    # 192 px crops: SWD has 4 pyramid levels (192, 96, 48, 24 px)
    swd_rows = {"swd", "swd_ci_low", "swd_ci_high", "swd_l0", "swd_l1", "swd_l2", "swd_l3"}
    assert set(ok.metric) == {"psnr", "ms_ssim", "nlpd", "gmsd"} | swd_rows
    assert set(df[df.status != "ok"].metric) == {"lpips", "dists", "fid", "kid"}
    assert df[df.metric.isin(["nlpd", "gmsd", *swd_rows])].lower_better.all()
    swd = ok[ok.metric == "swd"].astype({"rate": str}).set_index(["codec", "rate"])["value"]
    assert swd.loc[("jpeg420", "0")] > swd.loc[("jpeg420", "3")]  # quality 10 looks less natural than 90
    rd = (tmp_path / "tables" / "rd_table.md").read_text()
    assert "n/a" in rd and "FID/256: unavailable: fid weights not available" in rd
    assert "SWD [x1e3] \u2193" in rd and "SWD: sliced Wasserstein distance" in rd
    header = next(line for line in rd.splitlines() if line.startswith("| codec"))
    assert "SWD" in header and "SWD_L0" not in header and "_CI_" not in header  # levels / CI: not columns
    bd = pd.read_csv(tmp_path / "tables" / "bd_rate.csv").set_index(["metric", "method"])
    assert "swd" in bd.index.get_level_values("metric") and "swd_l0" not in bd.index.get_level_values("metric")
    assert bd.loc[("psnr", "akima"), "status"] == "ok"
    assert bd.loc[("lpips", "akima"), "status"].startswith("unavailable")
    fig = plots.rd_figure(pd.read_csv(results, dtype={"rate": str}), "kodak-crop")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"PSNR (RGB)", "MS-SSIM (RGB)", "LPIPS (AlexNet)", "DISTS", "NLPD (Y)", "GMSD (Y)",
                           "FID/256", "KID/256", "SWD"}
    assert panels["FID/256"].texts and panels["PSNR (RGB)"].get_lines()
    assert panels["SWD"].get_lines() and panels["NLPD (Y)"].get_lines() and panels["GMSD (Y)"].get_lines()
