"""Loopback helpers for tests that run real services: ports, waiting, requests, load.

``Load`` is a steady client that opens a new connection for every request, so each
request is counted as served or failed on its own, and it notes which process
(``pid`` in the body) answered.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``check()``'s first truthy answer; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last answer: {last!r})")


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """One request on a new connection; status and JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


class Load:
    """A steady loopback client: one request per new connection, every failure counted."""

    def __init__(self, port: int, path: str = "/version", threads: int = 2) -> None:
        self.port, self.path = port, path
        self.ok = 0
        self.failed: list[str] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_for("the first answered request", lambda: self.ok > 0, 30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = get(self.port, self.path)
            except Exception as exc:  # every failure is what the test counts
                with self._lock:
                    self.failed.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                    if "pid" in body:
                        self.pids.add(int(body["pid"]))
                else:
                    self.failed.append(f"HTTP {status}: {body}")
