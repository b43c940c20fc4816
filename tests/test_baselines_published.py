"""Published curves: every vendored file parses, units are converted, entries resolve, twin comparison."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from baselines.published import (
    DATA_DIR,
    PublishedError,
    list_published,
    load_published,
    main,
    ms_ssim_from_db,
    parse_file,
    published_twin_diff,
    twin_points,
)
from cgdm.results import TIDY_COLUMNS

DATA_FILES = sorted(p for p in DATA_DIR.rglob("*") if p.suffix in (".json", ".csv", ".dat", ".txt"))

# plausible ranges of every metric (catches dB read as linear, swapped columns, ...); the low ends are
# the extreme-rate methods of DiffEIC's table (Text-Sketch: PSNR 9.6 dB, MS-SSIM 0.18 at ~0.003 bpp)
RANGES = {"psnr": (5, 60), "psnr_y": (15, 60), "ms_ssim": (0.1, 1.0), "ms_ssim_y": (0.6, 1.0),
          "ssim": (0.1, 1.0), "lpips": (0, 1.0), "dists": (0, 0.5), "fid": (0, 200), "kid": (-0.01, 0.2),
          "fid_swav": (0, 50), "niqe": (1, 20)}


def test_vendored_files_and_provenance():
    assert len(DATA_FILES) > 200
    sources = (DATA_DIR / "SOURCES.md").read_text()
    for folder in ("compressai", "hific", "ms-illm", "diffeic", "neural-syntax", "tensorflow-compression"):
        assert (DATA_DIR / folder).is_dir() and f"`{folder}/" in sources
    for needle in ("869a9f5d4126d015b7de8f203fe60ee9e1608193", "BSD-3-Clause-Clear", "Apache License 2.0", "MIT"):
        assert needle in sources
    assert (DATA_DIR / "compressai" / "LICENSE").is_file() and (DATA_DIR / "LICENSE-Apache-2.0").is_file()


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: p.relative_to(DATA_DIR).as_posix())
def test_every_file_parses(path):
    df = parse_file(path)
    assert len(df) > 0
    assert (df["bpp"] > 0).all() and (df["bpp"] < 20).all()
    for metric, g in df.groupby("metric"):
        lo, hi = RANGES[metric]
        assert g["value"].between(lo, hi).all(), (metric, g["value"].min(), g["value"].max())


def test_ms_ssim_db_is_converted_to_linear():
    assert ms_ssim_from_db(20.0) == pytest.approx(0.99)
    # CompressAI paper-* files carry only dB values for MS-SSIM
    raw = json.loads((DATA_DIR / "compressai/kodak/paper-elic2022_ms-ssim.json").read_text())["results"]
    df = parse_file(DATA_DIR / "compressai/kodak/paper-elic2022_ms-ssim.json")
    got = df[df.metric == "ms_ssim"]["value"].to_numpy()
    assert np.allclose(got, 1 - 10 ** (-np.asarray(raw["ms-ssim-db-rgb"]) / 10))
    # neural syntax's MS-SSIM blocks are in dB (values ~ 18-24) too
    ns = parse_file(DATA_DIR / "neural-syntax/rd_points.dat")
    assert ns[ns.metric == "ms_ssim"]["value"].between(0.98, 0.997).all()


def test_load_published_tidy_rows():
    df = load_published({"source": "compressai/kodak/vtm.json", "dataset": "kodak", "label": "VTM (published)"})
    assert list(df.columns) == TIDY_COLUMNS
    assert set(df["metric"]) == {"psnr", "ms_ssim"}
    assert (df["image"] == "<mean>").all() and (df["kind"] == "published").all()
    assert (df["weights"] == "published").all() and (df["status"] == "ok").all()
    assert (df["codec"] == "VTM (published)").all()
    assert not df.loc[df.metric == "psnr", "lower_better"].any()
    raw = json.loads((DATA_DIR / "compressai/kodak/vtm.json").read_text())["results"]
    assert df.loc[df.metric == "psnr", "value"].tolist() == raw["psnr-rgb"]
    assert df.loc[df.metric == "psnr", "bpp"].tolist() == raw["bpp"]
    # the config key, when given, names the codec
    assert (load_published({"source": "compressai/kodak/vtm.json", "dataset": "kodak"}, name="vtm_pub")["codec"]
            == "vtm_pub").all()


@pytest.mark.parametrize("entry,metrics,n_points", [
    ({"source": "hific/data.csv", "dataset": "kodak"}, {"psnr", "ms_ssim", "lpips", "niqe"}, 3),
    ({"source": "hific/data.csv", "dataset": "div2k"}, {"psnr", "ms_ssim", "lpips", "niqe", "fid", "kid"}, 3),
    ({"source": "ms-illm/results.csv", "dataset": "clic2020", "method": "MS-ILLM"},
     {"psnr", "ms_ssim", "lpips", "dists", "fid", "kid", "fid_swav"}, 6),
    ({"source": "diffeic/results_kodak.csv", "dataset": "kodak", "method": "PerCo"},
     {"psnr", "ms_ssim", "lpips", "dists", "niqe", "ssim"}, 2),
    ({"source": "neural-syntax/rd_points.dat", "dataset": "clic2020", "source_dataset": "CLIC",
      "method": "Neural-Syntax MSE"}, {"psnr"}, None),
    ({"source": "tensorflow-compression/kodak/*/bpg444.txt", "dataset": "kodak"},
     {"psnr", "psnr_y", "ms_ssim", "ms_ssim_y"}, None),
])
def test_load_published_sources(entry, metrics, n_points):
    df = load_published(entry)
    assert set(df["metric"]) == metrics
    assert (df["dataset"] == entry["dataset"]).all()
    if n_points:
        assert df[df.metric == "psnr"].shape[0] == n_points


def test_hific_rate_labels_and_missing_kodak_fid():
    df = load_published({"source": "hific/data.csv", "dataset": "kodak"})
    assert df[df.metric == "psnr"]["rate"].tolist() == ["lo", "mi", "hi"]
    assert "fid" not in set(df["metric"])  # empty on Kodak in the source: no row, never a NaN value
    assert df["value"].notna().all()


def test_bad_entries_are_clear():
    with pytest.raises(PublishedError, match="several methods"):
        load_published({"source": "ms-illm/results.csv", "dataset": "kodak"})
    with pytest.raises(PublishedError, match="no method 'HiFiC'.*MS-ILLM"):
        load_published({"source": "ms-illm/results.csv", "dataset": "kodak", "method": "HiFiC"})
    with pytest.raises(PublishedError, match="no rows for dataset 'tecnick'.*kodak"):
        load_published({"source": "hific/data.csv", "dataset": "tecnick"})
    with pytest.raises(PublishedError, match="matches no file"):
        load_published({"source": "compressai/kodak/nope.json", "dataset": "kodak"})
    with pytest.raises(PublishedError, match="needs"):
        load_published({"source": "hific/data.csv"})


def test_list_published_entries_load():
    entries = list_published("kodak")
    sources = {e["source"] for e in entries}
    assert {"compressai/kodak/vtm.json", "hific/data.csv", "ms-illm/results.csv",
            "tensorflow-compression/kodak/*/jpeg420.txt"} <= sources
    assert all(e["dataset"] == "kodak" for e in entries)
    for e in entries[::7]:  # a sample: every listed entry is loadable as is
        assert len(load_published(e)) > 0
    assert {e["dataset"] for e in list_published()} >= {"kodak", "clic2020", "div2k", "clic2020mobile", "tecnick"}


def test_cli_writes_csv(tmp_path, capsys):
    out = tmp_path / "p.csv"
    entry = json.dumps({"source": "compressai/kodak/jpeg.json", "dataset": "kodak", "label": "JPEG (published)"})
    assert main(["--name", "jpeg_pub", "--entry", entry, "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == TIDY_COLUMNS and (df["codec"] == "jpeg_pub").all() and len(df) == 38
    assert main(["--entry", json.dumps({"source": "ms-illm/results.csv", "dataset": "kodak"})]) == 2
    assert "several methods" in capsys.readouterr().err


# -- our run vs its published twin -------------------------------------------------------------------


def _ours_from(published: pd.DataFrame, shift: float, images: int = 3) -> pd.DataFrame:
    """Per-image rows whose means equal the published curve shifted by ``shift`` in the metric."""
    rows = []
    for (rate, metric), g in published.groupby(["rate", "metric"]):
        for k in range(images):
            noise = (k - (images - 1) / 2) * 0.01   # zero-mean spread across images
            rows.append({"codec": "jpeg", "rate": rate, "metric": metric, "status": "ok",
                         "bpp": g["bpp"].iloc[0] * (1 + noise), "value": g["value"].iloc[0] + shift + noise})
    return pd.DataFrame(rows)


def test_twin_diff_detects_a_shift():
    pub = load_published({"source": "compressai/kodak/jpeg.json", "dataset": "kodak"})
    pub = pub[pub.metric == "psnr"]
    same = published_twin_diff(_ours_from(pub, 0.0), pub, metrics=("psnr",)).iloc[0]
    assert abs(same["mean_delta"]) < 0.02 and abs(same["bd_metric"]) < 0.02 and abs(same["bd_rate_percent"]) < 1
    better = published_twin_diff(_ours_from(pub, 1.0), pub, metrics=("psnr",)).iloc[0]
    assert better["mean_delta"] == pytest.approx(1.0, abs=0.05)
    assert better["bd_metric"] == pytest.approx(1.0, abs=0.05)
    assert better["bd_rate_percent"] < -10
    pts = twin_points(_ours_from(pub, 1.0), pub, "psnr")
    assert pts["delta"].dropna().between(0.9, 1.1).all()


def test_twin_points_outside_range_is_nan():
    pub = load_published({"source": "hific/data.csv", "dataset": "kodak"})
    ours = pd.DataFrame({"codec": "x", "rate": [0, 1], "metric": "psnr", "status": "ok",
                         "bpp": [0.05, 0.3], "value": [25.0, 29.0]})
    pts = twin_points(ours, pub, "psnr")
    assert math.isnan(pts["published"].iloc[0]) and not math.isnan(pts["published"].iloc[1])
