"""Metric weight files (cgdm.weights; command: python -m cgdm.evaluation.weights): download + verify
against a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from cgdm import weights as W

PAYLOAD = b"pretend these are LPIPS weights\n" * 1000


@pytest.fixture
def server(http_server):
    """Loopback HTTP server: /good.pth (PAYLOAD), /corrupt.pth (PAYLOAD with one byte changed), else 404.
    Returns (base URL, the list of request paths, which grows as requests arrive)."""
    srv = http_server({"/good.pth": PAYLOAD, "/corrupt.pth": PAYLOAD[:-1] + b"X"})
    return srv.url, srv.paths


SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _table(monkeypatch, *urls, sha=SHA):
    """Replace the weights table by one small file served from ``urls``."""
    w = W.WeightFile(key="toy", filename="toy-weights.pth", subdir="hub/pyiqa", urls=tuple(urls), sha256=sha,
                     size=None, description="toy")
    monkeypatch.setattr(W, "WEIGHTS", {"toy": w})
    monkeypatch.setitem(W.METRIC_WEIGHTS, "toymetric", ("toy",))
    return w


def test_fetch_downloads_verifies_and_is_idempotent(tmp_path, server, monkeypatch):
    base, hits = server
    w = _table(monkeypatch, f"{base}/good.pth")
    assert W.status("toymetric", tmp_path)[0] is False
    paths = W.fetch(tmp_path)
    assert paths == [tmp_path / "hub" / "pyiqa" / "toy-weights.pth"]
    assert paths[0].read_bytes() == PAYLOAD
    assert W.status("toymetric", tmp_path) == (True, "ok")
    W.fetch(tmp_path)  # present and verified: no second request
    assert hits == ["/good.pth"]
    assert w.path(tmp_path) == paths[0]


def test_checksum_mismatch_leaves_no_file(tmp_path, server, monkeypatch):
    base, _ = server
    _table(monkeypatch, f"{base}/corrupt.pth")
    with pytest.raises(W.WeightsError) as exc:
        W.fetch(tmp_path)
    msg = str(exc.value)
    assert "does not match the expected" in msg and "toy-weights.pth" in msg and "discarded" in msg
    folder = tmp_path / "hub" / "pyiqa"
    assert list(folder.iterdir()) == []  # neither the file nor a .part left behind


def test_falls_back_to_the_next_url(tmp_path, server, monkeypatch):
    base, hits = server
    _table(monkeypatch, f"{base}/missing.pth", f"{base}/good.pth")
    W.fetch(tmp_path)
    assert hits == ["/missing.pth", "/good.pth"]


def test_404_and_offline_errors_name_url_sha_and_destination(tmp_path, server, monkeypatch):
    base, _ = server
    w = _table(monkeypatch, f"{base}/missing.pth", "http://127.0.0.1:9/unreachable.pth")
    with pytest.raises(W.WeightsError) as exc:
        W.fetch(tmp_path, timeout=5)
    msg = str(exc.value)
    assert "missing.pth" in msg and "404" in msg and "unreachable.pth" in msg
    assert w.sha256 in msg and str(w.path(tmp_path)) in msg and "--mirror" in msg


def test_mirror_folder(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy-weights.pth").write_bytes(PAYLOAD)
    _table(monkeypatch, "http://127.0.0.1:9/never-used.pth")
    W.fetch(tmp_path / "cache", mirror=str(mirror))
    assert W.status("toymetric", tmp_path / "cache") == (True, "ok")


def test_status_reports_wrong_content(tmp_path, monkeypatch):
    w = _table(monkeypatch, "http://127.0.0.1:9/x")
    w.path(tmp_path).parent.mkdir(parents=True)
    w.path(tmp_path).write_bytes(b"random weights")
    ok, reason = W.status("toymetric", tmp_path)
    assert not ok and "sha256" in reason and "--fetch" in reason


def test_cli_fetch_writes_marker_and_fails_with_exit_2(tmp_path, server, monkeypatch, capsys):
    base, _ = server
    _table(monkeypatch, f"{base}/good.pth")
    marker = tmp_path / "weights" / ".fetched"
    assert W.main(["--fetch", "--cache", str(tmp_path / "c"), "--marker", str(marker)]) == 0
    assert hashlib.sha256(PAYLOAD).hexdigest() in marker.read_text()
    _table(monkeypatch, f"{base}/corrupt.pth")
    assert W.main(["--fetch", "--cache", str(tmp_path / "c2"), "--marker", str(tmp_path / "m2")]) == 2
    assert "does not match" in capsys.readouterr().err and not (tmp_path / "m2").exists()


def test_table_is_complete_and_well_formed():
    for w in W.WEIGHTS.values():
        # full digests, except the one file whose digest is published only as a file-name prefix
        assert len(w.sha256) == 64 or w.key == "lpips_vgg_v0.1"
        assert len(w.sha256) >= 8 and all(c in "0123456789abcdef" for c in w.sha256)
        assert w.urls and all(u.startswith("https://") for u in w.urls)
        # torch hub / pyiqa file names carry the first hex digits of the sha256
        stem = w.filename.rsplit(".", 1)[0]
        if "-" in stem and w.key != "inception":
            assert w.sha256.startswith(stem.rsplit("-", 1)[1])
    for keys in W.METRIC_WEIGHTS.values():
        assert all(k in W.WEIGHTS for k in keys)


def test_default_cache_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CGDM_WEIGHTS_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert W.default_cache() == tmp_path / "th"
    monkeypatch.setenv("CGDM_WEIGHTS_CACHE", str(tmp_path / "cg"))
    assert W.default_cache() == tmp_path / "cg"


def test_replaced_table_entry_keeps_dataclass_fields():
    w = W.WEIGHTS["alexnet"]
    assert dataclasses.replace(w, size=None).path("/x").as_posix() == "/x/hub/checkpoints/alexnet-owt-7be5be79.pth"
