"""Datasets (registry, preparation, ``cgdm download``): download, verification and extraction against a
loopback HTTP server.

The server runs in a thread on 127.0.0.1 (port 0) and serves a small zip made here; registry entries
are injected with monkeypatch so that no test touches the real hosts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cgdm import dataset_registry as R
from cgdm import datasets as D
from cgdm.cli_datasets import download_main
from cgdm.dataset_checksums import SHA256SUMS, read_sha256sums
from cgdm.dataset_registry import Dataset, DatasetError, RemoteFile
from cgdm.imageio import list_images

# -- fixtures --------------------------------------------------------------------------------------

def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


IMAGES = {"a.png": _png(1), "b.png": _png(2), "c.png": _png(3)}
# the layout of the CLIC zips, plus the debris macOS adds and a non-image file
ARCHIVE = _zip({"valid/a.png": IMAGES["a.png"], "valid/b.png": IMAGES["b.png"], "valid/sub/c.png": IMAGES["c.png"],
                "__MACOSX/valid/._a.png": b"\x00\x05\x16\x07junk", "valid/._b.png": b"junk",
                "valid/readme.txt": b"not an image"})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(http_server):
    """Loopback server (conftest.py's ``http_server``) over {path: bytes}; honours ``Range: bytes=N-``."""
    return http_server({"/cvl/fixture.zip": ARCHIVE, "/kodak/a.png": IMAGES["a.png"],
                        "/kodak/b.png": IMAGES["b.png"]}, ranges=True)


def _closed_port_url() -> str:
    with socket.socket() as s:  # bind, read the port, close: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _archive_entry(url: str, data: bytes = ARCHIVE, **kw) -> Dataset:
    ds = Dataset(name="fixture", kind="archive", description="fixture", split="valid",
                 files=(RemoteFile(url, len(data), _sha(data)),), layout="valid/*.png", n_images=3)
    return dataclasses.replace(ds, **kw)


@pytest.fixture
def register(monkeypatch):
    def _register(ds: Dataset) -> Dataset:
        monkeypatch.setitem(R.REGISTRY, ds.name, ds)
        return ds
    return _register


def _leftovers(root: Path) -> list[str]:
    """Everything under root except empty folders (partial files, temp folders, images)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.name.startswith("."))


# -- archives over HTTP ----------------------------------------------------------------------------

def test_good_archive_is_extracted_flat_with_manifest(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    images = D.prepare("fixture", tmp_path, progress=False)

    assert images == tmp_path / "fixture" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png", "c.png"]
    for name, data in IMAGES.items():
        assert (images / name).read_bytes() == data
    manifest = read_sha256sums(tmp_path / "fixture" / D.MANIFEST)
    assert manifest == {f"images/{n}": _sha(d) for n, d in IMAGES.items()}
    assert (tmp_path / D.DOWNLOADS / "fixture.zip").read_bytes() == ARCHIVE  # kept, verified
    assert D.list_dataset_images("fixture", tmp_path) == [images / n for n in sorted(IMAGES)]
    assert not [p for p in (tmp_path / "fixture").iterdir() if p.name.startswith(".")]


def test_second_call_is_a_noop(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    D.prepare("fixture", tmp_path, progress=False)
    manifest = tmp_path / "fixture" / D.MANIFEST
    stamp = manifest.stat().st_mtime_ns
    n_requests = len(server.requests)

    assert D.prepare("fixture", tmp_path, progress=False) == tmp_path / "fixture" / "images"
    assert len(server.requests) == n_requests == 1
    assert manifest.stat().st_mtime_ns == stamp


def test_modified_image_after_completion_is_repaired(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    images = D.prepare("fixture", tmp_path, progress=False)
    (images / "a.png").write_bytes(b"tampered")
    D.prepare("fixture", tmp_path, progress=False)  # re-extracted from the kept archive, no request
    assert (images / "a.png").read_bytes() == IMAGES["a.png"]
    assert len(server.requests) == 1


def test_corrupt_archive_raises_and_leaves_nothing(server, register, tmp_path):
    url = f"{server.url}/cvl/fixture.zip"
    register(_archive_entry(url, files=(RemoteFile(url, len(ARCHIVE), "0" * 64),)))
    with pytest.raises(DatasetError) as err:
        D.prepare("fixture", tmp_path, progress=False)
    msg = str(err.value)
    assert "checksum mismatch" in msg and "fixture" in msg and url in msg
    assert "0" * 64 in msg and str(tmp_path / D.DOWNLOADS / "fixture.zip") in msg  # how to place it
    assert not (tmp_path / "fixture" / "images").exists()
    assert _leftovers(tmp_path) == []


def test_size_mismatch_announced_by_server_fails_before_download(server, register, tmp_path):
    url = f"{server.url}/cvl/fixture.zip"
    register(_archive_entry(url, files=(RemoteFile(url, len(ARCHIVE) + 5, _sha(ARCHIVE)),)))
    with pytest.raises(DatasetError, match="size mismatch"):
        D.prepare("fixture", tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_http_404_names_the_url(server, register, tmp_path):
    url = f"{server.url}/cvl/missing.zip"
    register(_archive_entry(url))
    with pytest.raises(DatasetError) as err:
        D.prepare("fixture", tmp_path, progress=False)
    assert "HTTP 404" in str(err.value) and url in str(err.value) and "'fixture'" in str(err.value)
    assert _leftovers(tmp_path) == []


def test_offline_gives_manual_instructions(register, tmp_path):
    url = f"{_closed_port_url()}/cvl/fixture.zip"
    register(_archive_entry(url))
    with pytest.raises(DatasetError) as err:
        D.prepare("fixture", tmp_path, progress=False, timeout=5)
    msg = str(err.value)
    assert "cannot connect" in msg and url in msg
    assert _sha(ARCHIVE) in msg and f"{len(ARCHIVE):,} bytes" in msg
    assert str(tmp_path / D.DOWNLOADS / "fixture.zip") in msg and "data.mirror" in msg
    assert _leftovers(tmp_path) == []


def test_hand_placed_archive_is_used_offline(register, tmp_path):
    register(_archive_entry(f"{_closed_port_url()}/cvl/fixture.zip"))
    (tmp_path / D.DOWNLOADS).mkdir()
    (tmp_path / D.DOWNLOADS / "fixture.zip").write_bytes(ARCHIVE)
    images = D.prepare("fixture", tmp_path, progress=False)
    assert len(list_images(images)) == 3


def test_interrupted_download_resumes_with_range(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    part = tmp_path / D.DOWNLOADS / "fixture.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE[:100])
    D.prepare("fixture", tmp_path, progress=False)
    assert server.requests == [("/cvl/fixture.zip", "bytes=100-")]
    assert (tmp_path / D.DOWNLOADS / "fixture.zip").read_bytes() == ARCHIVE
    assert not part.exists()


def test_dropped_connection_keeps_part_and_next_run_resumes(server, register, tmp_path):
    url = f"{server.url}/cvl/fixture.zip"
    register(_archive_entry(url))
    server.cut_after = 200
    with pytest.raises(DatasetError, match=r"transfer interrupted.*200 bytes kept in .*fixture\.zip\.part"):
        D.prepare("fixture", tmp_path, progress=False)
    assert not (tmp_path / "fixture" / "images").exists()
    server.cut_after = None
    D.prepare("fixture", tmp_path, progress=False)
    assert server.requests[-1] == ("/cvl/fixture.zip", "bytes=200-")
    assert (tmp_path / D.DOWNLOADS / "fixture.zip").read_bytes() == ARCHIVE


def test_server_that_never_answers_times_out(register, tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/cvl/fixture.zip"
        register(_archive_entry(url))
        with pytest.raises(DatasetError, match=r"no answer within 0\.2 s") as err:
            D.prepare("fixture", tmp_path, progress=False, timeout=0.2)
    assert url in str(err.value) and _leftovers(tmp_path) == []


def test_name_collision_after_flattening_fails(server, register, tmp_path):
    data = _zip({"valid/x.png": IMAGES["a.png"], "other/X.png": IMAGES["b.png"]})
    server.files["/cvl/clash.zip"] = data
    register(_archive_entry(f"{server.url}/cvl/clash.zip", data=data, n_images=None))
    with pytest.raises(DatasetError, match=r"same name.*valid/x\.png.*other/X\.png"):
        D.prepare("fixture", tmp_path, progress=False)
    assert not (tmp_path / "fixture" / "images").exists()
    assert [p.name for p in (tmp_path / "fixture").iterdir()] == []


def test_wrong_image_count_fails_without_images_folder(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip", n_images=4))
    with pytest.raises(DatasetError, match="3 images extracted, the registry expects 4"):
        D.prepare("fixture", tmp_path, progress=False)
    assert not (tmp_path / "fixture" / "images").exists()
    assert not (tmp_path / "fixture" / D.MANIFEST).exists()


def test_stale_images_without_manifest_are_replaced(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    stale = tmp_path / "fixture" / "images"
    stale.mkdir(parents=True)
    (stale / "a.png").write_bytes(b"half")
    (stale / "zzz.png").write_bytes(b"old")
    with pytest.raises(DatasetError, match="not prepared.*cgdm download fixture"):
        D.image_dir("fixture", tmp_path)
    assert D.image_dir("fixture", tmp_path, check=False) == stale
    D.prepare("fixture", tmp_path, progress=False)
    assert sorted(p.name for p in stale.iterdir()) == ["a.png", "b.png", "c.png"]


# -- mirrors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_local_mirror(register, tmp_path, as_url):
    register(_archive_entry(f"{_closed_port_url()}/cvl/fixture.zip"))  # the original host is down
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fixture.zip").write_bytes(ARCHIVE)
    root = tmp_path / "datasets"
    images = D.prepare("fixture", root, mirror=mirror.as_uri() if as_url else str(mirror), progress=False)
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png", "c.png"]
    assert not (root / D.DOWNLOADS / "fixture.zip").exists()  # used in place, not copied


def test_local_mirror_missing_or_wrong_file(register, tmp_path):
    register(_archive_entry(f"{_closed_port_url()}/cvl/fixture.zip"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with pytest.raises(DatasetError, match="not in the mirror folder") as err:
        D.prepare("fixture", tmp_path / "d", mirror=str(mirror), progress=False)
    assert str(mirror / "fixture.zip") in str(err.value)
    (mirror / "fixture.zip").write_bytes(ARCHIVE[:-1] + b"!")
    with pytest.raises(DatasetError, match="mirror's copy of fixture.zip is wrong: checksum mismatch"):
        D.prepare("fixture", tmp_path / "d", mirror=str(mirror), progress=False)
    assert _leftovers(tmp_path / "d") == []


def test_http_mirror_replaces_host(server, register, tmp_path):
    register(_archive_entry(f"{_closed_port_url()}/somewhere/else/fixture.zip"))
    D.prepare("fixture", tmp_path, mirror=f"{server.url}/cvl/", progress=False)
    assert server.requests == [("/cvl/fixture.zip", None)]


# -- per-image datasets (Kodak) --------------------------------------------------------------------

def _images_entry(base: str, **kw) -> Dataset:
    ds = Dataset(name="kodak-like", kind="images", description="fixture", split="test",
                 files=tuple(RemoteFile(f"{base}/kodak/{n}", len(IMAGES[n]), _sha(IMAGES[n]))
                             for n in ("a.png", "b.png")), n_images=2)
    return dataclasses.replace(ds, **kw)


def test_images_downloaded_one_by_one(server, register, tmp_path):
    register(_images_entry(server.url))
    images = D.prepare("kodak-like", tmp_path, progress=False)
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "b.png"]
    assert (images / "b.png").read_bytes() == IMAGES["b.png"]
    assert (tmp_path / "kodak-like" / D.MANIFEST).is_file()


def test_images_one_missing_leaves_nothing(server, register, tmp_path):
    ds = _images_entry(server.url)
    missing = RemoteFile(f"{server.url}/kodak/zz.png", 10, "1" * 64)
    register(_images_entry(server.url, files=ds.files + (missing,), embedded=str(tmp_path / "absent")))
    with pytest.raises(DatasetError) as err:
        D.prepare("kodak-like", tmp_path, progress=False)
    msg = str(err.value)
    assert "HTTP 404" in msg and missing.url in msg and "1" * 64 in msg and "data.mirror" in msg
    assert _leftovers(tmp_path) == []


def test_images_dropped_connection_leaves_nothing(server, register, tmp_path):
    register(_images_entry(server.url))
    server.cut_after = 5
    with pytest.raises(DatasetError, match="transfer interrupted") as err:
        D.prepare("kodak-like", tmp_path, progress=False)
    assert "kept in" not in str(err.value)  # single images are not resumed: nothing is kept
    assert _leftovers(tmp_path) == []


def test_embedded_kodak_is_verified_and_used_in_place():
    folder = D.prepare("kodak", progress=False)
    assert folder == R.REPO_ROOT / "data" / "kodak"
    assert [p.name for p in D.list_dataset_images("kodak")] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    # the registry's checksums are those of the embedded manifest
    assert read_sha256sums(folder / "SHA256SUMS") == R.REGISTRY["kodak"].image_sha256


def test_tampered_embedded_kodak_is_an_error(monkeypatch, tmp_path):
    copy = tmp_path / "kodak"
    shutil.copytree(R.REPO_ROOT / "data" / "kodak", copy)
    monkeypatch.setitem(R.REGISTRY, "kodak", dataclasses.replace(R.REGISTRY["kodak"], embedded=str(copy)))
    assert D.prepare("kodak", tmp_path / "d", progress=False) == copy
    data = bytearray((copy / "kodim07.png").read_bytes())
    data[1000] ^= 0xFF
    (copy / "kodim07.png").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"kodim07\.png is modified or corrupt"):
        D.prepare("kodak", tmp_path / "d", progress=False)


def test_embedded_train_photos_are_verified():
    photos = D.prepare("embedded-train", progress=False)
    held_out = D.prepare("embedded-val", progress=False)
    train, val = list_images(photos), list_images(held_out)
    assert (len(train), len(val)) == (36, 4)
    assert not {p.name for p in train} & {p.name for p in val}  # the validation photos are never trained on


# -- user-defined folders --------------------------------------------------------------------------

def test_user_folder_with_and_without_checksums(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for n, d in IMAGES.items():
        (folder / n).write_bytes(d)
    spec = {"path": str(folder)}
    assert [p.name for p in D.list_dataset_images("mine", tmp_path, spec=spec)] == sorted(IMAGES)
    (folder / SHA256SUMS).write_text("".join(f"{_sha(d)}  {n}\n" for n, d in IMAGES.items()))
    assert D.prepare("mine", tmp_path, spec=spec, progress=False) == folder.resolve()
    (folder / "b.png").write_bytes(b"changed")
    with pytest.raises(DatasetError, match=r"b\.png is modified or corrupt"):
        D.prepare("mine", tmp_path, spec=spec, progress=False)
    (folder / "d.png").write_bytes(IMAGES["a.png"])
    with pytest.raises(DatasetError, match=r"not in the checksum list \['d\.png'\]"):
        D.prepare("mine", tmp_path, spec=spec, progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        D.prepare("mine", tmp_path, spec={"path": str(tmp_path / "nope")}, progress=False)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DatasetError, match=r"unknown dataset 'kodac'.*clic2020-mobile-valid.*--path"):
        R.get("kodac")


# -- registry and CLI ------------------------------------------------------------------------------

def test_registry_entries_are_complete():
    expected = {"kodak", "clic2020-professional-valid", "clic2020-mobile-valid", "clic2020-professional-test",
                "clic2020-mobile-test", "div2k-valid-hr", "div2k-train-hr", "clic2020-professional-train",
                "clic2020-mobile-train", "embedded-train"}
    assert expected <= set(R.REGISTRY)
    for ds in R.REGISTRY.values():
        assert ds.kind in ("images", "archive", "folder")
        assert (ds.kind == "folder") == (not ds.files)
        for f in ds.files:
            assert f.url.startswith("https://") and f.size > 0
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
        if ds.kind == "archive":
            assert ds.files and all(f.filename.endswith(".zip") for f in ds.files)
    # they share <root>/downloads: one file name, one file (a union dataset reuses its parts' archives)
    by_name: dict[str, set] = {}
    for ds in R.REGISTRY.values():
        for f in ds.files:
            by_name.setdefault(f.filename, set()).add(f)
    assert all(len(v) == 1 for v in by_name.values()), by_name
    # the whole CLIC 2020 test set (HiFiC's and MS-ILLM's "clic2020") is the union of its two halves
    union = R.REGISTRY["clic2020-test"]
    assert union.files == R.REGISTRY["clic2020-professional-test"].files + R.REGISTRY["clic2020-mobile-test"].files
    assert union.kind == "archive" and union.split == "test"


def _two_archives() -> dict[str, bytes]:
    return {"/cvl/pro.zip": _zip({"pro/a.png": IMAGES["a.png"], "pro/b.png": IMAGES["b.png"]}),
            "/cvl/mob.zip": _zip({"mob/c.png": IMAGES["c.png"], "__MACOSX/mob/._c.png": b"junk"})}


def test_dataset_of_two_archives_is_their_union_and_reuses_downloads(http_server, register, tmp_path):
    zips = _two_archives()
    srv = http_server(zips, ranges=True)
    files = {k: RemoteFile(f"{srv.url}{k}", len(v), _sha(v)) for k, v in zips.items()}
    register(_archive_entry("", name="pro", files=(files["/cvl/pro.zip"],), n_images=2))
    register(_archive_entry("", name="both", files=(files["/cvl/pro.zip"], files["/cvl/mob.zip"]),
                            n_images=3))
    D.prepare("pro", tmp_path, progress=False)
    srv.requests.clear()
    folder = D.prepare("both", tmp_path, progress=False)
    # the archive downloaded for "pro" is reused from <root>/downloads: only the other one is fetched
    assert [path for path, _ in srv.requests] == ["/cvl/mob.zip"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "c.png"]
    assert read_sha256sums(tmp_path / "both" / D.MANIFEST) == {f"images/{n}": _sha(v) for n, v in IMAGES.items()}
    assert download_main(["both", "--root", str(tmp_path), "--delete-archive"]) == 0   # already complete: no-op
    assert "pro.zip" in _manual_help_text(R.REGISTRY["both"], tmp_path)
    assert "mob.zip" in _manual_help_text(R.REGISTRY["both"], tmp_path)


def _manual_help_text(ds, root):
    return D._manual_help(ds, root)


def test_name_collision_across_archives_fails_and_leaves_no_images(http_server, register, tmp_path):
    zips = {"/cvl/one.zip": _zip({"x/a.png": IMAGES["a.png"]}), "/cvl/two.zip": _zip({"y/A.png": IMAGES["b.png"]})}
    srv = http_server(zips, ranges=True)
    files = tuple(RemoteFile(f"{srv.url}{k}", len(v), _sha(v)) for k, v in zips.items())
    register(_archive_entry("", name="clash2", files=files, n_images=None))
    with pytest.raises(DatasetError, match=r"same name.*one\.zip:a\.png.*y/A\.png"):
        D.prepare("clash2", tmp_path, progress=False)
    assert not (tmp_path / "clash2" / "images").exists() and not (tmp_path / "clash2" / D.MANIFEST).exists()


def test_cli_download_writes_marker(server, register, tmp_path, capsys):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    marker = tmp_path / "done" / "fixture.json"
    assert download_main(["fixture", "--root", str(tmp_path), "--marker", str(marker)]) == 0
    info = json.loads(marker.read_text())
    assert info["n_images"] == 3 and info["files"] == ["a.png", "b.png", "c.png"]
    assert Path(info["images"]) == tmp_path / "fixture" / "images"
    assert "3 images verified" in capsys.readouterr().out


def test_cli_delete_archive(server, register, tmp_path):
    register(_archive_entry(f"{server.url}/cvl/fixture.zip"))
    assert download_main(["fixture", "--root", str(tmp_path), "--delete-archive"]) == 0
    assert not (tmp_path / D.DOWNLOADS / "fixture.zip").exists()
    assert len(D.list_dataset_images("fixture", tmp_path)) == 3


def test_cli_error_exits_2_with_message(register, tmp_path, capsys):
    url = f"{_closed_port_url()}/cvl/fixture.zip"
    register(_archive_entry(url))
    marker = tmp_path / "fixture.json"
    assert download_main(["fixture", "--root", str(tmp_path), "--marker", str(marker), "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert url in err and "data.mirror" in err and not marker.exists()


def test_cli_list(capsys):
    assert download_main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in R.REGISTRY:
        assert name in out
    assert download_main(["--list", "div2k-valid-hr"]) == 0
    out = capsys.readouterr().out
    assert "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc" in out and "448,993,893" in out
