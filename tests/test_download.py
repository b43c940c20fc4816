"""cgdm.download: verified, atomic downloads from a loopback HTTP server (no real hosts)."""

from __future__ import annotations

import hashlib
import socket

import pytest

from cgdm.download import DownloadError, check_file, download, part_path, sha256_file

PAYLOAD = bytes(range(256)) * 40
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(http_server):
    """/good.bin (PAYLOAD), /short.bin (announces more bytes than it sends), /slow.bin (never answers), else 404."""
    srv = http_server({"/good.bin": PAYLOAD, "/short.bin": PAYLOAD + b"\0"}, cut_after={"/short.bin": len(PAYLOAD)},
                      hang={"/slow.bin"})
    return srv.url


def test_good_file_full_hash_and_prefix(server, tmp_path):
    dest = tmp_path / "sub" / "good.bin"
    assert download(f"{server}/good.bin", dest, sha256=SHA, size=len(PAYLOAD), progress=False) == SHA
    assert dest.read_bytes() == PAYLOAD and sha256_file(dest) == SHA
    assert check_file(dest, SHA, len(PAYLOAD)) is None
    other = tmp_path / f"good-{SHA[:8]}.bin"  # torch hub / CompressAI style: the name carries a prefix
    download(f"{server}/good.bin", other, sha256=SHA[:8], progress=False)
    assert other.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(["good.bin", other.name])


def test_sha_mismatch_leaves_nothing(server, tmp_path):
    url = f"{server}/good.bin"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.bin", sha256="0" * 64, progress=False)
    assert err.value.digest == SHA and url in str(err.value) and "checksum mismatch" in str(err.value)
    assert "expected " + "0" * 64 in str(err.value)
    with pytest.raises(DownloadError, match=r"expected 00000000\.\.\.") as err:
        download(url, tmp_path / "x.bin", sha256="0" * 8, progress=False)
    assert err.value.digest == SHA
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part left behind


def test_size_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="size mismatch: the server announces") as err:
        download(f"{server}/good.bin", tmp_path / "x.bin", sha256=SHA, size=len(PAYLOAD) + 1, progress=False)
    assert err.value.digest is None
    with pytest.raises(DownloadError, match="connection closed after"):
        download(f"{server}/short.bin", tmp_path / "x.bin", sha256=None, progress=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "y.bin").write_bytes(PAYLOAD)
    assert "size mismatch" in check_file(tmp_path / "y.bin", SHA, len(PAYLOAD) - 1)
    assert "checksum mismatch" in check_file(tmp_path / "y.bin", "f" * 64)


def test_404_names_url_and_status(server, tmp_path):
    url = f"{server}/missing.bin"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.bin", sha256=SHA, progress=False)
    assert str(err.value) == f"{url}: HTTP 404 Not Found" and err.value.digest is None
    assert list(tmp_path.iterdir()) == []


def test_timeout_and_closed_port(server, tmp_path):
    url = f"{server}/slow.bin"
    with pytest.raises(DownloadError, match=r"no answer within 0\.3 s") as err:
        download(url, tmp_path / "x.bin", sha256=SHA, timeout=0.3, progress=False)
    assert url in str(err.value)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "x.bin", sha256=SHA, timeout=5, progress=False)
    assert str(err.value).startswith(f"{url}: ") and isinstance(err.value.__cause__, OSError)
    assert list(tmp_path.iterdir()) == []


def test_resume_keeps_part_on_drop_and_continues_with_range(http_server, tmp_path):
    """resume=True (the datasets' archives): a dropped transfer keeps <dest>.part, the next call continues it
    with a Range request; a server without range support sends the whole file, which replaces the part."""
    srv = http_server({"/big.bin": PAYLOAD}, ranges=True, cut_after=1000)
    dest = tmp_path / "big.bin"
    part = part_path(dest)
    assert part == tmp_path / "big.bin.part"
    with pytest.raises(DownloadError, match="connection closed after 1,000 of 10,240 bytes") as err:
        download(f"{srv.url}/big.bin", dest, sha256=SHA, size=len(PAYLOAD), progress=False, resume=True)
    assert isinstance(err.value.__cause__, ConnectionError)
    assert part.read_bytes() == PAYLOAD[:1000] and not dest.exists()
    srv.cut_after = None
    assert download(f"{srv.url}/big.bin", dest, sha256=SHA, size=len(PAYLOAD), progress=False, resume=True) == SHA
    assert srv.requests == [("/big.bin", None), ("/big.bin", "bytes=1000-")]
    assert dest.read_bytes() == PAYLOAD and not part.exists()

    plain = http_server({"/big.bin": PAYLOAD})  # ignores Range: 200 with the whole file
    dest.unlink()
    part.write_bytes(b"stale bytes")
    download(f"{plain.url}/big.bin", dest, sha256=SHA, size=len(PAYLOAD), progress=False, resume=True)
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_resume_deletes_wrong_bytes(http_server, tmp_path):
    srv = http_server({"/big.bin": PAYLOAD}, ranges=True)
    dest = tmp_path / "big.bin"
    part_path(dest).write_bytes(b"\xff" * 100)  # a part that does not belong to the file
    with pytest.raises(DownloadError, match="checksum mismatch") as err:
        download(f"{srv.url}/big.bin", dest, sha256=SHA, size=len(PAYLOAD), progress=False, resume=True)
    assert err.value.__cause__ is None and err.value.digest != SHA
    assert list(tmp_path.iterdir()) == []
