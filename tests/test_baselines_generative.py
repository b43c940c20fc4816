"""MS-ILLM / HiFiC: skipped cleanly offline; the torch.hub plumbing runs against a local fake hub repo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from baselines.generative import MSILLM, HiFiC
from cgdm.harness.codecs import CodecUnavailable, write_bitstream
from cgdm.imageio import load_image

KODAK = Path(__file__).resolve().parent.parent / "data" / "kodak"

# A stand-in for facebookresearch/NeuralCompression with the same API as its HiFiCAutoencoder:
# compress() -> HyperpriorCompressedOutput(latent_strings, hyper_latent_strings, image_size, padded_size),
# decompress(that) -> image tensor. "Coding" = 4-bit quantisation of the padded image, so it is lossy.
HUBCONF = """
    dependencies = ["torch"]
    import torch
    from neuralcompression import HyperpriorCompressedOutput


    class Toy(torch.nn.Module):
        def __init__(self, levels):
            super().__init__()
            self.levels = torch.nn.Parameter(torch.tensor(float(levels)), requires_grad=False)

        def update_tensor_devices(self, op):
            assert op == "compress"

        def compress(self, x, force_cpu=True):
            h, w = x.shape[-2:]
            hp, wp = h + (-h) % 64, w + (-w) % 64
            x = torch.nn.functional.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
            q = (x * (self.levels - 1)).round().to(torch.uint8)
            return HyperpriorCompressedOutput([q.numpy().tobytes()], [b"z" * 3], (h, w), (hp, wp))

        def decompress(self, c, force_cpu=True):
            hp, wp = c.padded_size
            q = torch.frombuffer(bytearray(c.latent_strings[0]), dtype=torch.uint8).reshape(1, 3, hp, wp)
            assert c.hyper_latent_strings == [b"z" * 3]
            return (q.float() / (self.levels - 1))[..., : c.image_size[0], : c.image_size[1]]


    def msillm_quality_1():
        return Toy(16)


    def msillm_quality_3():
        return Toy(64)
"""

NC_INIT = """
    from typing import NamedTuple


    class HyperpriorCompressedOutput(NamedTuple):
        latent_strings: list
        hyper_latent_strings: list
        image_size: tuple
        padded_size: tuple
"""


@pytest.fixture
def fake_hub(tmp_path) -> Path:
    repo = tmp_path / "NeuralCompression"
    (repo / "neuralcompression").mkdir(parents=True)
    (repo / "hubconf.py").write_text(textwrap.dedent(HUBCONF))
    (repo / "neuralcompression" / "__init__.py").write_text(textwrap.dedent(NC_INIT))
    return repo


@pytest.fixture
def odd_image() -> np.ndarray:
    return np.ascontiguousarray(load_image(KODAK / "kodim20.png")[10:79, 20:125])  # 69 x 105


def test_msillm_plumbing_with_local_hub(fake_hub, odd_image, tmp_path):
    codec = MSILLM("msillm", repo=str(fake_hub))
    codec.check_available()
    for rate, max_err in (("1", 9), ("3", 3)):
        data = codec.encode(odd_image, rate)
        info = write_bitstream(tmp_path / f"{rate}.illm", data, odd_image.shape)
        assert info.num_bytes == len(data)
        recon = codec.decode(info.path.read_bytes())
        assert recon.shape == odd_image.shape
        assert 0 < np.abs(recon.astype(int) - odd_image).max() <= max_err
    assert codec.weights.startswith("pretrained:") and len(codec.weights.split(",")) == 2
    with pytest.raises(ValueError, match="rate must be one of"):
        codec.encode(odd_image, 9)
    with pytest.raises(CodecUnavailable, match="msillm_quality_2"):
        codec.encode(odd_image, 2)   # the fake hub has no quality 2: a clear message, not a crash


def test_msillm_unavailable_without_repo(tmp_path):
    with pytest.raises(CodecUnavailable, match="torch.hub cannot reach"):
        MSILLM("msillm", repo=str(tmp_path / "missing")).check_available()
    with pytest.raises(ValueError, match="family"):
        MSILLM("x", family="gan")


def test_hific_unavailable_with_instructions(tmp_path):
    with pytest.raises(CodecUnavailable, match="Justin-Tan"):
        HiFiC("hific").check_available()
    with pytest.raises(CodecUnavailable, match="port not found"):
        HiFiC("hific", repo=str(tmp_path)).check_available()
