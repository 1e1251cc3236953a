"""A real control plane for tests: ``hotpatch server`` in a subprocess on a loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOTPATCH = [sys.executable, "-c", "from pyhotpatch.cli import main; main()"]
TOKEN = "test-admin-token-0123456789abcdef"


class ServerProcess:
    """``hotpatch server --port 0`` with its own data directory; ``url`` once it listens."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, "HOTPATCH_ADMIN_TOKEN": TOKEN, **(env or {})}
        # automatic patching follows the wall clock's off-peak hours: keep it out of tests
        # unless one asks for it
        quiet = [] if "--orchestrate-seconds" in args else ["--orchestrate-seconds", "0"]
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [*HOTPATCH, "server", "--port", "0", "--data-dir", str(data_dir), *quiet, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)
                match = re.search(r"Uvicorn running on (https?://[0-9.]+:[0-9]+)", line)
                if match:
                    self.url = match.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("hotpatch server did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def hotpatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the ``hotpatch`` command."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOTPATCH_", "PYHOTPATCH_HOME")) or k == "HOTPATCH_CONFIG_DIR"
    }
    environ.update({"COLUMNS": "160", **(env or {})})
    return subprocess.run(
        [*HOTPATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        check=False,
    )


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app in this process on a loopback port (so a test can drive its clock)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def clocked_server(
    data_dir: Path,
    admin: str,
    subscription: str,
    group: str,
    database_url: str | None = None,
    *,
    orchestrate_seconds: float | None = None,
) -> Iterator[tuple[str, Any, Any]]:
    """An in-process control plane on a manual clock, with ``subscription`` and ``group`` made.

    Yields its URL, its clock and the subscription Owner's token; for tests that move
    time (agents going stale, deadlines passing). By default the orchestrator runs only the
    passes an administrator asks for (``POST /hotpatch/orchestrator/passes``), so that no
    automatic install lands in a test that does not expect one; ``orchestrate_seconds``
    turns its background passes on.
    """
    from datetime import datetime, timedelta, timezone

    import httpx

    from pyhotpatch.catalog import Catalog
    from pyhotpatch.clock import ManualClock
    from pyhotpatch.server import create_app
    from pyhotpatch.server.arm._context import ArmSettings

    clock = ManualClock(datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc))
    catalog = Catalog.open(data_dir, url=database_url, clock=clock)
    settings = ArmSettings(feature_delay=timedelta(0), provider_delay=timedelta(0))
    try:
        app = create_app(
            catalog, admin_token=admin, arm=settings, orchestrate_seconds=orchestrate_seconds
        )
        with serve_in_thread(app) as url:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as client:
                # a subscription comes into being with its first token
                made = client.post(
                    "/hotpatch/tokens", json={"role": "Owner", "subscription": subscription}
                )
                assert made.status_code == 201, made.text
                client.post(
                    f"/subscriptions/{subscription}/providers/Microsoft.Compute/register",
                    params={"api-version": "2025-04-01"},
                ).raise_for_status()
                client.put(
                    f"/subscriptions/{subscription}/resourcegroups/{group}",
                    params={"api-version": "2025-04-01"},
                    json={"location": "westus"},
                ).raise_for_status()
            yield url, clock, made.json()["token"]
    finally:
        catalog.close()
