"""Globally uniform boundary control (cgdm.boundary) and the no_boundary switch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cgdm.boundary import (
    Tiling,
    blend_window,
    grid_boxes,
    predict_x0_tiled,
    sample_global,
    sample_independent,
    seam_metric,
    tile_boxes,
)
from cgdm.diffusion import DDIMSampler, NoiseSchedule
from cgdm.sampling_options import SamplingOptions
from cgdm.tensors import image_to_tensor

from helpers.diffusion import test_image, tiny_cgdm


@pytest.mark.parametrize("h,w,patch,overlap", [(100, 130, 32, 8), (32, 32, 32, 8), (20, 50, 32, 16), (64, 200, 48, 0),
                                               (1088, 1920, 512, 64)])
def test_tiles_cover_the_image(h, w, patch, overlap):
    # (1088, 1920): fixed 512 patches with the last one shifted back would process 1.9x the pixels
    cover = torch.zeros(h, w)
    boxes = tile_boxes(h, w, patch, overlap)
    for top, left, ph, pw in boxes:
        assert 0 <= top and top + ph <= h and 0 <= left and left + pw <= w
        assert ph <= patch and pw <= patch
        cover[top:top + ph, left:left + pw] += 1
    assert bool((cover >= 1).all())
    assert len({(b[2], b[3]) for b in boxes}) == 1, "one patch size: patches batch together"
    # evenly spread: the pixels processed exceed the image by about the overlaps only
    rows, cols = sorted({b[0] for b in boxes}), sorted({b[1] for b in boxes})
    ph, pw = boxes[0][2], boxes[0][3]
    assert len(rows) * ph <= h + (len(rows) - 1) * (overlap + 1) + 1
    assert len(cols) * pw <= w + (len(cols) - 1) * (overlap + 1) + 1
    grid = torch.zeros(h, w)
    for top, left, ph, pw in grid_boxes(h, w, patch):
        grid[top:top + ph, left:left + pw] += 1
    assert bool((grid == 1).all()), "no_boundary patches must partition the image"


def test_blend_window_is_smooth_and_positive():
    win = blend_window(32, 48, 8)[0, 0]
    assert win.shape == (32, 48) and bool((win > 0).all()) and win.max() == 1
    assert win[16, 24] == 1 and win[0, 0] < 0.05
    # weights normalise: an identity predictor is reproduced exactly by the blend
    x = torch.randn(1, 3, 70, 90)
    out = predict_x0_tiled(x, 0, lambda xs, t, boxes: xs, Tiling(32, 8, 3))
    assert torch.allclose(out, x, atol=1e-6)


def test_network_memory_is_bounded_by_patch_and_batch():
    sizes = []

    def predict(xs, t, boxes):
        sizes.append(xs.shape)
        return xs

    predict_x0_tiled(torch.randn(1, 3, 200, 300), 0, predict, Tiling(64, 16, 3))
    assert max(s[0] for s in sizes) <= 3 and max(s[-1] for s in sizes) <= 64 and max(s[-2] for s in sizes) <= 64


def _conv_predictor():
    """A denoiser-like function with a receptive field and zero padding, like the U-Net."""
    torch.manual_seed(0)
    k = torch.randn(3, 3, 5, 5) * 0.05

    def predict(xs, t, boxes):
        return xs + F.conv2d(xs, k, padding=2)

    return predict


def test_tiled_prediction_matches_untiled_on_an_image_that_fits():
    x = torch.randn(1, 3, 96, 128)
    predict = _conv_predictor()
    full = predict(x, 0, [(0, 0, 96, 128)])
    tiled = predict_x0_tiled(x, 0, predict, Tiling(48, 16, 4))
    interior_err = (full - tiled).abs()[..., 4:-4, 4:-4]
    assert float(interior_err.mean()) < 0.01 * float(full.abs().mean())


def test_global_noise_is_drawn_once_and_patch_noise_is_independent():
    sampler = DDIMSampler(NoiseSchedule(), steps=2, t0=200)
    x = torch.zeros(1, 3, 64, 64)

    def ident(xs, t, boxes):
        return xs * 0.9

    def g():
        return torch.Generator().manual_seed(3)

    untiled = sample_global(sampler, x, ident, g(), None)
    tiled = sample_global(sampler, x, ident, g(), Tiling(32, 8, 2))
    assert torch.allclose(untiled, tiled, atol=1e-6), "a pointwise denoiser must not see the tiling"
    indep = sample_independent(sampler, x, ident, g(), 32)
    assert not torch.allclose(indep, untiled)
    assert torch.equal(indep, sample_independent(sampler, x, ident, g(), 32)), "still a function of the seed"


def test_seam_metric():
    rng = np.random.default_rng(0)
    smooth = rng.normal(128, 20, (64, 96, 3))
    assert seam_metric(smooth, 32) == pytest.approx(1.0, abs=0.15)
    seams = smooth.copy()
    seams[:, 32:64] += 40  # a step at both vertical borders
    seams[32:, :] -= 30
    assert seam_metric(seams, 32) > 1.5
    # tensor input (1, 3, H, W) gives the same value
    t = torch.from_numpy(seams).permute(2, 0, 1)[None]
    assert seam_metric(t, 32) == pytest.approx(seam_metric(seams, 32))
    with pytest.raises(ValueError, match="no patch border"):
        seam_metric(smooth[:16, :16], 32)


@pytest.fixture(scope="module")
def fitted():
    """A tiny CGDM decoder fitted for 60 steps to restore a blurred image: like a trained decoder its output
    is smooth where the image is, so seams are not drowned in the noise of a random network."""
    torch.manual_seed(0)
    x = image_to_tensor(test_image(96, 128))
    x_blur = F.interpolate(F.avg_pool2d(x, 4), scale_factor=4.0, mode="bilinear")
    feats, syntax = torch.randn(1, 16, 48, 64), torch.randn(1, 8)
    model = tiny_cgdm()
    dec = model.decoder.train().requires_grad_(True)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    target, xb = x * 2 - 1, x_blur * 2 - 1
    for _ in range(60):
        t = torch.randint(dec.config.num_train_timesteps, (1,), generator=g)
        f, x_c = dec.condition(feats, xb)
        x0 = dec(dec.training_input(target, xb, torch.randn(x.shape, generator=g), t), t, xb, 1, f, syntax)
        loss = F.mse_loss(x0, target) + F.mse_loss(x_c, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval().requires_grad_(False)
    return model, x, x_blur, feats, syntax


@pytest.mark.parametrize("tile", [32, 48])
def test_boundary_control_lowers_seams_and_matches_untiled_decode(fitted, tile):
    model, _, x_blur, feats, syntax = fitted

    def decode(tile, boundary):
        opts = SamplingOptions(steps=3, tile=tile, overlap=16)
        return model.postprocess(x_blur, feats, syntax, 1, opts, boundary=boundary)

    untiled = decode(128, True)  # 128 >= both sides: one patch
    tiled = decode(tile, True)
    independent = decode(tile, False)

    def psnr(a, b):
        return float(-10 * torch.log10(((a - b) ** 2).mean()))

    assert psnr(tiled, untiled) > 45, "globally uniform tiling must match the untiled decode closely"
    assert psnr(independent, untiled) < psnr(tiled, untiled)
    s_global, s_indep, s_ref = seam_metric(tiled, tile), seam_metric(independent, tile), seam_metric(untiled, tile)
    assert s_global < s_indep, (s_global, s_indep)
    assert s_indep > 1.2, f"no_boundary should show seams (seam metric {s_indep:.3f})"
    assert abs(s_global - s_ref) < 0.1, f"tiled seams {s_global:.3f} vs untiled {s_ref:.3f}"
