"""Dataset registry: where each evaluation / training set comes from, and how to get it verified.

Every dataset is one :class:`Dataset` entry of :data:`REGISTRY`: the files to fetch (URL, byte size,
SHA-256), whether they are images or one zip archive of images, and, for Kodak, the copy embedded in
the repository. :func:`prepare` makes a dataset ready:

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
exception :class:`DatasetError`, whose message names the dataset, the URL, what went wrong and how to
place the files by hand.

Command line (used by the workflow's data rule)::

    cgdm download NAME [--root DIR] [--mirror URL_OR_DIR] [--marker FILE]
    cgdm download mydata --path some/folder      # a user-defined folder of images
    cgdm download --list [NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from cgdm.download import CHUNK as _CHUNK
from cgdm.download import DownloadError, check_file, download, part_path, sha256_file
from cgdm.imageio import SUPPORTED_SUFFIXES, atomic_write_bytes, list_images

#: repository root: the embedded datasets live under ``<repo>/data``
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = "resources/datasets"
MANIFEST = "MANIFEST.sha256"
#: file name of the checksum list of an embedded or user-provided folder (``sha256sum`` format)
SHA256SUMS = "SHA256SUMS"
DOWNLOADS = "downloads"
TIMEOUT_S = 60.0


class DatasetError(RuntimeError):
    """A dataset cannot be made ready; the message says why and how to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: the original URL, its size in bytes and its SHA-256."""

    url: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return PurePosixPath(urllib.parse.urlparse(self.url).path).name


@dataclass(frozen=True)
class Dataset:
    """One registry entry.

    ``kind`` is ``"images"`` (every remote file is one image, stored as is), ``"archive"`` (one or more
    zip files; every image file inside them, in whatever folder, is extracted with its folder dropped,
    and the images of all archives form the dataset) or ``"folder"`` (a local folder only: embedded data
    or a user-defined dataset).
    """

    name: str
    kind: str
    description: str
    split: str
    files: tuple[RemoteFile, ...] = ()
    #: documented layout of the archive (for people; extraction does not depend on it)
    layout: str = ""
    #: number of images the dataset has; checked after extraction when known
    n_images: int | None = None
    #: folder with a verified copy (relative to the repository root, or absolute); used when present
    embedded: str | None = None
    homepage: str = ""
    #: expected SHA-256 of each image by file name, when the registry knows it (Kodak)
    image_sha256: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def embedded_dir(self) -> Path | None:
        if self.embedded is None:
            return None
        path = Path(self.embedded).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------

# Kodak Lossless True Color Image Suite, served one PNG at a time by its official host. The images are
# one folder below the index page (``.../graphics/kodak/kodak/kodimNN.png``; ``.../graphics/kodak/
# kodimNN.png`` is the HTML viewer path and does not serve the PNG). Sizes and SHA-256 are those of
# the byte-identical copies embedded in ``data/kodak`` (see ``data/kodak/SHA256SUMS``).
_KODAK_URL = "https://r0k.us/graphics/kodak/kodak/{name}"
_KODAK = [  # (file, bytes, sha256)
    ("kodim01.png", 694969, "6b4fbe6f3e8e0e20150d5b0c32248bf072e22b5989d415f96f796c5b7004a70f"),
    ("kodim02.png", 596342, "1788370471429d992750a09caf6702ac74e56962447de02520d4b161738c0369"),
    ("kodim03.png", 480296, "b9c800ee568f0b18c983817df08d9f7f24a7ddb3abfdc31bde9234c4fde83137"),
    ("kodim04.png", 619524, "0c60c62599ad33fd78b29c36013fbe4120946f6c327c0ef0ec6983297fb48d23"),
    ("kodim05.png", 756263, "ccf694ceb6bbf431e0009ed0d5573a8ff0915095b69ddfb527b91d8325897f5e"),
    ("kodim06.png", 599778, "f4212cc927d1d579c712843cf8320c7eccb571e5ea80456022ffe99d67e9cd5d"),
    ("kodim07.png", 553939, "7cdd6d63ae0a245f6f9d983d740e11c6808c2efc24f8351aad9b5f676c27b55a"),
    ("kodim08.png", 741753, "5a6a089bdb47605287c00d89ebf2a5312981eb998c94b5853d917c93a9066cdb"),
    ("kodim09.png", 558418, "4d8d801592aeaf446978bbd1c83b76c498242d0f684769311a4e7248289500bf"),
    ("kodim10.png", 567106, "7aca487dc83db732a5690b7affe8558e9dadf5bb44a4589ba2b607480a07228b"),
    ("kodim11.png", 597671, "c7c02bd6e942d1181518e3ce2d97cf0451e4494a5e9d6ddee276940e4875d746"),
    ("kodim12.png", 507077, "df571f5e66d1aefd764ea77855e81e3be61528c34962a0fd1d50557502162c1e"),
    ("kodim13.png", 802288, "797949ce1152ef157ff0a1231c95cb8ed7641615e0b0f5f77f851a44aee19e8d"),
    ("kodim14.png", 664858, "08a1898d5702f32e7d9f94a94651d74a62cb9325475775a558b388c8d98f1846"),
    ("kodim15.png", 593678, "416c475f39b0eb9203ce7f77d2af8824f5bffc1a86a4605865017f04c41639b9"),
    ("kodim16.png", 517978, "5d03303693decdf7a1e1e930b5ca6684283aa80a9e7d8d6a842a74fa5f790640"),
    ("kodim17.png", 595749, "19d90e98e5835efae20a6e17e22e5ac6814ee2c8efb32d188ea4359abaf9f5bd"),
    ("kodim18.png", 753479, "83df267dfec61e9b9d3756c422502160b2fab595650c73a8b12940540ad09ec5"),
    ("kodim19.png", 635490, "86560efe85a13413b228ef7e42dde0d439b25a94fb8e2d6fb1dc1631cf48853b"),
    ("kodim20.png", 474056, "1ae187d92b3a4483b6717f7fd08592846ffdfc340c6424f6756627a27f3d8ea7"),
    ("kodim21.png", 608507, "26e193795108c4b5ec47206ae4ff07a353d2492947f7a7ae8d380e042b74027b"),
    ("kodim22.png", 690081, "627b76fccf714b4ddffb739b2eb63ba2817cf5b5a8e222079542dcf2cfdda939"),
    ("kodim23.png", 548799, "85c67d7ea758cb0604fb6980ab0c65091a2eefa7b3b50cbb1bc702a60206dfe5"),
    ("kodim24.png", 676380, "9f1c26df52217bd49f998a720a2ffeba41a535cf826f4ae32e355fb2b0bbc0fe"),
]

# Archives: official addresses, byte sizes and SHA-256 of the CLIC2020 and DIV2K zips, copied from the
# project's reference table (shared/reference/datasets.tsv, measured on the files served by
# data.vision.ee.ethz.ch). Layouts: DIV2K zips hold one top folder named like the zip; the CLIC2020
# validation zips both unpack to ``valid/`` (hence one output folder per dataset here), the training
# zips to ``train/``; the test zips hold the PNGs in one top folder. Extraction does not rely on these
# names: every image file is taken, its folder dropped (see :func:`_extract_archive`).
_ETHZ = "https://data.vision.ee.ethz.ch/cvl"
_ARCHIVES = [
    # name, description, split, url, bytes, sha256, layout, n_images (None: not documented)
    ("clic2020-professional-valid", "CLIC 2020 professional, validation", "valid",
     f"{_ETHZ}/clic/professional_valid_2020.zip", 134834429,
     "00be38092ade2ab5163b65f7f6523d46c7bca147007f559adbb02c0afc236b7d", "valid/*.png", 41),
    ("clic2020-mobile-valid", "CLIC 2020 mobile, validation", "valid",
     f"{_ETHZ}/clic/mobile_valid_2020.zip", 236556531,
     "ff0280382eeb32fdceb28c81a7f47ac9ad86d933ebe901680845635d04e47a10", "valid/*.png", None),
    ("clic2020-professional-test", "CLIC 2020 professional, test", "test",
     f"{_ETHZ}/clic/test/CLIC2020Professional_test.zip", 891643809,
     "857df244fc2bfa5da28d4c66bf0db16ee99bfc79eb807be8afa89cd507852884", "<top folder>/*.png", None),
    ("clic2020-mobile-test", "CLIC 2020 mobile, test", "test",
     f"{_ETHZ}/clic/test/CLIC2020Mobile_test.zip", 721789976,
     "2025f07a6c652270e534640de4271feef3b3dd3260beed4ac4821064837aa732", "<top folder>/*.png", None),
    ("div2k-valid-hr", "DIV2K validation, high resolution (0801-0900)", "valid",
     f"{_ETHZ}/DIV2K/DIV2K_valid_HR.zip", 448993893,
     "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", "DIV2K_valid_HR/*.png", 100),
    # training splits of the paper profile
    ("div2k-train-hr", "DIV2K training, high resolution (0001-0800)", "train",
     f"{_ETHZ}/DIV2K/DIV2K_train_HR.zip", 3530603713,
     "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", "DIV2K_train_HR/*.png", 800),
    ("clic2020-professional-train", "CLIC 2020 professional, training", "train",
     f"{_ETHZ}/clic/professional_train_2020.zip", 2003385131,
     "54a2a684b5cbd0db91770a8695efb774fed1f612194fee68bceaf6b1c48e5d5f", "train/*.png", None),
    ("clic2020-mobile-train", "CLIC 2020 mobile, training", "train",
     f"{_ETHZ}/clic/mobile_train_2020.zip", 4042923971,
     "4bf9d890e6785426fb41cb4f43df3d8cd6db25fafcc76fc1eb629141166d6529", "train/*.png", None),
]

# Datasets made of several archives above: (name, description, split, [archive datasets]). "CLIC2020
# test" in HiFiC's and MS-ILLM's results (baselines/published_data/SOURCES.md) is the challenge's whole
# test set, professional + mobile; its published curves belong on this dataset, not on one half of it.
# The archives are the same files (same URL, size, sha256), so a download for one half is reused.
_UNIONS = [
    ("clic2020-test", "CLIC 2020 test, professional + mobile (the whole test set)", "test",
     ["clic2020-professional-test", "clic2020-mobile-test"]),
]


def _build_registry() -> dict[str, Dataset]:
    reg = {
        "kodak": Dataset(
            name="kodak", kind="images", split="test",
            description="Kodak Lossless True Color Image Suite (24 PNG, 768x512)",
            files=tuple(RemoteFile(_KODAK_URL.format(name=n), s, h) for n, s, h in _KODAK),
            layout="kodim01.png ... kodim24.png", n_images=24, embedded="data/kodak",
            homepage="http://r0k.us/graphics/kodak/", image_sha256={n: h for n, _, h in _KODAK}),
        # training photos of the quick profile: only the embedded copy exists (checked against its
        # SHA256SUMS); never used to report results
        "embedded-train": Dataset(
            name="embedded-train", kind="folder", split="train",
            description="36 photos embedded for the quick profile (long side 512, see data/README.md)",
            embedded="data/train", n_images=36),
        # 4 of the 40 embedded photos, held out of every training run: the zoo's validation set
        "embedded-val": Dataset(
            name="embedded-val", kind="folder", split="validation",
            description="4 photos held out of training (long side 512, see data/README.md)",
            embedded="data/val", n_images=4),
    }
    for name, desc, split, url, size, sha, layout, n in _ARCHIVES:
        home = "https://data.vision.ee.ethz.ch/cvl/DIV2K/" if "DIV2K" in url else "https://clic.compression.cc/2020/"
        reg[name] = Dataset(name=name, kind="archive", description=desc, split=split,
                            files=(RemoteFile(url, size, sha),), layout=layout, n_images=n, homepage=home)
    for name, desc, split, parts in _UNIONS:
        counts = [reg[p].n_images for p in parts]
        reg[name] = Dataset(name=name, kind="archive", description=desc, split=split,
                            files=tuple(f for p in parts for f in reg[p].files),
                            layout=" + ".join(f"{reg[p].files[0].filename}: {reg[p].layout}" for p in parts),
                            n_images=None if None in counts else sum(counts), homepage=reg[parts[0]].homepage)
    return reg


#: every dataset the suite knows by name
REGISTRY: dict[str, Dataset] = _build_registry()


def get(name: str, spec: dict | None = None) -> Dataset:
    """The dataset called ``name``: from ``spec`` when it gives a ``path`` (a user-defined folder of
    images, as in the config ``datasets: {mydata: {path: some/folder}}``), else from :data:`REGISTRY`."""
    spec = spec or {}  # other keys of a config entry (image selection, ...) are not ours to check
    if spec.get("path"):
        return Dataset(name=name, kind="folder", description=f"local folder {spec['path']}", split="test",
                       embedded=str(Path(spec["path"]).expanduser().resolve()))
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}. "
                           "For your own images give a folder: datasets: {" + name + ": {path: <folder>}} "
                           f"(CLI: cgdm download {name} --path <folder>).")
    return REGISTRY[name]


# --------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------

def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``sha256sum`` file (``<hex>  <name>`` or ``<hex> *<name>``) into {name: hex}."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DatasetError(f"{path}:{lineno}: not a sha256sum line: {line!r}")
        out[parts[1].strip().lstrip("*")] = parts[0].lower()
    return out


def _format_sha256sums(sums: dict[str, str]) -> str:
    return "".join(f"{h}  {n}\n" for n, h in sorted(sums.items()))


def verify_folder(folder: Path, expected: dict[str, str], *, what: str, fix: str,
                  progress: bool = True) -> None:
    """Check that the images in ``folder`` are exactly ``expected`` ({file name: sha256}).

    ``expected`` names are relative to ``folder`` (``images/x.png`` style names are allowed).
    Raises :class:`DatasetError` naming the first bad file and ``fix``.
    """
    present = {p.relative_to(folder).as_posix() for p in _images_under(folder, expected)}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing or extra:
        detail = (f"missing {missing[:5]}" if missing else "") + (" and " if missing and extra else "")
        detail += f"not in the checksum list {extra[:5]}" if extra else ""
        raise DatasetError(f"{what}: the files of {folder} do not match its checksums ({detail}). {fix}".strip())
    for name in tqdm(sorted(expected), desc=f"verify {what}", unit="file", disable=not progress, leave=False):
        actual = sha256_file(folder / name)
        if actual != expected[name]:
            raise DatasetError(f"{what}: {folder / name} is modified or corrupt (sha256 {actual}, "
                               f"expected {expected[name]}). {fix}".strip())


def _images_under(folder: Path, expected: dict[str, str]) -> list[Path]:
    """The image files a checksum list covers: the images directly in ``folder``, or in the one
    sub-folder the names of ``expected`` point to (``images/...`` in a MANIFEST)."""
    subdirs = {PurePosixPath(n).parent.as_posix() for n in expected} or {"."}
    out = []
    for sub in sorted(subdirs):
        d = folder / sub
        if d.is_dir():
            out += list_images(d)
    return out


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
                               "of cgdm/datasets.py is wrong: please report it.")
        (ds_dir / MANIFEST).unlink(missing_ok=True)
        if images.exists():  # left by an older, unfinished run (it had no MANIFEST)
            shutil.rmtree(images)
        os.replace(tmp, images)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(ds_dir / MANIFEST,
                       _format_sha256sums({f"images/{n}": h for n, h in sums.items()}).encode())
    return images


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def _verify_embedded(ds: Dataset, folder: Path, progress: bool) -> None:
    if ds.image_sha256:
        expected, where = ds.image_sha256, "the registry in cgdm/datasets.py"
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


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_registry(name: str | None = None) -> str:
    """Text table of the registry, or the file list (URL, bytes, sha256) of one dataset."""
    if name is not None:
        ds = get(name)
        lines = [f"{ds.name}: {ds.description}",
                 f"  kind: {ds.kind}   split: {ds.split}   images: {ds.n_images or '?'}   layout: {ds.layout or '-'}"]
        if ds.embedded:
            lines.append(f"  embedded copy: {ds.embedded}")
        if ds.homepage:
            lines.append(f"  homepage: {ds.homepage}")
        lines += [f"  {f.sha256}  {f.size:>12,}  {f.url}" for f in ds.files]
        return "\n".join(lines)
    rows = [("name", "split", "images", "download", "source")]
    for ds in REGISTRY.values():
        source = (ds.files[0].url if len(ds.files) == 1 else
                  f"{len(ds.files)} files from {ds.homepage}" if ds.files else "-")
        if ds.embedded:
            source = f"embedded {ds.embedded}" + (f"; else {source}" if ds.files else "")
        rows.append((ds.name, ds.split, str(ds.n_images or "?"), _human(ds.size) if ds.files else "-", source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cgdm download",
        description="Download, verify and extract a dataset into <root>/<name>/images "
                    "(the embedded Kodak copy is verified and used in place).")
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="datasets folder (default: %(default)s)")
    parser.add_argument("--mirror", help="local folder, file:// or http(s):// base URL holding the files "
                                         "under their original names (config: data.mirror)")
    parser.add_argument("--path", help="a user-defined dataset: local folder of images (checked against "
                                       f"its {SHA256SUMS} when present)")
    parser.add_argument("--marker", help="file written after success (the workflow rule's output)")
    parser.add_argument("--list", action="store_true",
                        help="print the registry; with NAME, the files of that dataset with their sha256")
    parser.add_argument("--delete-archive", action="store_true",
                        help="delete the downloaded zip after extraction (default: keep it in <root>/downloads)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds without an answer before a request fails (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        if args.list:
            print(format_registry(args.name))
            return 0
        if not args.name:
            parser.error("give a dataset NAME (or --list)")
        spec = {"path": args.path} if args.path else None
        folder = prepare(args.name, args.root, args.mirror, spec=spec, keep_archive=not args.delete_archive,
                         timeout=args.timeout)
        images = list_images(folder)
        if args.marker:
            marker = {"dataset": args.name, "images": str(folder), "n_images": len(images),
                      "files": [p.name for p in images]}
            atomic_write_bytes(args.marker, (json.dumps(marker, indent=1) + "\n").encode())
    except DatasetError as exc:
        print(f"cgdm download: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.name}: {len(images)} images verified in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
