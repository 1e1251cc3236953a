"""A tiny HTTP server on 127.0.0.1 for the redirect checks (stdlib only).

``/redirect?status=302&to=URL`` answers with that status and ``Location``; any other path echoes
the request back as JSON (method, headers, body). Reach it as ``127.0.0.1`` and as ``localhost``
to get two different origins on one server.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


class _Handler(BaseHTTPRequestHandler):
    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path == "/redirect":
            query = parse_qs(url.query)
            self.send_response(int(query["status"][0]))
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps(
            {"method": self.command, "headers": dict(self.headers), "body": body.decode("latin-1")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, format: str, *args: object) -> None:
        """Keep quiet."""


class LoopbackServer:
    """Redirect/echo server in a daemon thread; lives until ``close()`` or process exit."""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def url(self, host: str, path: str = "/echo") -> str:
        """Return ``http://host:port/path``; ``host`` is "127.0.0.1" or "localhost"."""
        return f"http://{host}:{self.port}{path}"

    def redirect_path(self, status: int, to: str) -> str:
        """Return the path that answers ``status`` with ``Location: to``."""
        return "/redirect?" + urlencode({"status": status, "to": to})

    def close(self) -> None:
        """Stop serving and release the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
