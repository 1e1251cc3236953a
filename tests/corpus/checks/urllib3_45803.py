"""CVE-2023-45803 (urllib3 2.0.6 -> 2.0.7): body kept when a 303 redirect switches to GET.

A 303 answer to a POST makes the client follow up with a GET; before 2.0.7 urllib3 re-sent the
POST body (and its Content-Length) with that GET, leaking it to the redirect target. The check
POSTs ``secret`` to a loopback 303 that points at an echo path and reports whether the echoed GET
carried a body, through a ``PoolManager`` and an ``HTTPConnectionPool`` built in ``prepare()``
and through a fresh ``PoolManager`` (both ``urlopen`` implementations were fixed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3

from ._loopback import LoopbackServer


@dataclass
class _Ctx:
    server: LoopbackServer
    manager: urllib3.PoolManager
    pool: urllib3.HTTPConnectionPool


def prepare() -> object:
    server = LoopbackServer()
    return _Ctx(server, urllib3.PoolManager(), urllib3.HTTPConnectionPool("127.0.0.1", server.port))


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    path = ctx.server.redirect_path(303, "/echo")
    responses = [
        ctx.manager.request("POST", ctx.server.url("127.0.0.1", path), body=b"secret"),
        urllib3.PoolManager().request("POST", ctx.server.url("127.0.0.1", path), body=b"secret"),
        ctx.pool.request("POST", path, body=b"secret"),
    ]
    leaked = False
    for response in responses:
        echoed = json.loads(response.data)
        if response.status != 200 or echoed["method"] != "GET":
            raise RuntimeError(f"303 not followed with GET: {response.status} {echoed}")
        leaked |= echoed["body"] != ""
    return leaked
