"""The encode step: real files on disk, bpp from their size, one row per image, skipped codecs."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cgdm import pipeline
from cgdm.harness.codecs import Codec, CodecUnavailable
from cgdm.results import ENCODE_COLUMNS


class LyingBytes(bytes):
    """Bytes whose len() lies: a pipeline that took the rate from len(data) instead of the file on
    disk would report a wrong bpp."""

    def __len__(self):
        return 1


class RawCodec(Codec):
    """Stores raw pixels after a 16-byte header; tests the pipeline, not compression."""

    extension = ".raw"

    @property
    def version(self):
        return "raw-1"

    def encode(self, image, rate):
        h, w, _ = image.shape
        header = np.array([h, w, int(rate), 0], dtype=">u4").tobytes()
        return LyingBytes(header + image.tobytes())

    def decode(self, data):
        h, w, _, _ = np.frombuffer(data[:16], dtype=">u4")
        return np.frombuffer(data[16:], dtype=np.uint8).reshape(h, w, 3).copy()


class MissingCodec(RawCodec):
    def check_available(self):
        raise CodecUnavailable("rawenc not found on PATH; install it with `apt-get install rawenc`")


@pytest.fixture
def images(tmp_path, rng):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, (h, w) in {"a": (17, 23), "b": (1, 1), "c": (64, 48)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return sorted(folder.glob("*.png"))


def test_bpp_is_measured_from_the_file_on_disk(tmp_path, images):
    entry = {"class": f"{__name__}.RawCodec", "rates": [7]}
    df = pipeline.encode_images(dataset="toy", images=images, codec_name="raw", entry=entry,
                                rate_label="0", rate_value=7, out_dir=tmp_path / "out")
    assert list(df.columns) == ENCODE_COLUMNS
    assert len(df) == 3 and (df["status"] == "ok").all()
    for row in df.itertuples():
        size = os.path.getsize(row.bitstream)
        assert row.bytes == size == 16 + row.width * row.height * 3
        assert row.bpp == pytest.approx(8 * size / (row.width * row.height))
        # the reconstruction on disk is what was decoded from the file
        assert np.array_equal(np.asarray(Image.open(row.reconstruction)), np.asarray(Image.open(row.original)))
    assert df["codec_version"].unique().tolist() == ["raw-1"]


def test_unavailable_codec_yields_rows_with_the_reason(tmp_path, images, capsys):
    entry = {"class": f"{__name__}.MissingCodec", "rates": [1]}
    df = pipeline.encode_images(dataset="toy", images=images, codec_name="missing", entry=entry,
                                rate_label="0", rate_value=1, out_dir=tmp_path / "out")
    assert len(df) == 3
    assert df["status"].str.startswith("unavailable: rawenc not found").all()
    assert df["bpp"].isna().all()
    assert "skipped" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_encode_cli_writes_csv(tmp_path, images):
    import json

    out_csv = tmp_path / "enc.csv"
    rc = pipeline.main(["--dataset", "toy", "--images-dir", str(images[0].parent), "--codec", "raw",
                        "--entry", json.dumps({"class": f"{__name__}.RawCodec", "rates": [3, 9]}),
                        "--rate", "1", "--out-dir", str(tmp_path / "o"), "--out-csv", str(out_csv),
                        "--config-hash", "abc"])
    assert rc == 0
    df = pd.read_csv(out_csv)
    assert df["rate"].astype(str).unique().tolist() == ["1"]
    assert df["config_hash"].unique().tolist() == ["abc"]


def test_encode_cli_rejects_a_rate_outside_the_entry(tmp_path, images):
    import json

    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--dataset", "toy", "--images-dir", str(images[0].parent), "--codec", "raw",
                       "--entry", json.dumps({"class": f"{__name__}.RawCodec", "rates": [3]}),
                       "--rate", "5", "--out-dir", str(tmp_path), "--out-csv", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
