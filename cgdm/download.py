"""SHA-256 of files and verified, atomic downloads: the one implementation the dataset, metric-weight,
model-zoo and CompressAI-baseline code share.

:func:`download` streams a URL into a ``.part`` file next to the destination, checks its size and
SHA-256 (a full digest, or the hex prefix that torch hub / CompressAI file names carry), and only then
renames it into place; on any failure the ``.part`` file is deleted and :class:`DownloadError` names
the URL and the problem. Callers wrap it into their own exception with their own fix instructions.

With ``resume=True`` (large dataset archives, :mod:`cgdm.datasets`) the ``.part`` file has a fixed name
(:func:`part_path`): an interrupted transfer keeps it, and the next call continues it with an HTTP Range
request; bytes that are wrong (size or checksum) are still deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
USER_AGENT = "cgdm-suite"

__all__ = ["CHUNK", "DownloadError", "check_file", "download", "mismatch", "part_path", "sha256_file",
           "sha256_matches"]


class DownloadError(RuntimeError):
    """A download failed; ``str()`` is ``"<url>: <problem>"``.

    ``digest`` is the SHA-256 of the received bytes when they did not match (else None). A transport
    failure (HTTP error, time-out, refused or dropped connection) keeps the original exception as
    ``__cause__``; wrong bytes (size or checksum) have none.
    """

    def __init__(self, url: str, problem: str, digest: str | None = None):
        super().__init__(f"{url}: {problem}")
        self.url, self.problem, self.digest = url, problem, digest


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_matches(digest: str, expected: str) -> bool:
    """``digest`` equals ``expected`` (64 hex digits) or starts with it (a shorter file-name prefix)."""
    if not expected:
        raise ValueError("empty expected sha256")
    return digest == expected if len(expected) >= 64 else digest.startswith(expected)


def mismatch(digest: str, nbytes: int, sha256: str | None, size: int | None = None) -> str | None:
    """None when ``nbytes`` / ``digest`` fit ``size`` / ``sha256`` (None: not checked), else the problem."""
    if size is not None and nbytes != size:
        return f"size mismatch: {nbytes:,} bytes, expected {size:,}"
    if sha256 is not None and not sha256_matches(digest, sha256):
        want = sha256 if len(sha256) >= 64 else f"{sha256}..."
        return f"checksum mismatch: sha256 {digest}, expected {want}"
    return None


def check_file(path: str | os.PathLike, sha256: str | None, size: int | None = None) -> str | None:
    """None when the file at ``path`` has ``size`` bytes and SHA-256 ``sha256``, else what is wrong
    (the size is compared first, so a wrong size costs no hashing)."""
    nbytes = os.stat(path).st_size
    if size is not None and nbytes != size:
        return mismatch("", nbytes, None, size)
    return mismatch(sha256_file(path), nbytes, sha256)


def _transport_problem(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s ({reason})"
    return str(reason)


def part_path(dest: str | os.PathLike) -> Path:
    """Where :func:`download` with ``resume=True`` keeps the bytes received so far: ``<dest>.part``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: str | os.PathLike, *, sha256: str | None, size: int | None = None,
             timeout: float = 60.0, progress: bool = True, desc: str | None = None, resume: bool = False,
             leave: bool = True) -> str:
    """Download ``url`` to ``dest`` atomically and return the SHA-256 of the file.

    The bytes go to a ``.part`` file in ``dest``'s folder, which replaces ``dest`` only once ``size``
    (when given) and ``sha256`` (full digest or hex prefix; None: not checked) match. Any failure deletes
    the ``.part`` file and raises :class:`DownloadError`.

    ``resume``: the ``.part`` file is :func:`part_path` (``<dest>.part``). One left by an earlier call is
    continued with ``Range: bytes=<its size>-`` (started over when the server sends the whole file, answers
    416, or the part already has ``size`` bytes); a transport failure keeps it, and a body that ends short
    of ``size`` counts as a dropped connection. ``progress`` / ``desc`` / ``leave``: the progress bar.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        part = part_path(dest)
    else:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        part = Path(tmp)
    bar = {"desc": desc or dest.name, "disable": not progress, "leave": leave}
    try:
        try:
            h, nbytes = _receive(url, part, size=size, timeout=timeout, resume=resume, bar=bar)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise DownloadError(url, _transport_problem(exc, timeout)) from exc
        digest = h.hexdigest()
        if size is not None and nbytes != size:
            raise DownloadError(url, mismatch(digest, nbytes, None, size))
        if sha256 is not None and not sha256_matches(digest, sha256):
            raise DownloadError(url, mismatch(digest, nbytes, sha256), digest=digest)
        os.replace(part, dest)
        return digest
    except DownloadError as exc:
        if exc.__cause__ is None:  # wrong bytes: nothing to resume
            part.unlink(missing_ok=True)
        raise
    finally:
        if not resume:
            part.unlink(missing_ok=True)


def _receive(url: str, part: Path, *, size: int | None, timeout: float, resume: bool, bar: dict):
    """Stream ``url`` into ``part`` (appending to it when resuming) -> ``(sha256 hash object, length)`` of
    the whole part.
    Transport failures raise what urllib / http.client raise; a wrong announced or received size raises
    :class:`DownloadError`."""
    from tqdm.auto import tqdm  # lazy: only a transfer needs it (cgdm.availability's probes import this module)

    offset = part.stat().st_size if resume and part.exists() else 0
    if size is not None and offset >= size:  # a full-length leftover cannot be trusted without its hash: start over
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # a stale part the server cannot resume: start over once
            exc.close()
            part.unlink()
            return _receive(url, part, size=size, timeout=timeout, resume=resume, bar=bar)
        raise
    with resp:
        if offset and getattr(resp, "status", 200) != 206:  # the whole file: do not append to the old part
            offset = 0
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if size is not None and length is not None and offset + length != size:
            raise DownloadError(url, f"size mismatch: the server announces {offset + length:,} bytes, "
                                     f"expected {size:,}")
        h, nbytes = hashlib.sha256(), offset
        if offset:  # the digest covers the whole file: the bytes kept from before first
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
        # the length the body must reach; when resuming, a body that ends before ``size`` was cut off
        total = offset + length if length is not None else size if resume else None
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total or size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, **bar) as pbar:
            while block := resp.read(CHUNK):
                nbytes += len(block)
                if size is not None and nbytes > size:
                    raise DownloadError(url, f"size mismatch: more than the expected {size:,} bytes received")
                out.write(block)
                h.update(block)
                pbar.update(len(block))
        if total is not None and nbytes < total:  # http.client returns b"" on a dropped connection
            raise ConnectionError(f"connection closed after {nbytes:,} of {total:,} bytes")
    return h, nbytes
