"""SHA-256 of files and verified, atomic downloads: the one implementation the dataset, metric-weight,
model-zoo and CompressAI-baseline code share.

:func:`download` streams a URL into a ``.part`` file next to the destination, checks its size and
SHA-256 (a full digest, or the hex prefix that torch hub / CompressAI file names carry), and only then
renames it into place; on any failure the ``.part`` file is deleted and :class:`DownloadError` names
the URL and the problem. Callers wrap it into their own exception with their own fix instructions.
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

__all__ = ["CHUNK", "DownloadError", "check_file", "download", "mismatch", "sha256_file", "sha256_matches"]


class DownloadError(RuntimeError):
    """A download failed; ``str()`` is ``"<url>: <problem>"``.

    ``digest`` is the SHA-256 of the received bytes when they did not match (else None); a transport
    failure keeps the original exception as ``__cause__``.
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


def download(url: str, dest: str | os.PathLike, *, sha256: str | None, size: int | None = None,
             timeout: float = 60.0, progress: bool = True, desc: str | None = None) -> str:
    """Download ``url`` to ``dest`` atomically and return the SHA-256 of the file.

    The bytes go to a ``.part`` file in ``dest``'s folder, which replaces ``dest`` only once ``size``
    (when given) and ``sha256`` (full digest or hex prefix; None: not checked) match. Any failure deletes
    the ``.part`` file and raises :class:`DownloadError`.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h, nbytes = hashlib.sha256(), 0
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(
                    urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                length = int(length) if length is not None else None
                if size is not None and length is not None and length != size:
                    raise DownloadError(url, f"size mismatch: the server announces {length:,} bytes, "
                                             f"expected {size:,}")
                with tqdm(total=length or size, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=desc or dest.name, disable=not progress) as bar:
                    while block := resp.read(CHUNK):
                        nbytes += len(block)
                        if size is not None and nbytes > size:
                            raise DownloadError(url, f"size mismatch: more than the expected {size:,} bytes "
                                                     "received")
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
                if length is not None and nbytes < length:  # http.client returns b"" on a dropped connection
                    raise ConnectionError(f"connection closed after {nbytes:,} of {length:,} bytes")
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise DownloadError(url, _transport_problem(exc, timeout)) from exc
        digest = h.hexdigest()
        if size is not None and nbytes != size:
            raise DownloadError(url, mismatch(digest, nbytes, None, size))
        if sha256 is not None and not sha256_matches(digest, sha256):
            raise DownloadError(url, mismatch(digest, nbytes, sha256), digest=digest)
        os.replace(tmp, dest)
        return digest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
