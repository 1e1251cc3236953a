"""CVE-2023-43804 (urllib3 2.0.5 -> 2.0.6): Cookie header kept on cross-origin redirects.

urllib3 strips ``Authorization`` when a redirect leaves the origin but, before 2.0.6, not
``Cookie``, so a cookie meant for one host is sent to whatever host the redirect names. The check
asks ``http://127.0.0.1:P`` for a 302 to ``http://localhost:P/echo`` (another origin, same
loopback server) with a ``Cookie`` header and looks at what the echo received. It goes through a
``PoolManager`` built in ``prepare()``, a fresh one and ``urllib3.request()``; all use the
import-time ``Retry.DEFAULT`` whose header set must be rebuilt by the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import urllib3

from ._loopback import LoopbackServer


@dataclass
class _Ctx:
    server: LoopbackServer
    pool: urllib3.PoolManager


def prepare() -> object:
    return _Ctx(LoopbackServer(), urllib3.PoolManager())


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    target = ctx.server.url("localhost")
    start = ctx.server.url("127.0.0.1", ctx.server.redirect_path(302, target))
    leaked = False
    for request in (ctx.pool.request, urllib3.PoolManager().request, urllib3.request):
        response = request("GET", start, headers={"Cookie": "session=secret"})
        if response.status != 200:
            raise RuntimeError(f"redirect not followed: {response.status}")
        echoed = {k.lower(): v for k, v in json.loads(response.data)["headers"].items()}
        leaked |= echoed.get("cookie") == "session=secret"
    return leaked
