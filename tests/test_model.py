"""CGDM model (cgdm.model, cgdm.sampling_options, cgdm.variants): bytes round trip, determinism, header flags,
ablation switches, workflow codec."""

import struct

import numpy as np
import pytest
import torch

from cgdm import bitstream as bs
from cgdm.cli_cgdm import compress_main, decompress_main
from cgdm.harness.cgdm_codecs import CGDMCodec
from cgdm.harness.codecs import CodecUnavailable, make_codec
from cgdm.model import CGDM
from cgdm.sampling_options import SamplingOptions
from cgdm.tensors import image_to_tensor, tensor_to_image
from cgdm.variants import Variant
from cgdm.zoo import save_checkpoint

from helpers.diffusion import test_image, tiny_base, tiny_cgdm, tiny_decoder


@pytest.fixture(scope="module")
def model():
    return tiny_cgdm()


def test_round_trip_through_bytes_equals_the_model_output(model):
    img = test_image(70, 100)  # odd sizes: padding to the base's 64 and the decoder's 16
    data = model.compress(img, 1)
    out = model.decompress(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, model.decompress(data)), "same file -> same pixels"
    ref = tensor_to_image(model.reconstruct(image_to_tensor(img), 1))
    assert np.array_equal(out, ref), "decoding bytes must equal the forward path"
    header, sections = bs.read_cgdm(data)
    assert header.model_id == "cgdm" and header.rate_idx == 1
    assert header.flags == bs.DIFFUSION | bs.TILED  # 100 > tile 64
    assert SamplingOptions.unpack(sections["decoder"]) == model.options.quantized()


def test_seed_steps_and_t0_are_stored_and_used(model):
    img = test_image(48, 48)
    ref = model.decompress(model.compress(img, 0))
    for opts in (SamplingOptions(steps=2, seed=7, tile=64, overlap=16),
                 SamplingOptions(steps=3, tile=64, overlap=16),
                 SamplingOptions(steps=2, t0=2, tile=64, overlap=16),
                 SamplingOptions(steps=2, tile=64, overlap=16, eta=0.0)):
        data = model.compress(img, 0, options=opts)
        assert SamplingOptions.unpack(bs.read_cgdm(data)[1]["decoder"]) == opts
        assert not np.array_equal(model.decompress(data), ref)
    assert bs.read_header(model.compress(img, 0)).flags & bs.TILED == 0  # fits one tile


def test_sampling_options_pack_and_validate():
    o = SamplingOptions(steps=6, t0=321, seed=2**32 - 1, tile=256, overlap=32, guidance=0.5, bound=0.015, eta=0.3)
    assert len(o.pack()) == 16
    back = SamplingOptions.unpack(o.pack())
    assert back.steps == 6 and back.seed == 2**32 - 1 and back.guidance == pytest.approx(0.5, abs=1 / 255)
    assert back.t0 == 321 and back.eta == pytest.approx(0.3, abs=1 / 255)
    assert SamplingOptions.unpack(SamplingOptions().pack()).t0 is None  # "the decoder's own start"
    # version 1 (15 bytes, DDIM decoders, no eta byte) still reads, as deterministic DDIM
    v1 = struct.pack(">BBHIHHBH", 1, 4, 250, 0, 512, 64, 255, 200)
    assert SamplingOptions.unpack(v1) == SamplingOptions(4, 250, 0, 512, 64, 1.0, 0.02, 0.0)
    with pytest.raises(bs.CorruptedFile):
        SamplingOptions.unpack(o.pack()[:-1])
    with pytest.raises(bs.UnsupportedVersion):
        SamplingOptions.unpack(b"\x09" + o.pack()[1:])
    with pytest.raises(bs.CorruptedFile, match="invalid decoder settings"):
        SamplingOptions.unpack(o.pack()[:1] + b"\x00" + o.pack()[2:])  # 0 steps
    for bad in ({"steps": 0}, {"t0": 1, "steps": 4}, {"seed": -1}, {"overlap": 512}, {"guidance": 2.0},
                {"eta": 1.5}, {"t0": 0xFFFF}):
        with pytest.raises(ValueError):
            SamplingOptions(**bad)


