"""A pre-forking HTTP worker for WSGI-less apps: ``handle(method, path, headers) -> (status, body)``.

``python -m pyhotpatch.demo.worker --app MODULE:FUNC [--host H] [--port P] [--processes N]``

- The listening socket comes from the service manager when ``LISTEN_FDS=1`` (and
  ``LISTEN_PID``, if set, is this process): fd 3, systemd's convention. Otherwise
  the worker binds ``--host``/``--port`` itself.
- ``--processes N`` forks N-1 children after binding; all N serve the same socket.
  The app is imported before the fork, as pre-forking servers do, so children
  inherit it (and any hotpatch already applied); the hotpatch runtime, when
  enabled, gives every child a control socket of its own.
- ``GET /health`` answers 200 ``{"status": "ok", "pid": …}``; every other request
  goes to the app, whose body is sent as JSON. The access log is quiet.
- ``SIGTERM`` (or ``SIGINT``) stops gracefully: stop accepting, answer requests in
  flight with ``Connection: close``, close idle connections, exit 0. The listening
  socket is shared with other workers, so it is only closed in this process, never
  shut down.
- Once accepting, the top process sends ``READY=1`` to ``NOTIFY_SOCKET`` (systemd's
  ``sd_notify``), if set.

The hotpatch runtime is enabled by the environment (``PYHOTPATCH=1`` and the
``.pth`` hook), not here. Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

App = Callable[[str, str, Mapping[str, str]], tuple[int, dict[str, Any]]]

#: the first socket a service manager passes (systemd's SD_LISTEN_FDS_START)
LISTEN_FD = 3
#: seconds requests in flight get to finish once a stop is asked for
GRACE_SECONDS = 10.0
#: seconds an idle keep-alive connection is kept open
IDLE_SECONDS = 60.0
#: connections already queued that a stopping worker still takes before it closes the socket
QUEUED_LIMIT = 128


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/health`` and hands everything else to the app."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_SECONDS
    server: _Server

    def handle(self) -> None:
        """Serve requests on this connection until it closes or the worker stops."""
        self.close_connection = True
        self.handle_one_request()  # a new connection always brings a request: serve it
        while not self.close_connection and self.server.idle(self.connection):
            self.handle_one_request()

    def parse_request(self) -> bool:
        """Mark the connection busy as soon as a request line has arrived."""
        self.server.busy(self.connection)
        return super().parse_request()

    def do_GET(self) -> None:
        """Route a GET request."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        length = self.headers.get("Content-Length")
        if length:
            try:
                self.rfile.read(int(length))
            except ValueError:
                self._reply(400, b'{"error": "BadRequest", "detail": "bad Content-Length"}')
                return
        if self.command == "GET" and self.path.split("?", 1)[0] == "/health":
            self._reply(200, json.dumps({"status": "ok", "pid": os.getpid()}).encode())
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            status, body = self.server.app(self.command, self.path, headers)
            data = json.dumps(body).encode()
        except Exception:
            traceback.print_exc()
            self._reply(500, b'{"error": "InternalError", "detail": "the app failed"}')
            return
        self._reply(int(status), data)

    def _reply(self, status: int, data: bytes) -> None:
        if self.server.stopping.is_set():
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the access log quiet."""


class _Server(ThreadingHTTPServer):
    """An HTTP server over a socket it is given, which it never shuts down for others.

    Every accepted connection is tracked as busy (serving a request) or idle
    (waiting for the next request on a kept-alive connection), so a stop can end
    the idle ones at once and wait for the busy ones.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, app: App) -> None:
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.app = app
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)
        self._connections: dict[Any, bool] = {}  # connection -> busy

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track a new connection as busy before its thread starts."""
        with self._lock:
            self._connections[request] = True
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Close a connection and stop tracking it."""
        super().shutdown_request(request)
        with self._lock:
            self._connections.pop(request, None)
            self._ended.notify_all()

    def busy(self, conn: Any) -> None:
        """A request has arrived on ``conn``."""
        with self._lock:
            self._connections[conn] = True

    def idle(self, conn: Any) -> bool:
        """``conn`` waits for its next request; False if the worker is stopping."""
        with self._lock:
            if self.stopping.is_set():
                return False
            self._connections[conn] = False
            return True

    def _take_queued(self) -> None:
        """Serve connections already queued on the socket, in case no other process holds it."""
        for _ in range(QUEUED_LIMIT):
            try:
                request, address = self.get_request()
            except OSError:  # nothing queued (the socket is non-blocking)
                return
            self.process_request(request, address)

    def drain(self, grace: float) -> bool:
        """Stop accepting, close idle connections, wait for busy ones; whether all ended."""
        self.stopping.set()
        self.shutdown()
        self._take_queued()
        self.socket.close()  # this process's copy only: other workers keep accepting
        deadline = time.monotonic() + grace
        with self._lock:
            for conn, busy in self._connections.items():
                if not busy:
                    _shut_read(conn)
            while self._connections:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ended.wait(min(left, 0.2))
        return True


