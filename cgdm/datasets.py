"""Dataset preparation: fetch, verify and install a dataset of the registry, or check a local folder.

What each dataset is and where its files come from is :mod:`cgdm.dataset_registry`; the checksum lists
are read and checked by :mod:`cgdm.dataset_checksums`. :func:`prepare` makes a dataset ready:

1. embedded copy (``data/kodak``, ``data/train``): verified against the checksums and used in place;
2. otherwise each file is taken from ``resources/datasets/downloads/`` if already there, else from the
   mirror (``data.mirror`` in the config: a local folder, ``file://`` or ``http(s)://`` base URL), else
   from the original URL; it is downloaded to ``<file>.part`` (resumed with an HTTP Range request
   after an interruption), checked for size and SHA-256, and only then renamed (all by
   :func:`cgdm.download.download`, the suite's one downloader);
3. the images are extracted into a temporary folder next to the destination, hashed, renamed to
   ``<root>/<name>/images/`` in one step, and ``<root>/<name>/MANIFEST.sha256`` is written last as the
   completion marker (``cd <root>/<name> && sha256sum -c MANIFEST.sha256`` re-checks it by hand).

A failed or interrupted run therefore never leaves an ``images/`` folder that looks complete. Every
failure (offline, HTTP error, time-out, size or checksum mismatch, bad archive) raises the one
exception :class:`cgdm.dataset_registry.DatasetError`, whose message names the dataset, the URL, what
went wrong and how to place the files by hand. :func:`image_dir` and :func:`list_dataset_images` find
the images of a prepared dataset without network access or hashing (the workflow lists them with it).

The command line is ``cgdm download`` (:mod:`cgdm.cli_datasets`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from cgdm.dataset_checksums import SHA256SUMS, format_sha256sums, read_sha256sums, verify_folder
from cgdm.dataset_registry import REGISTRY, Dataset, DatasetError, RemoteFile, get
from cgdm.download import CHUNK as _CHUNK
from cgdm.download import DownloadError, check_file, download, part_path
from cgdm.imageio import SUPPORTED_SUFFIXES, atomic_write_bytes, list_images

DEFAULT_ROOT = "resources/datasets"
MANIFEST = "MANIFEST.sha256"
DOWNLOADS = "downloads"
TIMEOUT_S = 60.0


# --------------------------------------------------------------------------------------------------
# Fetching one file
# --------------------------------------------------------------------------------------------------

def _mirror_location(url: str, mirror: str | os.PathLike | None) -> str | Path:
    """Where to fetch ``url`` from: the URL itself, ``<mirror>/<basename>`` as a URL, or a local path."""
    if mirror is None or str(mirror) == "":
        return url
    mirror = str(mirror)
    filename = PurePosixPath(urllib.parse.urlparse(url).path).name
    scheme = urllib.parse.urlparse(mirror).scheme.lower()
    if scheme in ("http", "https"):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)) / filename
    return Path(mirror).expanduser() / filename


def _manual_help(ds: Dataset, root: Path) -> str:
    """How to provide the files of ``ds`` by hand (appended to every download error)."""
    files = ds.files
    if ds.kind == "archive":
        where = "; ".join(f"download {f.url} ({f.size:,} bytes, sha256 {f.sha256}) and put it at "
                          f"{root / DOWNLOADS / f.filename}" for f in files)
        return (f"To provide it by hand: {where}, then re-run; or put {'them' if len(files) > 1 else 'it'} "
                f"in a folder (or on an HTTP server) and set data.mirror in the config to that folder / base "
                f"URL (CLI: cgdm download {ds.name} --mirror <folder-or-url>).")
    lines = [(f"To provide them by hand: put the {len(files)} files below in one folder and set data.mirror "
              f"in the config to it (CLI: cgdm download {ds.name} --mirror <folder>)")]
    if ds.embedded:
        lines[0] += f", or restore the embedded copy ({ds.embedded}, e.g. git checkout -- {ds.embedded})"
    lines[0] += ":"
    lines += [f"  {f.filename}  {f.size:>9,} bytes  sha256 {f.sha256}  ({f.url})" for f in files]
    return "\n".join(lines)


def _fail(ds: Dataset, root: Path, source: str | Path, problem: str) -> DatasetError:
    return DatasetError(f"dataset {ds.name!r}: {problem}\n  from: {source}\n{_manual_help(ds, root)}")


def _check_file(path: Path, rf: RemoteFile) -> str | None:
    """None when ``path`` has the size and SHA-256 of ``rf``, else what is wrong."""
    return check_file(path, rf.sha256, rf.size)


def fetch(ds: Dataset, rf: RemoteFile, dest: Path, root: Path, *, mirror=None, timeout: float = TIMEOUT_S,
          progress: bool = True, copy_local: bool = True, resumable: bool = True) -> Path:
    """Make a verified copy of ``rf`` available and return its path.

    ``dest`` already verified → used. A local mirror file is verified and returned in place (or copied
    to ``dest`` when ``copy_local``). Otherwise it is downloaded to ``dest``. Any failure raises
    :class:`DatasetError`; a file that fails verification is deleted, an interrupted transfer keeps its
    ``.part`` so that the next run resumes it (unless ``resumable`` is false: ``dest`` is in a
    temporary folder that is about to be removed).
    """
    if dest.exists():
        problem = _check_file(dest, rf)
        if problem is None:
            return dest
        print(f"cgdm download: {dest} is not the expected file ({problem}); removed, fetching again",
              file=sys.stderr)
        dest.unlink()

    source = _mirror_location(rf.url, mirror)
    if isinstance(source, Path):
        if not source.is_file():
            raise _fail(ds, root, source, f"{rf.filename} is not in the mirror folder")
        problem = _check_file(source, rf)
        if problem:
            raise _fail(ds, root, source, f"the mirror's copy of {rf.filename} is wrong: {problem}")
        if not copy_local:
            return source
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = part_path(dest)
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
        return dest

    part = part_path(dest)
    try:
        download(source, dest, sha256=rf.sha256, size=rf.size, timeout=timeout, progress=progress,
                 desc=f"{ds.name}: {rf.filename}", resume=resumable, leave=False)
    except DownloadError as exc:
        raise _fail(ds, root, source, _download_problem(exc, timeout, part, resumable)) from exc
    return dest


def _download_problem(exc: DownloadError, timeout: float, part: Path, resumable: bool) -> str:
    """What went wrong in :func:`cgdm.download.download`, in this module's words (from its ``__cause__``:
    the transport failure, or None for bytes of the wrong size or checksum)."""
    cause = exc.__cause__
    if cause is None:  # size or checksum: download() kept nothing
        return f"download is corrupt, deleted: {exc.problem}"
    if isinstance(cause, urllib.error.HTTPError):
        return f"download failed: HTTP {cause.code} {cause.reason}"
    if isinstance(cause, TimeoutError):
        return f"no answer within {timeout:g} s (offline or server down?)" + _resume_note(part, resumable)
    if isinstance(cause, urllib.error.URLError):
        if isinstance(cause.reason, TimeoutError):
            return f"no answer within {timeout:g} s (offline or server down?)"
        return f"cannot connect ({cause.reason}); offline or host unreachable?"
    return f"transfer interrupted: {cause}" + _resume_note(part, resumable)


def _resume_note(part: Path, resumable: bool) -> str:
    if not resumable:
        part.unlink(missing_ok=True)
        return ""
    if part.exists() and part.stat().st_size:
        return f"; {part.stat().st_size:,} bytes kept in {part}, re-run to resume"
    return ""


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------

def _is_image_member(name: str) -> bool:
    path = PurePosixPath(name)
    # macOS zips carry "__MACOSX/" resource forks and "._name.png" AppleDouble files: not images
    if "__MACOSX" in path.parts or any(p.startswith(".") for p in path.parts):
        return False
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _extract_archive(ds: Dataset, archive: Path, out: Path, root: Path, progress: bool,
                     taken: dict[str, str] | None = None) -> dict[str, str]:
    """Extract every image of the zip ``archive`` into ``out`` (flat) and return {name: sha256}.
    ``taken``: {lower-case name: origin} of images already extracted from other archives of ``ds``."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _fail(ds, root, archive, f"not a readable zip archive: {exc}") from exc
    sums: dict[str, str] = {}
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and _is_image_member(m.filename)]
        seen: dict[str, str] = dict(taken or {})
        for m in members:  # flattening must not silently overwrite: fail on any name collision
            key = PurePosixPath(m.filename).name.lower()
            if key in seen:
                raise _fail(ds, root, archive, f"two images would get the same name after dropping folders: "
                                               f"{seen[key]!r} and {m.filename!r}")
            seen[key] = m.filename
        for m in tqdm(members, desc=f"extract {ds.name}", unit="file", disable=not progress, leave=False):
            name = PurePosixPath(m.filename).name
            h = hashlib.sha256()
            try:
                with zf.open(m) as src, open(out / name, "wb") as dst:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        h.update(block)
                        dst.write(block)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise _fail(ds, root, archive, f"cannot extract {m.filename}: {exc}") from exc
            sums[name] = h.hexdigest()
    if not sums:
        raise _fail(ds, root, archive, "the archive contains no image files")
    return sums


