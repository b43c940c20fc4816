"""Checkpoints (hash-verified) and the zoo's download + sha256 check, against a loopback HTTP server."""

from __future__ import annotations

import hashlib

import pytest
import torch

from cgdm import zoo
from cgdm.codec import ARCH, BaseCodec
from cgdm.harness.cgdm_codecs import CGDMBaseCodec
from cgdm.harness.codecs import CodecUnavailable
from cgdm.zoo import (
    CheckpointError,
    WeightsUnavailable,
    ZooEntry,
    load_checkpoint,
    save_checkpoint,
    weights_sha256,
)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = BaseCodec(N=8, M=8, num_rates=2, syntax_dim=4)
    m.update(force=True)
    path = tmp_path_factory.mktemp("ckpt") / "m.pth"
    h = save_checkpoint(path, m.state_dict(), {"arch": ARCH, "steps": 3, "config": m.config})
    return path, h


def test_weights_hash_is_stable_and_sensitive():
    sd = {"a": torch.arange(6.0).view(2, 3), "b": torch.zeros(2, dtype=torch.int32)}
    h = weights_sha256(sd)
    assert h == weights_sha256({"b": sd["b"].clone(), "a": sd["a"].clone()})  # order and copies don't matter
    assert h != weights_sha256({**sd, "a": sd["a"] + 1e-6})
    assert h != weights_sha256({**sd, "a": sd["a"].view(3, 2)})  # shape is part of the hash
    assert h != weights_sha256({**sd, "b": sd["b"].float()})  # dtype too


def test_checkpoint_round_trip_and_tamper_detection(small_ckpt, tmp_path):
    path, h = small_ckpt
    ckpt = load_checkpoint(path, arch=ARCH)
    assert ckpt["meta"]["weights_sha256"] == h and ckpt["meta"]["steps"] == 3
    model, _ = zoo.load_base_codec(path)
    assert not model.training and model.num_rates == 2

    ckpt["state_dict"]["g_a.0.weight"][0, 0, 0, 0] += 1.0  # edit a weight, keep the recorded hash
    bad = tmp_path / "tampered.pth"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="architecture"):
        load_checkpoint(path, arch="something-else")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="needs 'steps'"):
        save_checkpoint(tmp_path / "x.pth", {}, {"arch": ARCH})


def test_published_entries_are_well_formed():
    for name, entry in zoo.ZOO.items():
        assert entry.name == name and entry.arch == ARCH
        assert len(entry.lambdas) == entry.config["num_rates"]
        assert entry.url.startswith("https://")
        assert entry.sha256 is None or len(entry.sha256) == 64
        BaseCodec(**entry.config)  # the config builds the architecture


def test_unpublished_entry_is_unavailable():
    with pytest.raises(WeightsUnavailable, match="no weights are published yet"):
        zoo.load_pretrained("cgdm-base-quick")
    with pytest.raises(KeyError, match="available"):
        zoo.load_pretrained("nope")
    # the harness reports the zoo's reason, same words, as an unavailable codec (the core knows no codecs)
    codec = CGDMBaseCodec("cgdm_base", models={"base": "cgdm-base-quick"})
    with pytest.raises(CodecUnavailable, match="^zoo model 'cgdm-base-quick': no weights are published yet"):
        codec.check_available()


@pytest.fixture
def server(http_server, small_ckpt):
    """Serve the checkpoint folder over loopback HTTP; yields (base URL, every request path)."""
    srv = http_server(small_ckpt[0].parent)
    return srv.url, srv.paths


def _entry(url, sha, weights=None):
    return ZooEntry(name="test-model", arch=ARCH, config={"N": 8, "M": 8, "num_rates": 2, "syntax_dim": 4,
                                                           "syntax_pool_channels": None},
                    lambdas=(0.001, 0.002), url=url, sha256=sha, weights_sha256=weights)


def test_download_verify_and_cache(small_ckpt, server, tmp_path, monkeypatch):
    path, h = small_ckpt
    base, hits = server
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setitem(zoo.ZOO, "test-model", _entry(f"{base}/m.pth", sha, h))

    _, meta = zoo.load_pretrained("test-model", progress=False)
    assert meta["weights_sha256"] == h and hits == ["/m.pth"]
    cached = tmp_path / "hub" / "checkpoints" / f"test-model-{sha[:8]}.pth"
    assert cached.read_bytes() == path.read_bytes()
    zoo.load_pretrained("test-model", progress=False)
    assert hits == ["/m.pth"]  # second load from the verified cache
    assert zoo.find_by_weights_hash(bytes.fromhex(h[:16])).name == "test-model"
    assert zoo.resolve_model("test-model")[1]["weights_sha256"] == h

    cached.write_bytes(b"damaged")  # a damaged cache file is replaced by a fresh, verified download
    zoo.load_pretrained("test-model", progress=False)
    assert len(hits) == 2 and cached.read_bytes() == path.read_bytes()


