"""Re-decoding a .cgdm file with other decoder settings (cgdm.redecode): only the decoder section changes."""

import dataclasses

import numpy as np
import pytest

from cgdm import bitstream as bs
from cgdm.redecode import decode_key, decoder_options, main, option_names, override_decoder_options
from cgdm.sampling_options import SamplingOptions

SECTIONS = {"main": bytes(range(200)) * 3, "hyper": b"\x01\x02\x03" * 40, "syntax": b"\xaa" * 8}


def cgdm_file(flags=bs.DIFFUSION | bs.TILED, width=300, height=200, **options):
    header = bs.CGDMHeader("cgdm", b"\x11" * 8, width, height, 2, flags)
    opts = SamplingOptions(**{"steps": 2, "tile": 128, "overlap": 32, **options})
    return bs.write_cgdm(header, {**SECTIONS, "decoder": opts.pack()})


def test_seed_override_changes_only_the_decoder_section():
    data = cgdm_file(seed=0)
    new = override_decoder_options(data, {"seed": 7})
    header, sections = bs.read_cgdm(new)  # valid container: CRC recomputed
    old_header, old_sections = bs.read_cgdm(data)
    assert header == old_header
    assert len(new) == len(data)  # same section layout: bpp unchanged
    for name in ("main", "hyper", "syntax"):
        assert sections[name] == old_sections[name]
    before, after = SamplingOptions.unpack(old_sections["decoder"]), SamplingOptions.unpack(sections["decoder"])
    assert after == dataclasses.replace(before, seed=7)
    assert decoder_options(new).seed == 7
    # only the decoder payload and the CRC differ
    assert new[:bs.HEADER_SIZE] == data[:bs.HEADER_SIZE]
    assert sum(a != b for a, b in zip(new, data, strict=True)) <= 4 + 4


def test_several_overrides_and_identity():
    data = cgdm_file()
    assert override_decoder_options(data, {}) == data
    new = override_decoder_options(data, {"guidance": 0.5, "bound": 0.005, "seed": 3})
    o = decoder_options(new)
    assert (o.seed, o.bound) == (3, 0.005)
    assert o.guidance == pytest.approx(0.5, abs=1 / 255)  # stored in 1/255 units
    # overriding back gives the original bytes
    assert override_decoder_options(new, dataclasses.asdict(decoder_options(data))) == data


def test_every_option_field_can_be_overridden():
    data = cgdm_file()
    assert {"seed", "guidance", "bound", "tile", "overlap", "steps"} <= set(option_names())
    for name, value in {"seed": 5, "steps": 3, "tile": 256, "overlap": 16, "guidance": 0.0, "bound": 0.1}.items():
        assert getattr(decoder_options(override_decoder_options(data, {name: value})), name) == value


def test_bad_overrides_are_refused_with_the_field_named():
    data = cgdm_file()
    with pytest.raises(ValueError, match="unknown decoder setting.*'sede'"):
        override_decoder_options(data, {"sede": 1})
    with pytest.raises(ValueError, match="guidance"):
        override_decoder_options(data, {"guidance": 2.0})
    with pytest.raises(ValueError, match="overlap"):
        override_decoder_options(data, {"tile": 16})  # overlap 32 >= tile 16


def test_files_without_decoder_settings_and_damaged_files():
    base = bs.write_cgdm(bs.CGDMHeader("cgdm-base-vr-mshp", b"\x22" * 8, 64, 64, 0), SECTIONS)
    assert override_decoder_options(base, {}) == base
    with pytest.raises(ValueError, match="no decoder section"):
        override_decoder_options(base, {"seed": 1})
    data = bytearray(cgdm_file())
    data[30] ^= 0xFF
    with pytest.raises(bs.CorruptedFile):
        override_decoder_options(bytes(data), {"seed": 1})


def test_tile_override_updates_the_tiled_flag():
    data = cgdm_file(flags=bs.DIFFUSION | bs.TILED, width=300, height=200)  # 300 > tile 128
    untiled = override_decoder_options(data, {"tile": 512})
    assert bs.read_header(untiled).flags == bs.DIFFUSION
    assert bs.read_header(override_decoder_options(untiled, {"tile": 128})).flags == bs.DIFFUSION | bs.TILED
    # no_boundary files are never TILED (separate patches)
    nb = cgdm_file(flags=bs.DIFFUSION | bs.NO_BOUNDARY)
    assert bs.read_header(override_decoder_options(nb, {"tile": 64})).flags == bs.DIFFUSION | bs.NO_BOUNDARY


def test_decode_key_leaves_out_settings_without_effect():
    full = cgdm_file()
    key = decode_key(full)
    assert decode_key(override_decoder_options(full, {"seed": 1})) != key
    assert decode_key(override_decoder_options(full, {"guidance": 0.5})) != key
    assert decode_key(override_decoder_options(full, {"bound": 0.1})) != key
    # guidance 0: the bound no longer matters
    off = override_decoder_options(full, {"guidance": 0.0})
    assert decode_key(override_decoder_options(off, {"bound": 0.1})) == decode_key(off)
    # no consistency branch: neither guidance nor bound matter, the seed does
    nc = cgdm_file(flags=bs.DIFFUSION | bs.TILED | bs.NO_CONSISTENCY)
    k = decode_key(nc)
    assert decode_key(override_decoder_options(nc, {"guidance": 0.0, "bound": 0.3})) == k
    assert decode_key(override_decoder_options(nc, {"seed": 4})) != k


def test_cli(tmp_path, capsys):
    src, dst = tmp_path / "a.cgdm", tmp_path / "b.cgdm"
    src.write_bytes(cgdm_file())
    assert main([str(src), str(dst), "--set", "seed=9", "--set", "guidance=0.5"]) == 0
    assert decoder_options(dst.read_bytes()).seed == 9
    assert "seed" in capsys.readouterr().out
    assert main([str(src), str(dst), "--set", "nope=1"]) == 2
    assert "unknown decoder setting" in capsys.readouterr().err


def test_redecoded_file_decodes_like_a_file_encoded_with_those_settings():
    """The re-decoded file is what the encoder writes with the new settings: same pixels."""
    from helpers.diffusion import test_image, tiny_cgdm

    model = tiny_cgdm()
    img = test_image(48, 80)
    data = model.compress(img, 1)
    for overrides in ({"seed": 5}, {"guidance": 0.0}):
        direct = model.compress(img, 1, options=dataclasses.replace(model.options, **overrides))
        assert override_decoder_options(data, overrides) == direct
    out = model.decompress(override_decoder_options(data, {"seed": 5}))
    assert not np.array_equal(out, model.decompress(data))  # the seed is used


def test_guidance_has_no_effect_without_the_consistency_branch():
    """What decode_key assumes about the model: a no_consistency file decodes the same at any guidance."""
    from helpers.diffusion import test_image, tiny_cgdm

    model = tiny_cgdm(consistency=False)
    data = model.compress(test_image(48, 48), 0)
    assert bs.read_header(data).flags & bs.NO_CONSISTENCY
    other = override_decoder_options(data, {"guidance": 0.0, "bound": 0.2})
    assert decode_key(other) == decode_key(data)
    assert np.array_equal(model.decompress(other), model.decompress(data))
