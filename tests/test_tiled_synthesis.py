"""Strip-wise decoding of large images (cgdm.codec.BaseCodec.synthesize*, CGDM.postprocess_latents).

Large images are decoded strip by strip so that memory is bounded by the strip; these tests lower the
strip size (``SYNTHESIS_STRIP_PIXELS``) so that small images take the strip path, and compare it with the
whole-image path on the same file. Stated tolerance: the strip path computes the same sums in a different
order only, so float outputs agree to 1e-5 (base synthesis) / 1e-4 (full CGDM, after sampling) and the
8-bit images differ by at most 1 level in at most 0.1 % of the values (measured: identical).
"""

import numpy as np
import pytest
import torch

from cgdm import codec
from cgdm.bitstream import read_cgdm
from cgdm.tensors import tensor_to_image

from helpers.diffusion import test_image, tiny_base, tiny_cgdm


def _randomise_syntax(base):
    # the syntax generator is zero-initialised (identity modulation); random weights exercise it
    torch.manual_seed(3)
    for p in base.syntax.generator[-1].parameters():
        p.data.normal_(0, 0.05)
    return base


@pytest.fixture(scope="module")
def base():
    return _randomise_syntax(tiny_base())


def _latents(base, size, seed=0):
    (hy, wy), _ = base.latent_shapes(size)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, base.M, hy, wy, generator=g) * 3, torch.randn(1, base.syntax_dim, 1, 1, generator=g)


@pytest.mark.parametrize("size", [(81, 70), (128, 200), (190, 64)])
@pytest.mark.parametrize("min_strip", [1, 2, 3])
def test_strip_synthesis_equals_whole_image(base, size, min_strip, monkeypatch):
    y, s = _latents(base, size)
    with torch.no_grad():
        x_ref, f_ref = base._synthesize(y, s, size)
        monkeypatch.setattr(codec, "SYNTHESIS_MIN_STRIP", min_strip)
        assert base.synthesis_strip_rows(tuple(y.shape[-2:]), strip_pixels=1) == 16 * min_strip
        x, f = base.synthesize(y, s, size, strip_pixels=1)
    assert x.shape == x_ref.shape and f.shape == f_ref.shape
    assert (x - x_ref).abs().max() < 1e-5 and (f - f_ref).abs().max() < 1e-5


def test_halo_is_needed(base, monkeypatch):
    """The tolerance test above can fail: without the halo, strip borders are wrong by O(1)."""
    size = (128, 128)
    y, s = _latents(base, size)
    monkeypatch.setattr(codec, "SYNTHESIS_MIN_STRIP", 1)
    monkeypatch.setattr(codec, "SYNTHESIS_HALO", 0)
    with torch.no_grad():
        x_ref, _ = base._synthesize(y, s, size)
        x, _ = base.synthesize(y, s, size, strip_pixels=1)
    assert (x - x_ref).abs().max() > 1e-2
    monkeypatch.setattr(codec, "SYNTHESIS_HALO", 1)  # enough above a strip, not below it
    with torch.no_grad():
        x, _ = base.synthesize(y, s, size, strip_pixels=1)
    assert (x - x_ref).abs().max() > 1e-2


def test_small_images_keep_the_whole_image_path(base):
    y, s = _latents(base, (512, 768))
    assert codec.SYNTHESIS_STRIP_PIXELS >= 512 * 768
    assert base.synthesis_strip_rows(tuple(y.shape[-2:])) is None
    assert base.synthesis_strip_rows((2160 // 16 + 1, 3840 // 16)) is not None  # 4K is strip-wise
    with torch.no_grad():
        x, f = base.synthesize(y[..., :4, :4], s, (64, 64))
        x_ref, f_ref = base._synthesize(y[..., :4, :4], s, (64, 64))
    assert torch.equal(x, x_ref) and torch.equal(f, f_ref)


def test_base_decompress_in_strips_equals_whole_image(base, monkeypatch):
    img = test_image(100, 90)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        enc = base.compress(x, 1)
        ref = base.decompress(enc["strings"], 1, (100, 90))
        monkeypatch.setattr(codec, "SYNTHESIS_STRIP_PIXELS", 1)
        monkeypatch.setattr(codec, "SYNTHESIS_MIN_STRIP", 1)
        out = base.decompress(enc["strings"], 1, (100, 90))
        lean = base.decompress(enc["strings"], 1, (100, 90), features=False)
    assert (out["x_hat"] - ref["x_hat"]).abs().max() < 1e-5
    assert (out["features"] - ref["features"]).abs().max() < 1e-5
    assert lean["features"] is None and torch.equal(lean["x_hat"], out["x_hat"])
    assert np.array_equal(tensor_to_image(out["x_hat"]), tensor_to_image(ref["x_hat"]))


def _strip_mode(monkeypatch):
    monkeypatch.setattr(codec, "SYNTHESIS_STRIP_PIXELS", 1)
    monkeypatch.setattr(codec, "SYNTHESIS_MIN_STRIP", 2)  # 32-row strips


@pytest.mark.parametrize("overrides", [{}, {"consistency": False}], ids=["full", "no_consistency"])
def test_full_cgdm_strip_decode_equals_whole_image(monkeypatch, overrides):
    model = tiny_cgdm(base=_randomise_syntax(tiny_base()), **overrides)
    img = test_image(150, 100)  # odd padding on both axes; 150 rows = 5 strips of 32
    data = model.compress(img, 1)
    ref = model.decompress(data)
    _, sections = read_cgdm(data)
    strings = {"y": [sections["main"]], "z": [sections["hyper"]], "syntax": [sections["syntax"]]}
    with torch.no_grad():
        dec = model.base.decompress(strings, 1, (150, 100))
        ref_f = model.postprocess(dec["x_hat"], dec["features"], dec["syntax"], 1)

    _strip_mode(monkeypatch)
    seen = {"body": [], "branch": []}  # heights of the inputs of the synthesis body and the consistency branch
    branch = model.decoder.consistency
    modules = {"body": model.base.g_s_body, "branch": branch.down if branch is not None else None}
    hooks = [m.register_forward_pre_hook(lambda _m, a, k=k: seen[k].append(a[0].shape[-2]))
             for k, m in modules.items() if m is not None]
    try:
        out = model.decompress(data)
        with torch.no_grad():
            lat = model.base.decompress(strings, 1, (150, 100), synthesize=False)
            out_f = model.postprocess_latents(lat["y_hat"], lat["syntax_hat"], (150, 100), 1)
    finally:
        for h in hooks:
            h.remove()
    # strips only: never the whole latent (12 rows: 150 padded to 192) or the whole feature map (80 rows)
    assert seen["body"] and max(seen["body"]) < 12
    assert max(seen["branch"], default=0) < 80 and bool(seen["branch"]) == (model.decoder.consistency is not None)
    assert (out_f - ref_f).abs().max() < 1e-4
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3


def test_output_conversion_unchanged():
    """tensor_to_image works in place now; same pixels as the former out-of-place formula."""
    x = torch.rand(1, 3, 33, 17) * 1.4 - 0.2
    old = (x[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    before = x.clone()
    assert np.array_equal(tensor_to_image(x), old) and torch.equal(x, before)
