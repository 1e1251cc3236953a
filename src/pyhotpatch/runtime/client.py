"""Talk to enabled processes through their control sockets (used by the CLI and the agent).

Errors the process reports come back as the same ``HotpatchError`` subclasses
the engine raised there; a missing or dead socket is a ``TransportError``.
"""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from typing import Any

from pyhotpatch import errors
from pyhotpatch.errors import TransportError
from pyhotpatch.runtime import _config, _wire


def call(
    pid: int,
    request: dict[str, Any],
    run_dir: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
) -> Any:
    """Send one request to process ``pid`` and return its result."""
    path = _config.socket_path(pid, run_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise TransportError(
                f"process {pid} has no control socket at {path}: is the runtime enabled?"
            ) from None
        except OSError as exc:
            raise TransportError(f"cannot connect to process {pid} at {path}: {exc}") from exc
        try:
            _wire.send(sock, request)
        except OSError as exc:
            raise TransportError(f"process {pid} closed its control socket: {exc}") from exc
        reply = _wire.recv(sock)
    finally:
        sock.close()
    if reply.get("ok") is True:
        return reply.get("result")
    error = reply.get("error") or {}
    kind, message = (
        str(error.get("type", "HotpatchError")),
        str(error.get("message", "unknown error")),
    )
    cls = getattr(errors, kind, None)
    if (
        isinstance(cls, type)
        and issubclass(cls, errors.HotpatchError)
        and cls is not errors.NotHotpatchable
    ):
        raise cls(message)
    if kind in ("BadRequest", "PermissionDenied", "Busy"):
        raise TransportError(f"{kind}: {message}")
    raise errors.ApplyError(f"{kind}: {message}")


def apply(
    pid: int, package: bytes | str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
) -> Any:
    """Apply a package (bytes or a path readable by the caller) in process ``pid``."""
    data = package if isinstance(package, bytes) else Path(package).read_bytes()
    return call(pid, {"op": "apply", "package": base64.b64encode(data).decode()}, run_dir)


def revert(pid: int, patch_id: str, run_dir: str | os.PathLike[str] | None = None) -> Any:
    """Revert the active hotpatch ``patch_id`` in process ``pid``."""
    return call(pid, {"op": "revert", "id": patch_id}, run_dir)


def status(pid: int, run_dir: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> Any:
    """The engine status of process ``pid``."""
    return call(pid, {"op": "status"}, run_dir, timeout)


def processes(run_dir: str | os.PathLike[str] | None = None) -> list[int]:
    """PIDs of live processes with a control socket; stale sockets are removed."""
    directory = Path(run_dir if run_dir is not None else _config.run_dir())
    pids = []
    for path in sorted(directory.glob("*.sock")) if directory.is_dir() else []:
        if not path.stem.isdigit():
            continue
        pid = int(path.stem)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass
        pids.append(pid)
    return pids
