"""A loopback HTTP server for the download tests, so that no test touches the network.

:class:`LoopbackServer` runs in a thread on 127.0.0.1 (a free port) and serves either a dict
``{url path: bytes}`` or the files of a folder, both looked up at each request (a test may add, change or
delete entries while it runs). Tests get one through the ``http_server`` factory fixture (conftest.py),
which stops every server it started at the end of the test.

What a test can ask of it, besides serving a file or answering 404:

* ``ranges=True``: honour ``Range: bytes=N-`` (206, the rest of the file); otherwise a Range header is
  ignored and the whole file is sent with 200, as by a server without range support.
* ``cut_after``: a dropped connection. The header announces the whole length but only the first ``n``
  bytes of the body are sent before the connection is closed: ``n`` for every path (int), or per path
  (``{path: n}``). An attribute, so a test can drop one transfer and let the next one complete.
* ``hang``: paths that are accepted but never answered (until the server stops): a server that times out.

Every request is recorded in order: ``requests`` holds ``(path, Range header or None)`` pairs and ``paths``
just the paths (both are live lists: a test may keep a reference, or clear them).
"""

from __future__ import annotations

import http.server
import os
import socketserver
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

#: how long a ``hang`` path waits at most when the server is not stopped (seconds)
HANG_S = 10.0


class Request(NamedTuple):
    path: str
    range: str | None


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can take seconds offline
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer

    def do_GET(self):  # http.server API name
        self.server.owner._answer(self)

    def log_message(self, *args):  # keep pytest's output clean
        pass


class LoopbackServer:
    """Loopback HTTP server over ``content``: a ``{path: bytes}`` mapping or a folder (see the module)."""

    def __init__(self, content: Mapping[str, bytes] | str | os.PathLike, *, ranges: bool = False,
                 cut_after: int | Mapping[str, int] | None = None, hang: Iterable[str] = ()):
        if isinstance(content, (str, os.PathLike)):
            self.root: Path | None = Path(content)
            self.files: Mapping[str, bytes] | None = None
        else:
            self.root, self.files = None, content  # the caller's mapping itself: later changes are served
        self.ranges = ranges
        self.cut_after = cut_after
        self.hang = set(hang)
        self.requests: list[Request] = []
        self.paths: list[str] = []
        self._release = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # short poll interval: close() waits for it
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()  # answer nothing to the hanging requests: their connections close
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- serving ---------------------------------------------------------------------------------------

    def _lookup(self, path: str) -> bytes | None:
        if self.files is not None:
            return self.files.get(path)
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return None
        return file.read_bytes()

    def _cut(self, path: str) -> int | None:
        if isinstance(self.cut_after, Mapping):
            return self.cut_after.get(path)
        return self.cut_after

    def _answer(self, handler: _Handler) -> None:
        rng = handler.headers.get("Range")
        self.requests.append(Request(handler.path, rng))
        self.paths.append(handler.path)
        path = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path)
        if path in self.hang:
            self._release.wait(HANG_S)
            return
        data = self._lookup(path)
        if data is None:
            handler.send_error(404, "Not Found")
            return
        partial = self.ranges and rng is not None
        start = int(rng.split("=")[1].rstrip("-")) if partial else 0  # the only form clients send: bytes=N-
        handler.send_response(206 if partial else 200)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        cut = self._cut(path)
        if cut is not None:  # a dropped connection mid-transfer
            handler.wfile.write(data[start:start + cut])
            handler.close_connection = True
            return
        handler.wfile.write(data[start:])
