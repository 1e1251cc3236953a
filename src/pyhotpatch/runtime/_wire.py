"""Framing of control-socket messages: a 4-byte big-endian length, then UTF-8 JSON.

Shared by the in-process server and the client. Frames are bounded; anything
that is not a complete, bounded JSON object is a ``TransportError``.
"""

from __future__ import annotations

import socket
import struct
import time

from pyhotpatch.errors import TransportError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_FRAME = 32 * 1024 * 1024  # bytes; a base64 package of the largest allowed size fits
_HEADER = struct.Struct(">I")


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one message."""
    import json

    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise TransportError(f"message of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv(sock: socket.socket, deadline: float | None = None) -> dict[str, Any]:
    """Receive one message; raise ``TransportError`` on EOF, oversize, garbage or deadline.

    ``deadline`` (a ``time.monotonic()`` value) bounds the whole message, so a client
    that trickles bytes cannot hold the connection open.
    """
    import json

    (length,) = _HEADER.unpack(_exactly(sock, _HEADER.size, deadline))
    if length > MAX_FRAME:
        raise TransportError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        message = json.loads(_exactly(sock, length, deadline).decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TransportError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise TransportError("frame is not a JSON object")
    return message


def _exactly(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError("control request took too long to arrive")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except OSError as exc:
            raise TransportError(f"control socket read failed: {exc}") from exc
        if not chunk:
            raise TransportError("control socket closed mid-message")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
