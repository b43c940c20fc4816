"""Base codec: forward API, real range coding, decode == forward bit-exactly, gain units, neural syntax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgdm.codec import PAD_MULTIPLE, BaseCodec, estimate_bits
from cgdm.coder import BaseCoder
from cgdm.imageio import load_image
from cgdm.tensors import image_to_tensor, tensor_to_image


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = BaseCodec(N=16, M=24, num_rates=3, syntax_dim=8)
    m.init_gains([0.001, 0.004, 0.016])
    with torch.no_grad():
        m.log_gain.add_(3.0)  # a random network's y is tiny; scale it up so every stream carries bits
        for p in m.syntax.generator[-1].parameters():  # and switch the syntax modulation on
            p.normal_(0, 0.05)
    m.update(force=True)
    return m.eval()


@pytest.fixture(scope="module")
def kodak_crop():
    return load_image("data/kodak/kodim23.png")[100:197, 200:331]  # 97 x 131: odd, not a multiple of 64


def test_forward_shapes_any_size(model):
    for h, w in [(1, 1), (17, 33), (64, 64), (65, 130)]:
        x = torch.rand(2, 3, h, w)
        out = model(x, torch.tensor([0, 2]))
        assert out["x_hat"].shape == (2, 3, h, w)
        assert out["features"].shape == (2, 16, -(-h // 2), -(-w // 2))
        assert out["syntax"].shape == (2, 8)
        assert set(out["likelihoods"]) == {"y", "z", "syntax"}
        hp, wp = -(-h // 64) * 64, -(-w // 64) * 64
        assert out["likelihoods"]["y"].shape == (2, 24, hp // 16, wp // 16)
        assert out["likelihoods"]["syntax"].numel() == 2 * 8


def test_bad_arguments(model):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="rates 0..2"):
        model(x, 3)
    with pytest.raises(ValueError, match="rates 0..2"):
        model.compress(x, -1)
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 4, 8, 8), 0)
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 0)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (31, 47), (64, 64), (97, 131)])
def test_decode_equals_forward_bit_exact(model, size):
    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    for r in range(model.num_rates):
        with torch.no_grad():
            out = model(x, r)
        enc = model.compress(x, r)
        assert enc["image_size"] == (h, w) and enc["rate_idx"] == [r]
        dec = model.decompress(enc["strings"], r, (h, w))
        assert torch.equal(dec["x_hat"], out["x_hat"].clamp(0, 1))
        assert torch.equal(dec["features"], out["features"])
        assert torch.equal(dec["syntax"], out["syntax"])


def test_batch_compress_with_mixed_rates(model):
    x = torch.rand(2, 3, 40, 24)
    enc = model.compress(x, torch.tensor([2, 0]))
    assert len(enc["strings"]["y"]) == 2 and enc["rate_idx"] == [2, 0]
    dec = model.decompress(enc["strings"], torch.tensor([2, 0]), (40, 24))
    assert dec["x_hat"].shape == (2, 3, 40, 24)


def test_gain_units_order_the_rates(model, kodak_crop):
    """One network, several rates: a higher index quantises y more finely -> more bits.
    (Distortion is checked on a trained model in test_train.py; a random decoder has no RD order.)"""
    x = image_to_tensor(kodak_crop)
    sizes = [len(model.compress(x, r)["strings"]["y"][0]) for r in range(model.num_rates)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_padding_is_replicate_and_cropped(model):
    x = torch.rand(1, 3, 5, 70)
    padded = model._pad(x)
    assert padded.shape[-2:] == (PAD_MULTIPLE, 2 * PAD_MULTIPLE)
    assert torch.equal(padded[..., :5, :70], x)
    assert torch.equal(padded[..., 63, :70], x[..., 4, :])  # bottom rows repeat the last row


def test_syntax_stream_is_coded_and_counted(model, kodak_crop):
    x = image_to_tensor(kodak_crop)
    with torch.no_grad():
        out = model(x, 1)
    bits = estimate_bits(out["likelihoods"])
    assert 0 < float(bits["syntax"][0]) < 300  # a few dozen bits, separately estimated
    enc = model.compress(x, 1)
    assert 0 < len(enc["strings"]["syntax"][0]) < 64
    assert torch.equal(model.syntax.decompress(enc["strings"]["syntax"]).flatten(1), out["syntax"])


def test_syntax_modulates_decoder(model):
    """The decoded syntax vector changes the decoder (and an untrained branch is the identity)."""
    feats = torch.rand(1, 16, 6, 6)
    s1, s2 = torch.zeros(1, 8, 1, 1), torch.full((1, 8, 1, 1), 3.0)
    assert not torch.equal(model.syntax.modulate(feats, s1), model.syntax.modulate(feats, s2))
    fresh = BaseCodec(N=16, M=24, num_rates=1, syntax_dim=8)
    assert torch.equal(fresh.syntax.modulate(feats, s2), feats)


def test_training_mode_uses_noise_for_rate_and_rounding_for_decoder(model):
    x = torch.rand(1, 3, 32, 32)
    model.train()
    try:
        torch.manual_seed(1)
        a = model(x, 0)
        torch.manual_seed(2)
        b = model(x, 0)
    finally:
        model.eval()
    # likelihoods see uniform noise (differ between draws) ...
    assert not torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    # ... and gradients reach the analysis through the straight-through rounding of the decoder's input
    a["x_hat"].sum().backward()
    assert model.g_a[0].weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_coder_round_trip_uint8(model, kodak_crop):
    coder = BaseCoder(model)
    data = coder.encode(kodak_crop, 2)
    image = coder.decode(data)
    with torch.no_grad():
        expected = tensor_to_image(model(image_to_tensor(kodak_crop), 2)["x_hat"])
    assert image.dtype == np.uint8 and image.shape == kodak_crop.shape
    assert np.array_equal(image, expected)


def test_file_size_matches_streams_plus_container(model, kodak_crop):
    """Bytes on disk = range-coded streams + 22-byte header + section framing + CRC, nothing else."""
    from cgdm.bitstream import HEADER_SIZE

    coder = BaseCoder(model)
    data = coder.encode(kodak_crop, 1)
    streams = [len(s[0]) for s in model.compress(image_to_tensor(kodak_crop), 1)["strings"].values()]
    framing = sum(1 + (1 if n < 128 else 2 if n < 16384 else 3) for n in streams)
    assert HEADER_SIZE + 4 <= 32
    assert len(data) == sum(streams) + HEADER_SIZE + framing + 4


def test_state_dict_round_trip_keeps_cdfs(model, kodak_crop):
    clone = BaseCodec(**model.config)
    clone.load_state_dict(model.state_dict())  # CDF buffers of another size are resized by CompressAI
    clone.eval()
    x = image_to_tensor(kodak_crop)
    enc = model.compress(x, 0)
    assert torch.equal(clone.decompress(enc["strings"], 0, x.shape[-2:])["x_hat"],
                       model.decompress(enc["strings"], 0, x.shape[-2:])["x_hat"])


def test_scale_indexes_are_nearest_in_log(model):
    gc = model.gaussian_conditional
    table = gc.scale_table
    assert len(table) == 128 and torch.isclose(table[0], torch.tensor(0.11))
    mid = (table[10] * table[11]).sqrt()
    scales = torch.stack([table[5], mid * 0.999, mid * 1.001, torch.tensor(0.01), torch.tensor(1e4)])
    assert gc.build_indexes(scales.view(1, -1, 1, 1)).flatten().tolist() == [5, 10, 11, 0, 127]


def test_file_size_close_to_estimate_after_brief_training(tmp_path):
    """File bytes within 1 % + 32 bytes of the estimated rate, on a whole Kodak image.

    A random network is no use here (its hyperprior predicts scales unrelated to y, so the estimate is
    dominated by the likelihood floor); 120 steps of a tiny model calibrate it (~4 s)."""
    from cgdm.imageio import list_images
    from cgdm.train import train_base

    params = {"N": 16, "M": 24, "syntax_dim": 8, "steps": 120, "batch_size": 4, "patch_size": 64,
              "threads": 1, "lr": 2e-3, "lambdas": [0.004, 0.03]}
    out = train_base(params, list_images("data/train")[:8], tmp_path / "tiny.pth", progress=False)
    coder = BaseCoder.from_checkpoint(out)
    image = load_image("data/kodak/kodim05.png")
    x = image_to_tensor(image)
    sizes = []
    for r in range(2):
        data = coder.encode(image, r)
        with torch.no_grad():
            out_r = coder.model(x, r)
        est_bytes = sum(float(v) for v in estimate_bits(out_r["likelihoods"]).values()) / 8
        assert abs(len(data) - est_bytes) <= 0.01 * est_bytes + 32, (r, len(data), est_bytes)
        assert np.array_equal(coder.decode(data), tensor_to_image(out_r["x_hat"]))
        sizes.append(len(data))
    assert sizes[0] < sizes[1]
