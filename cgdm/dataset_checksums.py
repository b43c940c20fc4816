"""Checksum lists in ``sha256sum`` format, and checking a folder of images against one.

:func:`read_sha256sums` / :func:`format_sha256sums` read and write the format of ``sha256sum`` (the
``SHA256SUMS`` of an embedded or user-provided folder, the ``MANIFEST.sha256`` of a prepared dataset);
:func:`verify_folder` checks that a folder holds exactly the listed images, unmodified. Failures raise
:class:`cgdm.dataset_registry.DatasetError`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from cgdm.dataset_registry import DatasetError
from cgdm.download import sha256_file
from cgdm.imageio import list_images

#: file name of the checksum list of an embedded or user-provided folder (``sha256sum`` format)
SHA256SUMS = "SHA256SUMS"


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


def format_sha256sums(sums: dict[str, str]) -> str:
    """``{name: hex}`` as ``sha256sum`` lines (``<hex>  <name>``), sorted by name."""
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