def test_download_with_wrong_sha_is_refused(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setitem(zoo.ZOO, "test-model", _entry(f"{base}/m.pth", "0" * 64))
    with pytest.raises(CheckpointError, match="expected 0000"):
        zoo.load_pretrained("test-model", progress=False)
    assert list((tmp_path / "hub" / "checkpoints").iterdir()) == []  # nothing unverified is left behind


def test_download_failure_is_unavailable(server, tmp_path, monkeypatch):
    base, _ = server
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setitem(zoo.ZOO, "test-model", _entry(f"{base}/missing.pth", "0" * 64))
    with pytest.raises(WeightsUnavailable, match="download of .* failed"):
        zoo.load_pretrained("test-model", progress=False)


def test_weights_hash_mismatch_with_table(small_ckpt, server, tmp_path, monkeypatch):
    path, _ = small_ckpt
    base, _ = server
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setitem(zoo.ZOO, "test-model", _entry(f"{base}/m.pth", sha, "f" * 64))
    with pytest.raises(CheckpointError, match="differs from the table"):
        zoo.load_pretrained("test-model", progress=False)


# -- shipped weights (zoo/, installed by the workflow instead of training) -----------------------------
SPEC = {"trainer": "cgdm.train:train_base", "params": {"N": 8, "M": 8, "steps": 3}, "threads": 1, "zoo": "tiny"}


@pytest.fixture
def shipped(small_ckpt, tmp_path):
    folder = tmp_path / "zoo"
    zoo.ship({"tiny": (SPEC, small_ckpt[0], {"wall_s": 1.5})}, "abc123", folder)
    return folder


def test_ship_then_install_copies_the_exact_file(small_ckpt, shipped, tmp_path):
    entry = zoo.shipped_models(shipped)["tiny"]
    assert entry.sha256 == zoo.sha256_file(small_ckpt[0])
    assert entry.provenance["revision"] == "abc123" and entry.provenance["wall_s"] == 1.5
    assert entry.provenance["weights_sha256"] == small_ckpt[1] and entry.provenance["steps"] == 3
    # threads and the zoo name itself do not change the weights: not part of the checked spec
    out = zoo.install_shipped("tiny", {**SPEC, "threads": 2}, tmp_path / "models" / "m.pt", shipped)
    assert out.read_bytes() == small_ckpt[0].read_bytes()
    assert load_checkpoint(out)["meta"]["weights_sha256"] == small_ckpt[1]


def test_ship_halves_a_baselines_file_and_keeps_the_provenance_it_continued(tmp_path):
    # the learned baselines' format: one state dict per lambda; large float tensors go to float16
    path = tmp_path / "b.pt"
    sd = {"w": torch.randn(2048), "bias": torch.randn(10), "cdf": torch.arange(4096, dtype=torch.int32)}
    torch.save({"state_dict": [sd, sd], "meta": {"arch": "bmshj2018-hyperprior", "steps": 2}}, path)
    spec = {"trainer": "baselines.learned_training:train", "params": {"steps": 2}}
    folder = tmp_path / "zoo"
    zoo.ship({"b": (spec, path, {"cpu_s": 1.0})}, "r1", folder)
    stored = torch.load(folder / "b.pt", weights_only=True)
    assert [d["w"].dtype for d in stored["state_dict"]] == [torch.float16] * 2
    assert stored["state_dict"][0]["bias"].dtype == torch.float32
    assert torch.equal(stored["state_dict"][0]["cdf"], sd["cdf"]) and "float16" in stored["meta"]["stored_as"]
    # hash-checked like every checkpoint, over the float16 tensors it holds
    assert load_checkpoint(folder / "b.pt")["meta"]["weights_sha256"] == zoo.shipped_models(folder)["b"].provenance[
        "weights_sha256"]
    assert "continued_from" not in zoo.shipped_models(folder)["b"].provenance
    # trained further from the shipped weights (cgdm zoo-extend): the earlier sitting's provenance is kept
    torch.save({"state_dict": [sd, sd], "meta": {"arch": "bmshj2018-hyperprior", "steps": 3,
                                                 "extended_from": str(folder / "b.pt")}}, path)
    zoo.ship({"b": ({**spec, "params": {"steps": 3}}, path, {"cpu_s": 2.0})}, "r2", folder)
    prov = zoo.shipped_models(folder)["b"].provenance
    assert prov["revision"] == "r2" and prov["cpu_s"] == 2.0
    assert prov["continued_from"]["revision"] == "r1" and prov["continued_from"]["cpu_s"] == 1.0


def test_install_refuses_other_params_naming_the_fix(shipped, tmp_path):
    other = {**SPEC, "params": {**SPEC["params"], "steps": 4}}
    with pytest.raises(CheckpointError, match="trained with another spec.*retrain: true"):
        zoo.install_shipped("tiny", other, tmp_path / "m.pt", shipped)
    with pytest.raises(CheckpointError, match="no shipped weights named 'nope'"):
        zoo.install_shipped("nope", SPEC, tmp_path / "m.pt", shipped)
    assert not (tmp_path / "m.pt").exists()


def test_install_refuses_a_replaced_file(shipped, tmp_path):
    f = shipped / "tiny.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* differs from zoo.json"):
        zoo.install_shipped("tiny", SPEC, tmp_path / "m.pt", shipped)
    f.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        zoo.install_shipped("tiny", SPEC, tmp_path / "m.pt", shipped)
    assert not (tmp_path / "m.pt").exists()


def test_the_repository_ships_every_quick_profile_model():
    """config/config.yaml installs all its models from zoo/ (make reproduce trains nothing), and each
    shipped file is intact, small, and has its provenance."""
    import yaml

    cfg = yaml.safe_load((zoo.SHIPPED_DIR.parent / "config" / "config.yaml").read_text())
    for name, entry in cfg["models"].items():
        assert entry.get("zoo"), f"models.{name} has no shipped weights"
        shipped = zoo.check_shipped(entry["zoo"], entry)
        path = zoo.SHIPPED_DIR / shipped.file
        assert path.stat().st_size < 20_000_000
        assert zoo.sha256_file(path) == shipped.sha256
        prov = shipped.provenance
        assert {"revision", "device", "steps", "wall_s", "cpu_s", "weights_sha256"} <= set(prov), name
        # trained on the 36 training photos only: data/val is held out
        assert prov["train_images"] == 36, name
