"""A small JWT-protected HTTP service, the patient of ``hotpatch demo``.

Run as ``python -m pyhotpatch.demo.service`` with PyJWT importable and the HS256
secret in ``PYHOTPATCH_DEMO_SECRET``. It enables the hotpatch runtime (so it serves
a control socket), listens on 127.0.0.1 on a free port and prints
``{"port": ..., "pid": ...}`` as its first line on stdout. Routes: ``GET /health``
and ``GET /whoami`` (``Authorization: Bearer <token>``: 200 ``{"user", "pid"}``
or 401 ``{"error", "detail"}``). SIGTERM stops it cleanly.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

import pyhotpatch
from pyhotpatch.demo import ISSUER, SECRET_ENV

# PyJWT is the service's dependency, not pyhotpatch's: it comes from PYTHONPATH.
jwt: Any = importlib.import_module("jwt")


class Handler(BaseHTTPRequestHandler):
    """Answers ``/health`` and ``/whoami``; keeps connections alive (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    secret = ""

    def do_GET(self) -> None:
        """Route a GET request."""
        if self.path == "/health":
            self._reply(200, {"status": "ok"})
        elif self.path == "/whoami":
            self._whoami()
        else:
            self._reply(404, {"error": "NotFound", "detail": self.path})

    def _whoami(self) -> None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            self._reply(401, {"error": "MissingToken", "detail": "Authorization: Bearer <token>"})
            return
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "iss", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            self._reply(401, {"error": type(exc).__name__, "detail": str(exc)})
            return
        self._reply(200, {"user": claims["sub"], "pid": os.getpid()})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the access log quiet: the demo sends thousands of requests."""


def _stop(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main() -> None:
    """Serve until SIGTERM or Ctrl-C."""
    Handler.secret = os.environ[SECRET_ENV]
    pyhotpatch.enable()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, _stop)
    print(json.dumps({"port": server.server_address[1], "pid": os.getpid()}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