def test_variant_names_and_flags():
    for name in ("full", "no_consistency", "no_sff", "no_boundary", "no_sff+no_boundary"):
        v = Variant.from_name(name)
        assert v.name == name and Variant.from_flags(v.flags) == v
    with pytest.raises(ValueError, match="unknown CGDM variant"):
        Variant.from_name("no_diffusion")


@pytest.mark.parametrize("variant,flag", [("no_consistency", bs.NO_CONSISTENCY), ("no_sff", bs.NO_SFF),
                                          ("no_boundary", bs.NO_BOUNDARY)])
def test_each_switch_is_written_to_the_header_and_changes_the_output(model, variant, flag):
    v = Variant.from_name(variant)
    m = tiny_cgdm(consistency=v.consistency, sff=v.sff, boundary=v.boundary, base=model.base)
    img = test_image(64, 96)
    data = m.compress(img, 1)
    assert bs.read_header(data).flags == bs.DIFFUSION | flag | (bs.TILED if v.boundary else 0)
    out = m.decompress(data)
    assert not np.array_equal(out, model.decompress(model.compress(img, 1)))
    assert m.variant == v


def test_no_consistency_removes_branch_guidance_and_fusion():
    dec = tiny_decoder(consistency=False)
    assert dec.consistency is None and dec.unet.fusion is None and dec.unet.feature_channels == 0
    full = tiny_decoder()
    extra = set(full.state_dict()) - set(dec.state_dict())
    assert all(k.startswith(("consistency.", "unet.fusion.", "unet.conv_in.")) for k in extra)


def test_only_the_switch_changes_the_computation(model):
    """no_boundary uses the very same weights; with an image that fits one tile, only the per-patch
    noise differs, so both decodes agree on the deterministic part (x_c guidance keeps them close)."""
    x = image_to_tensor(test_image(48, 64))
    a = model.reconstruct(x, 1)
    m2 = CGDM(model.base, model.decoder, model.options, boundary=False)
    assert m2.weights_hash == model.weights_hash
    b = m2.reconstruct(x, 1)
    assert not torch.equal(a, b)
    # guidance off: outputs differ more (guidance pulls both to the same consistency reconstruction)
    g0 = SamplingOptions(steps=2, tile=64, overlap=16, guidance=0.0)
    a0, b0 = model.reconstruct(x, 1, options=g0), model.reconstruct(x, 1, options=g0, boundary=False)
    assert (a - b).abs().mean() < (a0 - b0).abs().mean()


