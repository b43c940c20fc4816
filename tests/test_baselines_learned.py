"""CompressAI baselines: the trainer (tiny), the trained codec, and the zoo download (loopback server)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.learned import (
    CompressAITrained,
    CompressAIZoo,
    build_model,
    load_checkpoint,
    pack,
    unpack,
)
from baselines.learned_training import train
from cgdm.harness.codecs import CodecUnavailable, make_codec, write_bitstream
from cgdm.imageio import load_image
from cgdm.zoo import CheckpointError, save_checkpoint

KODAK = Path(__file__).resolve().parent.parent / "data" / "kodak"
TINY = {"N": 8, "M": 12, "lambdas": [0.01, 0.05], "steps": 3, "batch_size": 2, "patch_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def train_images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("train")
    kodim = load_image(KODAK / "kodim05.png")
    paths = []
    for i, (y, x) in enumerate([(0, 0), (200, 300), (300, 500)]):
        p = folder / f"{i}.png"
        Image.fromarray(kodim[y:y + 90, x:x + 110]).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module", params=["bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-anchor"])
def checkpoint(request, train_images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / f"{request.param}.pt"
    meta = train({**TINY, "architecture": request.param}, train_images, out, {}, "cpu")
    assert meta["arch"] == request.param and meta["steps"] == 3
    return out


@pytest.fixture
def odd_image() -> np.ndarray:
    return np.ascontiguousarray(load_image(KODAK / "kodim15.png")[50:117, 80:171])  # 67 x 91


def test_trainer_writes_one_checkpoint_per_lambda(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    meta = ckpt["meta"]
    assert len(ckpt["state_dict"]) == 2 and meta["lambdas"] == [0.01, 0.05]
    assert meta["N"] == 8 and meta["total_steps"] == 6
    assert meta["ms_per_step"] > 0 and len(meta["final"]) == 2
    # CDF tables were built before saving: the range coder can run straight from the file
    assert any(k.endswith("_quantized_cdf") and v.numel() > 0 for k, v in ckpt["state_dict"][0].items())
    # the two λ models differ (the second continued training from the first)
    a, b = ckpt["state_dict"]
    key = next(k for k in a if k.startswith("g_a.") and k.endswith("weight"))
    assert not torch.equal(a[key], b[key])
    # atomic write: no temporary file left next to it
    assert [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")] == []


def test_trainer_is_seeded(train_images, tmp_path):
    params = {**TINY, "architecture": "bmshj2018-hyperprior", "lambdas": [0.01], "steps": 2}
    train(params, train_images, tmp_path / "a.pt", {}, "cpu")
    train(params, train_images, tmp_path / "b.pt", {}, "cpu")
    sa, sb = load_checkpoint(tmp_path / "a.pt")["state_dict"][0], load_checkpoint(tmp_path / "b.pt")["state_dict"][0]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trainer_rejects_bad_params(train_images, tmp_path):
    with pytest.raises(ValueError, match="unknown trainer params"):
        train({"archtecture": "mbt2018-mean"}, train_images, tmp_path / "x.pt", {}, "cpu")
    with pytest.raises(ValueError, match="unknown architecture"):
        train({**TINY, "architecture": "nope"}, train_images, tmp_path / "x.pt", {}, "cpu")
    assert not (tmp_path / "x.pt").exists()


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [2, 4])  # inside the first λ; at the start of the second λ
def test_trainer_resumes_after_a_kill(train_images, tmp_path, kill_at):
    """A run killed mid-way and started again ends with the weights of an uninterrupted run."""
    params = {**TINY, "architecture": "bmshj2018-hyperprior", "steps": 4, "checkpoint_every": 1}
    train(params, train_images, tmp_path / "a.pt", {}, "cpu")
    calls = []

    def kill(step):
        calls.append(step)
        if len(calls) == kill_at + 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(params, train_images, tmp_path / "b.pt", {}, "cpu", on_step=kill)
    assert (tmp_path / "b.pt.state").exists() and not (tmp_path / "b.pt").exists()
    resumed = []
    train(params, train_images, tmp_path / "b.pt", {}, "cpu", on_step=resumed.append)
    assert len(resumed) == 8 - kill_at - 1  # only the steps not done before the kill
    assert not (tmp_path / "b.pt.state").exists()
    a, b = load_checkpoint(tmp_path / "a.pt")["state_dict"], load_checkpoint(tmp_path / "b.pt")["state_dict"]
    assert len(a) == len(b) == 2
    for sa, sb in zip(a, b, strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trainer_restarts_and_extension_equal_training_from_scratch(train_images, tmp_path):
    from baselines.learned_training import extend_state

    params = {**TINY, "architecture": "bmshj2018-hyperprior", "steps": 4, "checkpoint_every": 1}
    longer = {**params, "steps": 6, "restarts": [4]}
    train(longer, train_images, tmp_path / "scratch.pt", {}, "cpu")
    train(params, train_images, tmp_path / "short.pt", {}, "cpu")
    # the shorter run is the longer one's first segment: its weights are extended, not retrained
    extend_state(longer, tmp_path / "short.pt", tmp_path / "ext.pt")
    steps = []
    train(longer, train_images, tmp_path / "ext.pt", {}, "cpu", on_step=steps.append)
    assert steps == [5, 6, 5, 6]  # only the second segment of each λ
    assert load_checkpoint(tmp_path / "ext.pt")["meta"]["extended_from"] == str(tmp_path / "short.pt")
    a, b = load_checkpoint(tmp_path / "scratch.pt")["state_dict"], load_checkpoint(tmp_path / "ext.pt")["state_dict"]
    for sa, sb in zip(a, b, strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # killed in the middle of a second segment and resumed: still the same
    calls = []

    def kill(step):
        calls.append(step)
        if len(calls) == 9:  # the first λ's step 5 of 6 (4 + 4 steps of segment 1, then one more)
            raise _Killed

    with pytest.raises(_Killed):
        train(longer, train_images, tmp_path / "k.pt", {}, "cpu", on_step=kill)
    train(longer, train_images, tmp_path / "k.pt", {}, "cpu")
    c = load_checkpoint(tmp_path / "k.pt")["state_dict"]
    for sa, sc in zip(a, c, strict=True):
        assert all(torch.equal(sa[k], sc[k]) for k in sa)
    with pytest.raises(ValueError, match="must contain 4"):
        extend_state({**params, "steps": 6, "restarts": [3]}, tmp_path / "short.pt", tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="other params than these"):
        extend_state({**longer, "lr": 5e-4}, tmp_path / "short.pt", tmp_path / "bad.pt")


def test_weights_of_another_lambda_load_whatever_their_cdf_sizes():
    """A later segment loads each λ's own model into the net the previous λ left, whose CDF tables have
    another size (CompressAI resizes only empty tables)."""
    from baselines.learned_training import _load_weights

    other, net = build_model("bmshj2018-hyperprior", 8, 12), build_model("bmshj2018-hyperprior", 8, 12)
    other.entropy_bottleneck.quantiles.data *= 4  # wider quantiles: longer CDFs
    other.update(force=True)
    net.update(force=True)
    state = other.state_dict()
    key = "entropy_bottleneck._quantized_cdf"
    assert state[key].shape != net.state_dict()[key].shape
    with pytest.raises(RuntimeError, match="size mismatch"):
        net.load_state_dict(state)
    _load_weights(net, state)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_trainer_refuses_a_state_of_other_params(train_images, tmp_path):
    params = {**TINY, "architecture": "bmshj2018-hyperprior", "steps": 4, "checkpoint_every": 1}

    def kill(step):
        raise _Killed

    with pytest.raises(_Killed):
        train(params, train_images, tmp_path / "b.pt", {}, "cpu", on_step=kill)
    with pytest.raises(Exception, match="different trainer params"):
        train({**params, "lr": 5e-4}, train_images, tmp_path / "b.pt", {}, "cpu")


def test_trainer_stops_on_divergence(train_images, tmp_path):
    params = {**TINY, "architecture": "mbt2018-mean", "lambdas": [0.05], "steps": 10, "lr": 10.0}
    with pytest.raises(RuntimeError, match="diverged.*lower params.lr"):
        train(params, train_images, tmp_path / "x.pt", {}, "cpu")
    assert not (tmp_path / "x.pt").exists()


def test_trained_codec_round_trip(checkpoint, odd_image, tmp_path):
    codec = make_codec("hp", {"class": "baselines.learned.CompressAITrained"}, {"net": str(checkpoint)})
    codec.check_available()
    assert re.fullmatch(r"trained-here:3:[0-9a-f]{12}", codec.weights), codec.weights
    # the id hashes the weights, not the file: other wall times in the metadata keep it, other weights change it
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ckpt["meta"]["seconds"] = ckpt["meta"].get("seconds", 0) + 123.0
    torch.save(ckpt, tmp_path / "retimed.pt")
    assert make_codec("hp", {"class": "baselines.learned.CompressAITrained"},
                      {"net": str(tmp_path / "retimed.pt")}).weights == codec.weights
    first = next(k for k, v in ckpt["state_dict"][0].items() if v.is_floating_point())
    ckpt["state_dict"][0][first] = ckpt["state_dict"][0][first] + 1e-3
    torch.save(ckpt, tmp_path / "changed.pt")
    # other weights under the recorded hash: refused at load, never measured under the old id
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        make_codec("hp", {"class": "baselines.learned.CompressAITrained"},
                   {"net": str(tmp_path / "changed.pt")}).check_available()
    save_checkpoint(tmp_path / "changed.pt", ckpt["state_dict"], ckpt["meta"])
    assert make_codec("hp", {"class": "baselines.learned.CompressAITrained"},
                      {"net": str(tmp_path / "changed.pt")}).weights != codec.weights
    assert codec.kind == "learned"
    for rate in (0, 1):
        data = codec.encode(odd_image, rate)
        info = write_bitstream(tmp_path / f"{rate}.bin", data, odd_image.shape)
        assert info.num_bytes == os.path.getsize(info.path) == len(data)
        quality, h, w, (y, z) = unpack(info.path.read_bytes())
        assert (quality, h, w) == (rate, 67, 91) and len(y) > 0 and len(z) > 0
        recon = codec.decode(info.path.read_bytes())
        assert recon.shape == odd_image.shape and recon.dtype == np.uint8
        assert codec.encode(odd_image, rate) == data and np.array_equal(codec.decode(data), recon)
        if codec.checkpoint["meta"]["arch"] not in ("bmshj2018-hyperprior", "mbt2018-mean"):
            continue  # autoregressive models' forward() quantises differently from compress()
        # the decoded image is the network's own quantised reconstruction
        net = codec.model(rate)
        with torch.no_grad():
            x = torch.from_numpy(np.array(odd_image)).permute(2, 0, 1)[None].float() / 255
            x = torch.nn.functional.pad(x, (0, 128 - 91, 0, 128 - 67), mode="replicate")
            ref = net(x)["x_hat"][0, :, :67, :91].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        assert np.abs(ref.astype(int) - recon).max() <= 1
    with pytest.raises(ValueError, match="not in 0..1"):
        codec.encode(odd_image, 2)


def test_trained_codec_grayscale(checkpoint, tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(load_image(KODAK / "kodim01.png")[:40, :70]).convert("L").save(path)
    img = load_image(path)
    codec = CompressAITrained("hp", models={"net": str(checkpoint)})
    assert codec.decode(codec.encode(img, 0)).shape == (40, 70, 3)


def test_trained_codec_unavailable_without_checkpoint(tmp_path):
    codec = CompressAITrained("hp", models={"net": str(tmp_path / "missing.pt")})
    with pytest.raises(CodecUnavailable, match="train it first"):
        codec.check_available()
    with pytest.raises(CodecUnavailable, match="models"):
        CompressAITrained("hp").check_available()


def test_bitstream_header():
    data = pack(3, 512, 768, [b"yyyy", b"zz"])
    assert len(data) == 9 + 6
    assert unpack(data) == (3, 512, 768, [b"yyyy", b"zz"])
    with pytest.raises(ValueError, match="corrupt"):
        unpack(data[:10])
    with pytest.raises(ValueError, match="shorter"):
        unpack(data[:5])


# -- zoo download against a loopback server --------------------------------------------------------


@pytest.fixture
def weight_server(http_server, tmp_path):
    """Serve tmp_path/www over HTTP on 127.0.0.1; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    return f"{http_server(www).url}/models", www


