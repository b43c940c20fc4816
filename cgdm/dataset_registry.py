"""Dataset registry: every dataset the suite knows by name, and where its files come from.

Every dataset is one :class:`Dataset` entry of :data:`REGISTRY`: the files to fetch (:class:`RemoteFile`:
URL, byte size, SHA-256), whether they are images or zip archives of images, and, for Kodak and the
training photos, the copy embedded in the repository. :func:`get` looks a name up (or builds the entry of
a user-defined folder). Nothing here downloads or verifies anything: :mod:`cgdm.datasets` makes a
dataset ready, ``cgdm download --list`` (:mod:`cgdm.cli_datasets`) prints this table.

:class:`DatasetError` is the one exception of the dataset modules.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

#: repository root: the embedded datasets live under ``<repo>/data``
REPO_ROOT = Path(__file__).resolve().parent.parent


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
# names: every image file is taken, its folder dropped (see :func:`cgdm.datasets._extract_archive`).
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