def test_decoding_checks_model_and_variant(model):
    img = test_image(32, 32)
    data = model.compress(img, 0)
    other = tiny_cgdm(seed=5, base=model.base)
    with pytest.raises(bs.ModelMismatch):
        other.decompress(data)
    no_sff = tiny_cgdm(sff=False, base=model.base)
    # a file that claims NO_SFF but was written with weights the decoder matches: variant check fires
    header, sections = bs.read_cgdm(data)
    forged = bs.write_cgdm(bs.CGDMHeader(header.model_id, header.weights_hash, header.width, header.height,
                                         header.rate_idx, header.flags | bs.NO_SFF), sections)
    with pytest.raises(bs.ModelMismatch, match="variant"):
        model.decompress(forged)
    assert no_sff.weights_hash != model.weights_hash
    with pytest.raises(bs.CorruptedFile):
        model.decompress(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    with pytest.raises(ValueError, match="rate index"):
        model.compress(img, 2)


def test_decoder_must_fit_the_base():
    with pytest.raises(ValueError, match="train the decoder on this base"):
        CGDM(tiny_base(), tiny_decoder(num_rates=3))


def _write_checkpoints(tmp_path, model, variant="full"):
    base_ckpt, dec_ckpt = tmp_path / "base.pth", tmp_path / f"dec_{variant}.pth"
    save_checkpoint(base_ckpt, model.base.state_dict(),
                    {"arch": "cgdm-base-vr-mshp", "steps": 0, "config": model.base.config, "lambdas": [0.01, 0.02]})
    save_checkpoint(dec_ckpt, model.decoder.state_dict(),
                    {"arch": "cgdm-decoder", "steps": 3, "config": model.decoder.config.to_dict(), "variant": variant})
    return base_ckpt, dec_ckpt


def test_workflow_codec_round_trip(tmp_path, model):
    base_ckpt, dec_ckpt = _write_checkpoints(tmp_path, model)
    entry = {"class": "cgdm.harness.cgdm_codecs.CGDMCodec", "rates": [0, 1],
             "params": {"steps": 2, "tile": 64, "overlap": 16}}
    codec = make_codec("cgdm", entry, {"base": str(base_ckpt), "decoder": str(dec_ckpt)})
    assert isinstance(codec, CGDMCodec) and codec.kind == "cgdm" and codec.extension == ".cgdm"
    codec.check_available()
    img = test_image(40, 56)
    data = codec.encode(img, 1)
    assert np.array_equal(codec.decode(data), model.decompress(data))
    assert codec.weights.startswith("trained-here:3:") and "full" in codec.version
    assert codec.model().lambdas == [0.01, 0.02]

    missing = make_codec("cgdm", entry, {"base": str(base_ckpt), "decoder": str(tmp_path / "nope.pth")})
    with pytest.raises(CodecUnavailable, match="missing"):
        missing.check_available()
    with pytest.raises(CodecUnavailable, match="decoder"):
        make_codec("cgdm", entry, {"base": str(base_ckpt)}).check_available()
    wrong = make_codec("cgdm", {**entry, "params": {"variant": "no_sff"}},
                       {"base": str(base_ckpt), "decoder": str(dec_ckpt)})
    with pytest.raises(ValueError, match="trained as 'full'"):
        wrong.encode(img, 0)
    with pytest.raises(TypeError, match="unknown CGDM params"):
        make_codec("cgdm", {**entry, "params": {"stepz": 3}}, {})


def test_cli_round_trip(tmp_path, model, capsys):
    from cgdm.imageio import load_image, save_png

    base_ckpt, dec_ckpt = _write_checkpoints(tmp_path, model)
    src, enc, dec = tmp_path / "in.png", tmp_path / "x.cgdm", tmp_path / "out.png"
    save_png(src, test_image(40, 40))
    args = ["--model", str(base_ckpt), "--decoder", str(dec_ckpt)]
    assert compress_main([str(src), str(enc), *args, "--rate", "0", "--steps", "2", "--t0", "1",
                          "--tile", "64", "--overlap", "16", "--seed", "3"]) == 0
    assert SamplingOptions.unpack(bs.read_cgdm(enc.read_bytes())[1]["decoder"]).seed == 3
    assert decompress_main([str(enc), str(dec), *args]) == 0
    assert np.array_equal(load_image(dec), model.decompress(enc.read_bytes()))
    enc.write_bytes(enc.read_bytes()[:30])
    assert decompress_main([str(enc), str(dec), *args]) == 2
    assert "truncated" in capsys.readouterr().err
    assert compress_main([str(src), str(enc), *args, "--rate", "0", "--variant", "no_sff"]) == 2


def test_consistency_branch_in_strips_equals_whole_image():
    dec = tiny_decoder()
    xb = torch.rand(1, 3, 96, 64) * 2 - 1
    feats = torch.randn(1, 16, 48, 32)
    with torch.no_grad():
        f, x_c = dec.condition(feats, xb)
        fs, x_cs = dec.condition(feats, xb, strip=32)
    assert torch.allclose(f, fs, atol=1e-5) and torch.allclose(x_c, x_cs, atol=1e-5)
