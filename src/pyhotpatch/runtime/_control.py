"""The control socket every enabled process serves: apply, revert, status.

One Unix stream socket per process at ``<run dir>/<pid>.sock``; the directory
is 0700 and the socket 0600, and every connection's peer credentials are
checked (same user or root). Requests are served one at a time on a daemon
thread, each with a deadline, so a stuck or hostile client cannot block the
service; bad requests get an error reply and never reach the engine.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import stat
import struct
import threading
import time

from pyhotpatch.errors import HotpatchError, TransportError
from pyhotpatch.runtime import _config, _wire
from pyhotpatch.runtime._log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyhotpatch.runtime._engine import Engine
_TIMEOUT = 30.0  # seconds a client may take to send its whole request
_MAX_CONNECTIONS = 4  # served at once; more are turned away with an error


class ControlServer:
    """Serves the engine on this process's control socket."""

    def __init__(self, engine: Engine, directory: str | None = None) -> None:
        self.engine = engine
        self.directory = directory or _config.run_dir()
        self.pid = os.getpid()
        self.path = _config.socket_path(self.pid, self.directory)
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the socket and start serving on a daemon thread."""
        _secure_dir(self.directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="pyhotpatch-control", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop serving and remove the socket file (only in the process that made it)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if os.getpid() == self.pid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                with conn:
                    _reply(conn, _error("Busy", "too many control connections; try again"))
                continue
            threading.Thread(
                target=self._connection, args=(conn,), name="pyhotpatch-control-conn", daemon=True
            ).start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._handle(conn)
        except Exception:  # the service must keep running
            logger().exception("control request failed")
        finally:
            self._slots.release()

    def _handle(self, conn: socket.socket) -> None:
        if not _peer_allowed(conn):
            _reply(conn, _error("PermissionDenied", "peer is neither this user nor root"))
            return
        try:
            request = _wire.recv(conn, deadline=time.monotonic() + _TIMEOUT)
            reply = {"ok": True, "result": self._dispatch(request)}
        except TransportError as exc:
            reply = _error("BadRequest", str(exc))
        except HotpatchError as exc:
            reply = _error(type(exc).__name__, str(exc))
        except Exception as exc:  # reported to the client, process keeps serving
            logger().exception("control request crashed")
            reply = _error("InternalError", repr(exc))
        _reply(conn, reply)

    def _dispatch(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "status":
            return self.engine.status()
        if op == "apply":
            import base64
            import binascii

            blob = request.get("package")
            if not isinstance(blob, str):
                raise TransportError("apply needs 'package': the package file as base64")
            try:
                data = base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise TransportError(f"'package' is not base64: {exc}") from exc
            return self.engine.apply(data)
        if op == "revert":
            patch_id = request.get("id")
            if not isinstance(patch_id, str):
                raise TransportError("revert needs 'id': the hotpatch id")
            return self.engine.revert(patch_id)
        raise TransportError(f"unknown op {op!r}; expected ping, status, apply or revert")


def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
    conn.settimeout(_TIMEOUT)
    with contextlib.suppress(OSError, TransportError):
        _wire.send(conn, reply)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message}}


def _peer_allowed(conn: socket.socket) -> bool:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True  # no peer credentials here: the 0600 socket in a 0700 directory decides
    raw = conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return uid in (os.getuid(), 0)


def _secure_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise TransportError(f"run directory {directory} belongs to another user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)