def _shut_read(conn: Any) -> None:
    """End an idle connection's wait for its next request."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RD)


def load_app(spec: str) -> App:
    """The callable ``MODULE:ATTR`` names; ``ValueError`` if it cannot be found."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--app {spec!r} is not MODULE:FUNCTION")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--app {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"--app {spec!r}: {module_name} has no {attr}")
    if not callable(target):
        raise ValueError(f"--app {spec!r} is not callable")
    app: App = target
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket a service manager passed (``LISTEN_FDS``), else one bound here."""
    fds, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the app's own subprocesses
    if fds == "1" and (not pid or pid == str(os.getpid())):
        sock = socket.socket(fileno=LISTEN_FD)
        os.set_inheritable(LISTEN_FD, False)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    # Workers race for each connection: a loser must not block in accept().
    sock.setblocking(False)
    return sock


def notify(state: str) -> None:
    """Send ``state`` to the service manager's ``NOTIFY_SOCKET``, if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        print(f"worker {os.getpid()}: cannot notify {address!r}: {exc}", file=sys.stderr)


def serve(sock: socket.socket, app: App, *, parent: int | None, children: list[int]) -> int:
    """Serve until told to stop; the exit status.

    ``parent`` is the process that forked this one (a child stops when it is gone);
    ``children`` are this process's forked children (it stops them when it stops,
    and stops itself, with status 1, if one dies).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = _Server(sock, app)
    thread = threading.Thread(target=server.serve_forever, args=(0.2,), name="accept")
    thread.start()
    if parent is None:
        notify(f"READY=1\nMAINPID={os.getpid()}")
    status = 0
    live = set(children)
    while not stop.wait(0.2):
        if parent is not None and os.getppid() != parent:
            break
        ended = _reap(live)
        if ended:
            print(f"worker {os.getpid()}: child {ended} exited; stopping", file=sys.stderr)
            status = 1
            break
    for child in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    server.drain(GRACE_SECONDS)
    thread.join(GRACE_SECONDS)
    deadline = time.monotonic() + GRACE_SECONDS + 2
    while live and time.monotonic() < deadline:
        _reap(live)
        time.sleep(0.05)
    for child in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    return status


def _reap(live: set[int]) -> int | None:
    """Forget children that have exited; the first such pid, if any."""
    first = None
    for child in list(live):
        try:
            done, _ = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            done = child
        if done:
            live.discard(child)
            first = first or child
    return first


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, bind or take the socket, fork, serve; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m pyhotpatch.demo.worker", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--app", required=True, help="the app's MODULE:FUNCTION")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind without LISTEN_FDS")
    parser.add_argument("--port", type=int, default=8000, help="port to bind without LISTEN_FDS")
    parser.add_argument("--processes", type=int, default=1, help="processes serving the socket")
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= 256:
        parser.error("--processes must be between 1 and 256")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    try:
        app = load_app(args.app)
        sock = listening_socket(args.host, args.port)
    except (ValueError, OSError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    children: list[int] = []
    top = os.getpid()
    for _ in range(args.processes - 1):
        with warnings.catch_warnings():
            # the runtime's control thread is the only other thread, and it is fork-safe
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            return serve(sock, app, parent=top, children=[])
        children.append(pid)
    return serve(sock, app, parent=None, children=children)


if __name__ == "__main__":
    sys.exit(main())
