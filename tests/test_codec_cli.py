"""``cgdm compress|decompress|info`` and the workflow codec class, on files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cgdm.bitstream import read_cgdm
from cgdm.cli import main as cli
from cgdm.codec import ARCH, BaseCodec
from cgdm.coder import BaseCoder
from cgdm.harness.codecs import CodecUnavailable, make_codec, write_bitstream
from cgdm.imageio import load_image
from cgdm.zoo import save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = BaseCodec(N=16, M=24, num_rates=3, syntax_dim=8)
    m.init_gains([0.001, 0.004, 0.016])
    with torch.no_grad():
        m.log_gain.add_(3.0)
    m.update(force=True)
    path = tmp_path_factory.mktemp("model") / "base.pth"
    save_checkpoint(path, m.state_dict(), {"arch": ARCH, "steps": 0, "config": m.config, "lambdas": [1, 2, 3]})
    return path


def _inputs(folder):
    """Images of every kind the documented conversion rule covers."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((37, 53, 3)) * 255).astype(np.uint8)
    files = {}
    files["rgb.png"] = Image.fromarray(rgb)
    files["one.png"] = Image.fromarray(rgb[:1, :1])
    files["gray.png"] = Image.fromarray(rgb[..., 0])
    files["rgba.png"] = Image.fromarray(np.dstack([rgb, rgb[..., :1]]))
    files["gray16.png"] = Image.fromarray(rgb[..., 1].astype(np.uint16) * 257)
    files["palette.png"] = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files["photo.jpg"] = Image.fromarray(rgb)
    files["photo.tif"] = Image.fromarray(rgb[:20, :9])
    for name, im in files.items():
        im.save(folder / name)
    return [folder / n for n in files]


def test_compress_decompress_every_input_kind(ckpt, tmp_path, capsys):
    coder = BaseCoder.from_checkpoint(ckpt)
    for src in _inputs(tmp_path):
        image = load_image(src)
        out = tmp_path / f"{src.stem}.cgdm"
        png = tmp_path / f"{src.stem}.rec.png"
        assert cli(["compress", str(src), str(out), "--model", str(ckpt), "--rate", "1"]) == 0
        printed = capsys.readouterr().out
        # the reported bpp is the size of the file on disk
        bpp = 8 * os.path.getsize(out) / (image.shape[0] * image.shape[1])
        assert f"{os.path.getsize(out)} bytes, {bpp:.4f} bpp" in printed
        assert cli(["decompress", str(out), str(png), "--model", str(ckpt)]) == 0
        rec = np.asarray(Image.open(png))
        assert rec.shape == image.shape
        assert np.array_equal(rec, coder.decode(out.read_bytes()))
        header, _ = read_cgdm(out.read_bytes())
        assert (header.height, header.width, header.rate_idx) == (*image.shape[:2], 1)


