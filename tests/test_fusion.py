"""Syntax-driven Feature Fusion (cgdm.fusion): the gates, the SFF stream and the no_sff switch."""

import numpy as np
import pytest
import torch

from cgdm import bitstream as bs
from cgdm.diffusion_decoder import CGDMDecoder, DecoderConfig
from cgdm.fusion import SyntaxFeatureFusion
from cgdm.tensors import image_to_tensor, tensor_to_image

from helpers.diffusion import test_image, tiny_base, tiny_cgdm, tiny_decoder


def test_sff_gates_follow_the_syntax_and_local_features():
    torch.manual_seed(0)
    sff = SyntaxFeatureFusion(8, 4, syntax_dim=6).eval()
    h, f = torch.randn(2, 8, 5, 5), torch.randn(2, 4, 5, 5)
    s = torch.randn(2, 6)
    with torch.no_grad():
        g = sff.gate(h, sff.proj(f), s)
        assert g.shape == h.shape and bool(((g > 0) & (g < 1)).all())
        assert g.std() > 0, "gates must vary over channels/positions"
        out = sff(h, f, s)
        assert not torch.allclose(out, sff(h, f, s + 1)), "the syntax must steer the fusion"
        assert not torch.allclose(out, sff(h, f * 2, s))
    with pytest.raises(ValueError, match="syntax"):
        sff(h, f, None)
    with pytest.raises(ValueError, match="expects 6"):
        sff(h, f, torch.randn(2, 5))


def test_no_sff_is_a_fixed_average_that_ignores_the_syntax():
    torch.manual_seed(0)
    sff = SyntaxFeatureFusion(8, 4, syntax_dim=6, syntax_driven=False).eval()
    h, f = torch.randn(1, 8, 5, 5), torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        out = sff(h, f, torch.randn(1, 6))
        assert torch.equal(out, sff(h, f, torch.randn(1, 6)))
        assert torch.equal(out, sff(h, f, None))
        assert torch.allclose(out, 0.5 * (h + sff.proj(f)))
    assert {n.split(".")[0] for n, _ in sff.named_parameters()} == {"proj"}