def _install(ds: Dataset, ds_dir: Path, root: Path, fill, progress: bool) -> Path:
    """Fill a temporary folder with ``fill(tmp) -> {name: sha256}``, check the count, then rename it to
    ``ds_dir/images`` and write the MANIFEST last. Nothing half-done survives a failure."""
    ds_dir.mkdir(parents=True, exist_ok=True)
    images = ds_dir / "images"
    tmp = Path(tempfile.mkdtemp(prefix=".images.", suffix=".tmp", dir=ds_dir))
    try:
        sums = fill(tmp)
        if ds.n_images is not None and len(sums) != ds.n_images:
            raise DatasetError(f"dataset {ds.name!r}: {len(sums)} images extracted, the registry expects "
                               f"{ds.n_images}. The archive matched its checksum, so the registry entry "
                               "of cgdm/dataset_registry.py is wrong: please report it.")
        (ds_dir / MANIFEST).unlink(missing_ok=True)
        if images.exists():  # left by an older, unfinished run (it had no MANIFEST)
            shutil.rmtree(images)
        os.replace(tmp, images)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(ds_dir / MANIFEST,
                       format_sha256sums({f"images/{n}": h for n, h in sums.items()}).encode())
    return images


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def _verify_embedded(ds: Dataset, folder: Path, progress: bool) -> None:
    if ds.image_sha256:
        expected, where = ds.image_sha256, "the registry in cgdm/dataset_registry.py"
    else:
        sums = folder / SHA256SUMS
        if not sums.is_file():
            return  # a user folder without a checksum list: used as is
        expected, where = read_sha256sums(sums), str(sums)
    if ds.image_sha256:  # the registry knows the files: a fresh copy can be downloaded
        fix = (f"Restore the original files (git checkout -- {ds.embedded}), or delete {folder} so that "
               f"the dataset is downloaded instead (cgdm download {ds.name}).")
    elif ds.name in REGISTRY:
        fix = f"Restore the original files: git checkout -- {ds.embedded}"
    else:
        fix = f"Fix the files or their checksum list ({where})."
    verify_folder(folder, expected, what=f"dataset {ds.name!r}", fix=fix, progress=progress)


