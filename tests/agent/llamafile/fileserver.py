"""A real HTTP file server on 127.0.0.1 for the llamafile tests (stdlib, one thread).

It serves in-memory files with HTTP ``Range`` support, records what it was
asked, and can misbehave on purpose, once per file:

- ``cut_after[path] = n``: announce the whole length, send `n` bytes, close
  (a broken download);
- ``ignore_range.add(path)``: answer 200 with the whole file to a Range request;
- ``claim_length[path] = n``: announce `n` bytes (more than any disk) and close;
- ``content_type[path]``: the Content-Type to send.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs

__all__ = ["FileServer"]


@attrs.define(eq=False)
class FileServer:
    """Owns the server thread and the files it serves."""

    files: dict[str, bytes] = attrs.field(factory=dict)
    content_type: dict[str, str] = attrs.field(factory=dict)
    cut_after: dict[str, int] = attrs.field(factory=dict)
    claim_length: dict[str, int] = attrs.field(factory=dict)
    ignore_range: set[str] = attrs.field(factory=set)
    requests: list[tuple[str, str | None]] = attrs.field(factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path
                owner.requests.append((path, self.headers.get("Range")))
                body = owner.files.get(path)
                if path in owner.claim_length:
                    self.send_response(200)
                    self.send_header("Content-Length", str(owner.claim_length.pop(path)))
                    self.end_headers()
                    self.close_connection = True
                    return
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                status = 200
                if wanted and path not in owner.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                part = body[start:]
                self.send_response(status)
                self.send_header(
                    "Content-Type", owner.content_type.get(path, "application/octet-stream")
                )
                self.send_header("Content-Length", str(len(part)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                cut = owner.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
