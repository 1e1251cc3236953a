"""A small threaded HTTP service for the runtime tests, hotpatchable while it serves.

``python service.py``: enables pyhotpatch, imports ``phdemo_target`` and serves
on 127.0.0.1 (a free port) until stdin closes. It prints
``{"ready": true, "pid": ..., "port": ...}`` once listening.
``GET /check?path=P`` answers ``{"path": P, "safe": <validate(P)>,
"version": <version()>, "pid": ...}``; the validator is reached through a route
table filled at import, as real services do.
"""

import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyhotpatch

pyhotpatch.enable()

import phdemo_target  # noqa: E402 - the service's code, imported after the runtime is on

ROUTES = {"/check": phdemo_target.validate}


class Handler(BaseHTTPRequestHandler):
    """Answers ``/check`` with what the current code of ``phdemo_target`` says."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """Validate the ``path`` query parameter."""
        url = urllib.parse.urlsplit(self.path)
        check = ROUTES.get(url.path)
        if check is None:
            self.send_error(404)
            return
        value = urllib.parse.parse_qs(url.query).get("path", [""])[0]
        body = json.dumps(
            {
                "path": value,
                "safe": check(value),
                "version": phdemo_target.version(),
                "pid": os.getpid(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""


def main() -> None:
    """Serve until stdin closes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready = {"ready": True, "pid": os.getpid(), "port": server.server_address[1]}
    print(json.dumps(ready), flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