def _is_complete(ds_dir: Path, *, verify: bool, progress: bool, name: str) -> bool:
    manifest = ds_dir / MANIFEST
    if not manifest.is_file() or not (ds_dir / "images").is_dir():
        return False
    if not verify:
        return True
    try:
        verify_folder(ds_dir, read_sha256sums(manifest), what=f"dataset {name!r}", fix="", progress=progress)
    except DatasetError as exc:
        print(f"cgdm download: {exc}; preparing it again", file=sys.stderr)
        manifest.unlink()
        return False
    return True


def prepare(name: str, root: str | os.PathLike = DEFAULT_ROOT, mirror: str | os.PathLike | None = None, *,
            spec: dict | None = None, verify: bool = True, keep_archive: bool = True,
            timeout: float = TIMEOUT_S, progress: bool = True) -> Path:
    """Make dataset ``name`` ready and return the folder of its images.

    ``root``: where downloaded datasets live (``<root>/<name>/images``, archives in
    ``<root>/downloads``). ``mirror``: local folder, ``file://`` or ``http(s)://`` base URL that
    replaces the original host (file name = basename of the URL). ``spec``: the config entry of the
    dataset (``{path: folder}`` for a user-defined one). ``verify``: re-hash an already prepared
    dataset before declaring it ready. ``keep_archive``: keep the verified zip in ``<root>/downloads``
    (re-extraction then needs no network). Raises :class:`DatasetError`.
    """
    ds = get(name, spec)
    root = Path(root)

    embedded = ds.embedded_dir()
    if embedded is not None and embedded.is_dir():
        _verify_embedded(ds, embedded, progress)
        if ds.n_images is not None and len(list_images(embedded)) != ds.n_images:
            raise DatasetError(f"dataset {ds.name!r}: {embedded} has {len(list_images(embedded))} images, "
                               f"expected {ds.n_images}")
        return embedded
    if ds.kind == "folder":
        raise DatasetError(f"dataset {ds.name!r}: folder {embedded} does not exist"
                           + (f" (restore it: git checkout -- {ds.embedded})" if ds.name in REGISTRY else ""))

    ds_dir = root / ds.name
    if _is_complete(ds_dir, verify=verify, progress=progress, name=ds.name):
        return ds_dir / "images"

    if ds.kind == "images":
        def fill(tmp: Path) -> dict[str, str]:
            for rf in tqdm(ds.files, desc=f"download {ds.name}", unit="file", disable=not progress, leave=False):
                fetch(ds, rf, tmp / rf.filename, root, mirror=mirror, timeout=timeout, progress=False,
                      resumable=False)
            return {rf.filename: rf.sha256 for rf in ds.files}
    elif ds.kind == "archive":
        # every archive is verified before anything is extracted; a dataset of several archives shares
        # <root>/downloads with the datasets of each one (same file names, same checksums)
        cached = [root / DOWNLOADS / rf.filename for rf in ds.files]
        archives = [fetch(ds, rf, c, root, mirror=mirror, timeout=timeout, progress=progress, copy_local=False)
                    for rf, c in zip(ds.files, cached, strict=True)]

        def fill(tmp: Path) -> dict[str, str]:
            sums: dict[str, str] = {}
            origin: dict[str, str] = {}   # lower-case name -> "archive:name", across archives
            for archive in archives:
                new = _extract_archive(ds, archive, tmp, root, progress, origin if len(archives) > 1 else None)
                origin.update({n.lower(): f"{archive.name}:{n}" for n in new})
                sums.update(new)
            return sums
    else:  # pragma: no cover - registry entries are built above
        raise DatasetError(f"dataset {ds.name!r}: unknown kind {ds.kind!r}")

    images = _install(ds, ds_dir, root, fill, progress)
    if ds.kind == "archive" and not keep_archive:
        for archive, c in zip(archives, cached, strict=True):
            if archive == c:
                c.unlink(missing_ok=True)
    return images