def _publish_tiny_zoo_file(www: Path) -> tuple[str, str]:
    """Write a small random bmshj2018-hyperprior under CompressAI's quality-1 file name."""
    torch.manual_seed(0)
    net = build_model("bmshj2018-hyperprior", 8, 12)
    net.update(force=True)
    name = CompressAIZoo("z", arch="bmshj2018-hyperprior").urls[1].rsplit("/", 1)[1]
    (www / "models").mkdir(exist_ok=True)
    path = www / "models" / name
    torch.save(net.state_dict(), path)
    return name, hashlib.sha256(path.read_bytes()).hexdigest()


def test_zoo_download_verified_and_round_trip(weight_server, tmp_path, odd_image):
    base, www = weight_server
    name, sha = _publish_tiny_zoo_file(www)
    codec = CompressAIZoo("zoo", arch="bmshj2018-hyperprior", qualities=[1], base_url=base,
                          cache_dir=str(tmp_path / "cache"), sha256={1: sha})
    codec.check_available()
    assert (tmp_path / "cache" / name).is_file()
    data = codec.encode(odd_image, 1)
    assert codec.decode(data).shape == odd_image.shape
    assert codec.weights == f"pretrained:{sha}"
    # a second codec finds the verified file in the cache, without the server
    (www / "models" / name).unlink()
    again = CompressAIZoo("zoo", arch="bmshj2018-hyperprior", qualities=[1], base_url=base,
                          cache_dir=str(tmp_path / "cache"), sha256={1: sha})
    again.check_available()


