"""Syntax-driven Feature Fusion (cgdm.fusion) and the no_sff switch."""

import pytest
import torch

from cgdm.fusion import SyntaxFeatureFusion

from helpers.diffusion import tiny_decoder


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