def test_no_sff_decoder_differs_from_full_only_in_the_gates():
    full, fixed = tiny_decoder(), tiny_decoder(sff=False)
    p_full, p_fixed = dict(full.named_parameters()), dict(fixed.named_parameters())
    extra = set(p_full) - set(p_fixed)
    assert extra and all(".global_gate." in n or ".local_gate." in n for n in extra)
    assert set(p_fixed) <= set(p_full)
    # same weights for the shared part: with the gate at 0.5 the outputs differ only through the fusion
    fixed.load_state_dict({k: v for k, v in full.state_dict().items() if k in fixed.state_dict()})
    x, xb = torch.randn(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 2 - 1
    feats = torch.randn(1, 16, 16, 16)
    s1, s2 = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        f, _ = full.condition(feats, xb)
        a1, a2 = full(x, 10, xb, 0, f, s1), full(x, 10, xb, 0, f, s2)
        b1, b2 = fixed(x, 10, xb, 0, f, s1), fixed(x, 10, xb, 0, f, s2)
    assert not torch.allclose(a1, a2), "full SFF uses the syntax"
    assert torch.equal(b1, b2), "no_sff must not use the syntax"
    assert not torch.allclose(a1, b1)


# -- the SFF stream (cgdm.fusion.SFFStream) ---------------------------------------------------------------
def _sections_of(model, img, rate=1):
    return bs.read_cgdm(model.compress(img, rate))[1]


def test_sff_stream_bytes_are_in_the_file_and_no_sff_is_smaller_by_exactly_them():
    base = tiny_base()
    full = tiny_cgdm(base=base, sff_stream_dim=4)
    no_sff = tiny_cgdm(base=base, sff=False, sff_stream_dim=4)  # no stream: SFF is off
    old = tiny_cgdm(base=base)  # a decoder of before the stream (sff_stream_dim 0)
    assert full.decoder.sff_stream is not None and no_sff.decoder.sff_stream is None
    img = test_image(70, 100)
    a, b = full.compress(img, 1), no_sff.compress(img, 1)
    sa, sb = bs.read_cgdm(a)[1], bs.read_cgdm(b)[1]
    assert "sff" in sa and "sff" not in sb and "sff" not in _sections_of(old, img)
    assert {k: v for k, v in sa.items() if k != "sff"} == sb, "the base streams do not depend on the decoder"
    # the section's payload plus its framing (type byte, one-byte length)
    assert len(a) - len(b) == len(sa["sff"]) + 2
    assert len(sa["sff"]) <= 16, "an ultra-low-rate stream: a few symbols"


def test_sff_stream_steers_the_output_at_more_than_one_stage():
    model = tiny_cgdm(sff_stream_dim=4)
    dec = model.decoder
    assert len(dec.unet.inner_fusion) == len(dec.config.channels) - 1
    img = test_image(64, 64)
    x = image_to_tensor(img)
    with torch.no_grad():
        out = model.base(x, 1)
        v = model.sff_vector(x, out["x_hat"])
        assert v.shape == (1, 4)
        a = model.postprocess(out["x_hat"], out["features"], out["syntax"], 1, sff=v)
        b = model.postprocess(out["x_hat"], out["features"], out["syntax"], 1, sff=v + 3)
        assert not torch.equal(a, b), "the stream must steer the decoder"
        # with the last stage's syntax gate switched off, the stream still acts through the inner stages
        for p in dec.unet.fusion.global_gate.parameters():
            p.zero_()
        c = model.postprocess(out["x_hat"], out["features"], out["syntax"], 1, sff=v)
        d = model.postprocess(out["x_hat"], out["features"], out["syntax"], 1, sff=v + 3)
        assert not torch.equal(c, d)
    with pytest.raises(ValueError, match="sff"):
        model.postprocess(out["x_hat"], out["features"], out["syntax"], 1)


def test_sff_stream_decodes_to_what_the_decoder_trained_on():
    """The file's stream decodes to the eval-mode vector (what reconstruct uses): bytes equal the forward path."""
    model = tiny_cgdm(sff_stream_dim=4)
    img = test_image(48, 80)
    x = image_to_tensor(img)
    data = model.compress(img, 0)
    stream = model.decoder.sff_stream
    with torch.no_grad():
        v = model.sff_vector(x, model.base(x, 0)["x_hat"])
    assert torch.equal(stream.decompress([bs.read_cgdm(data)[1]["sff"]]), v)
    assert np.array_equal(model.decompress(data), tensor_to_image(model.reconstruct(x, 0)))


def test_sff_section_missing_extra_or_damaged_is_refused():
    base = tiny_base()
    full, old = tiny_cgdm(base=base, sff_stream_dim=4), tiny_cgdm(base=base)
    img = test_image(48, 48)
    header, sections = bs.read_cgdm(full.compress(img, 1))
    without = bs.write_cgdm(header, {k: v for k, v in sections.items() if k != "sff"})
    with pytest.raises(bs.CorruptedFile, match="missing section.*sff"):
        full.decompress(without)
    for payload in (bytes(8), sections["sff"][:4], sections["sff"] + bytes(4)):
        with pytest.raises(bs.CorruptedFile):
            full.decompress(bs.write_cgdm(header, dict(sections, sff=payload)))
    h_old, s_old = bs.read_cgdm(old.compress(img, 1))
    with pytest.raises(bs.CorruptedFile, match="no SFF stream"):
        old.decompress(bs.write_cgdm(h_old, dict(s_old, sff=sections["sff"])))


def test_decoders_saved_before_the_stream_load_without_one():
    cfg = tiny_decoder(sff_stream_dim=4).config.to_dict()
    cfg.pop("sff_stream_dim")
    assert DecoderConfig.from_dict(cfg).sff_stream_dim == 0
    assert CGDMDecoder(DecoderConfig.from_dict(cfg)).sff_stream is None