def image_dir(name: str, root: str | os.PathLike = DEFAULT_ROOT, *, spec: dict | None = None,
              check: bool = True) -> Path:
    """The folder of images of a dataset, without network access or hashing (cheap: for listing at
    workflow-parse time). Raises :class:`DatasetError` if it has not been prepared yet, unless
    ``check=False``: then it returns the folder :func:`prepare` will fill."""
    ds = get(name, spec)
    embedded = ds.embedded_dir()
    if embedded is not None and embedded.is_dir():
        return embedded
    if ds.kind == "folder":
        raise DatasetError(f"dataset {ds.name!r}: folder {embedded} does not exist")
    ds_dir = Path(root) / ds.name
    if check and not _is_complete(ds_dir, verify=False, progress=False, name=ds.name):
        raise DatasetError(f"dataset {ds.name!r} is not prepared in {ds_dir}; run: cgdm download {ds.name} "
                           f"--root {root}")
    return ds_dir / "images"


def list_dataset_images(name: str, root: str | os.PathLike = DEFAULT_ROOT, *,
                        spec: dict | None = None) -> list[Path]:
    """Image files of a prepared dataset, sorted by name."""
    images = list_images(image_dir(name, root, spec=spec))
    if not images:
        raise DatasetError(f"dataset {name!r}: no images in {image_dir(name, root, spec=spec)}")
    return images