def test_zoo_checksum_mismatch_is_a_clear_error(weight_server, tmp_path):
    base, www = weight_server
    name, _ = _publish_tiny_zoo_file(www)
    codec = CompressAIZoo("zoo", arch="bmshj2018-hyperprior", qualities=[1], base_url=base,
                          cache_dir=str(tmp_path / "cache"), sha256={1: "0" * 64})
    with pytest.raises(CodecUnavailable, match="checksum mismatch"):
        codec.check_available()
    assert not (tmp_path / "cache" / name).exists()   # the bad file is not kept
    # without a pinned digest the file name's sha256 prefix is checked (and fails for this fake file)
    unpinned = CompressAIZoo("zoo", arch="bmshj2018-hyperprior", qualities=[1], base_url=base,
                             cache_dir=str(tmp_path / "cache"))
    with pytest.raises(CodecUnavailable, match=r"expected 7eb97409\.\.\."):
        unpinned.check_available()


def test_zoo_offline_and_404(weight_server, tmp_path):
    base, _ = weight_server   # serves nothing under /models: 404
    codec = CompressAIZoo("zoo", arch="mbt2018-mean", qualities=[2], base_url=base, cache_dir=str(tmp_path))
    with pytest.raises(CodecUnavailable, match="cannot download"):
        codec.check_available()
    dead = CompressAIZoo("zoo", arch="cheng2020-anchor", qualities=[1], base_url="http://127.0.0.1:9/x",
                         cache_dir=str(tmp_path), timeout=5)
    with pytest.raises(CodecUnavailable, match="offline"):
        dead.check_available()
    assert [p for p in tmp_path.iterdir() if p.suffix == ".part"] == []


def test_zoo_rejects_unknown_arch_and_quality():
    with pytest.raises(ValueError, match="no pretrained"):
        CompressAIZoo("z", arch="nope")
    with pytest.raises(ValueError, match="qualities"):
        CompressAIZoo("z", arch="cheng2020-anchor", qualities=[7])