def test_info(ckpt, tmp_path, capsys):
    src = _inputs(tmp_path)[0]
    out = tmp_path / "a.cgdm"
    assert cli(["compress", str(src), str(out), "--model", str(ckpt), "--rate", "2"]) == 0
    capsys.readouterr()
    assert cli(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "image:         53x37" in text and "rate index:    2" in text
    for name in ("main", "hyper", "syntax", "container"):
        assert f"  {name}" in text
    assert f"{os.path.getsize(out)} bytes" in text


def test_bad_files_exit_2_with_message(ckpt, tmp_path, capsys):
    src = _inputs(tmp_path)[0]
    good = tmp_path / "good.cgdm"
    assert cli(["compress", str(src), str(good), "--model", str(ckpt), "--rate", "0"]) == 0
    data = good.read_bytes()
    cases = {
        "trunc.cgdm": (data[:-10], "truncated"),
        "flip.cgdm": (data[:40] + bytes([data[40] ^ 1]) + data[41:], "CRC32"),
        "png.cgdm": (src.read_bytes(), "not a .cgdm file"),
        "empty.cgdm": (b"", "empty"),
        "v9.cgdm": (data[:4] + b"\x09" + data[5:], "format version 9"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        for argv in (["decompress", str(tmp_path / name), str(tmp_path / "x.png"), "--model", str(ckpt)],
                     ["info", str(tmp_path / name)]):
            capsys.readouterr()
            assert cli(argv) == 2, (name, argv[0])
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err
        assert not (tmp_path / "x.png").exists()
    assert cli(["info", str(tmp_path / "missing.cgdm")]) == 2


def test_wrong_model_and_missing_model(ckpt, tmp_path, capsys):
    src = _inputs(tmp_path)[0]
    out = tmp_path / "a.cgdm"
    assert cli(["compress", str(src), str(out), "--model", str(ckpt), "--rate", "0"]) == 0
    other = BaseCodec(N=16, M=24, num_rates=3, syntax_dim=8)
    other.update(force=True)
    other_path = tmp_path / "other.pth"
    save_checkpoint(other_path, other.state_dict(), {"arch": ARCH, "steps": 0, "config": other.config})
    capsys.readouterr()
    assert cli(["decompress", str(out), str(tmp_path / "x.png"), "--model", str(other_path)]) == 2
    assert "pass the checkpoint that encoded it" in capsys.readouterr().err
    # no --model: the zoo is searched by the header's weights hash; this model is not in it
    assert cli(["decompress", str(out), str(tmp_path / "x.png")]) == 2
    assert "not in the zoo" in capsys.readouterr().err


def test_bad_inputs_exit_2(ckpt, tmp_path, capsys):
    (tmp_path / "notimage.png").write_bytes(b"hello")
    src = _inputs(tmp_path)[0]
    cases = [
        (["compress", str(tmp_path / "notimage.png"), str(tmp_path / "o.cgdm"), "--model", str(ckpt), "--rate", "0"],
         "cannot read as an image"),
        (["compress", str(tmp_path / "nothere.png"), str(tmp_path / "o.cgdm"), "--model", str(ckpt), "--rate", "0"],
         "no such file"),
        (["compress", str(src), str(tmp_path / "o.cgdm"), "--model", str(ckpt), "--rate", "7"], "rates 0..2"),
        (["compress", str(src), str(tmp_path / "o.cgdm"), "--model", str(tmp_path / "no.pth"), "--rate", "0"],
         "no such checkpoint"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.cgdm").exists()


def test_console_script_exit_code(tmp_path):
    """The installed entry point itself exits 2 (``cgdm info`` does not even import torch)."""
    bad = tmp_path / "bad.cgdm"
    bad.write_bytes(b"CGDM\x01 garbage")
    proc = subprocess.run([sys.executable, "-m", "cgdm", "info", str(bad)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "truncated" in proc.stderr


def test_workflow_codec(ckpt, tmp_path):
    entry = {"class": "cgdm.harness.cgdm_codecs.CGDMBaseCodec", "rates": [0, 1, 2]}
    codec = make_codec("cgdm_base", entry, {"base": str(ckpt)})
    codec.check_available()
    assert codec.kind == "cgdm" and codec.extension == ".cgdm"
    assert codec.weights.startswith("trained-here:0:")
    image = load_image(_inputs(tmp_path)[0])
    data = codec.encode(image, 2)
    info = write_bitstream(tmp_path / f"a{codec.extension}", data, image.shape)
    assert info.num_bytes == len(data) and info.bpp == 8 * len(data) / image[..., 0].size
    assert codec.decode(data).shape == image.shape

    missing = make_codec("cgdm_base", entry, {"base": str(tmp_path / "nope.pth")})
    with pytest.raises(CodecUnavailable, match="no such checkpoint"):
        missing.check_available()
    with pytest.raises(CodecUnavailable, match="models"):
        make_codec("cgdm_base", entry, {}).check_available()


def test_full_cgdm_files_and_decoder_option_go_to_cgdm_model(ckpt, tmp_path, monkeypatch, capsys):
    """`cgdm compress --decoder ...` and files with model id "cgdm" are handled by full CGDM's CLI
    (cgdm.cli_cgdm)."""
    import types

    from cgdm.bitstream import DIFFUSION, CGDMHeader, write_cgdm

    calls = []
    fake = types.ModuleType("cgdm.cli_cgdm")
    fake.compress_main = lambda argv: calls.append(("compress", argv)) or 0
    fake.decompress_main = lambda argv: calls.append(("decompress", argv)) or 0
    monkeypatch.setitem(sys.modules, "cgdm.cli_cgdm", fake)

    argv = ["in.png", "out.cgdm", "--model", "b.pth", "--decoder", "d.pth", "--rate", "0", "--steps", "4"]
    assert cli(["compress", *argv]) == 0
    full = tmp_path / "full.cgdm"
    full.write_bytes(write_cgdm(CGDMHeader("cgdm", b"\0" * 8, 5, 4, 0, DIFFUSION), {"main": b"x", "decoder": b"y"}))
    argv2 = [str(full), "o.png", "--model", "b.pth", "--decoder", "d.pth"]
    assert cli(["decompress", *argv2]) == 0
    assert calls == [("compress", argv), ("decompress", argv2)]

    # a base-codec file refuses options it does not have
    src = _inputs(tmp_path)[0]
    base = tmp_path / "base.cgdm"
    assert cli(["compress", str(src), str(base), "--model", str(ckpt), "--rate", "0"]) == 0
    capsys.readouterr()
    assert cli(["decompress", str(base), str(tmp_path / "o.png"), "--model", str(ckpt), "--decoder", "d.pth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments for a base-codec file" in err[0]
    # and a full-CGDM file without --decoder: one line naming the option
    assert cli(["decompress", str(full), "o.png", "--model", "b.pth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decoder" in err[0] and not calls[2:]


def test_streams_must_be_whole_words(ckpt, tmp_path):
    """A CRC-valid file whose stream is not whole rANS words is refused before entropy decoding."""
    from cgdm.bitstream import CorruptedFile, write_cgdm

    coder = BaseCoder.from_checkpoint(ckpt)
    header, sections = read_cgdm(coder.encode(np.zeros((8, 8, 3), np.uint8), 0))
    for bad in (b"", b"abc", sections["main"] + b"x"):
        with pytest.raises(CorruptedFile, match="4-byte words"):
            coder.decode(write_cgdm(header, {**sections, "main": bad}))
    with pytest.raises(CorruptedFile, match="lacks the sections"):
        coder.decode(write_cgdm(header, {"main": sections["main"]}))
