"""The fleet demo's machines: real agents, each running the demo web service under load.

Each machine is ``hotpatch agent connect`` (which creates its virtual machine with its
region, zone or availability set, time zone and environment) and ``hotpatch agent run``,
as subprocesses, exactly as an operator would start them; its service runs two workers
on a loopback port. A ``Load`` keeps requests flowing to every service and counts each
failure and every worker PID it was answered by, so restarts are seen from outside.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pyhotpatch.errors import HotpatchError

IMAGE = "pyhotpatch:python-service:demo-hotpatch"
SERVICE = "{python} -m pyhotpatch.demo.worker --app demoapp.web:handle"
#: IANA zones covering every hour of UTC offset, to find ones whose off-peak window is open
ZONES = (
    "Pacific/Pago_Pago", "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles",
    "America/Denver", "America/Chicago", "America/New_York", "America/Halifax",
    "America/Sao_Paulo", "Atlantic/South_Georgia", "Atlantic/Azores", "Europe/London",
    "Europe/Paris", "Europe/Athens", "Europe/Moscow", "Asia/Dubai", "Asia/Karachi",
    "Asia/Dhaka", "Asia/Bangkok", "Asia/Singapore", "Asia/Tokyo", "Australia/Brisbane",
    "Pacific/Noumea", "Pacific/Auckland", "Pacific/Tongatapu", "Pacific/Kiritimati",
    "America/St_Johns", "Asia/Tehran", "Asia/Kabul", "Asia/Kolkata", "Asia/Kathmandu",
    "Asia/Yangon", "Australia/Adelaide", "Australia/Darwin", "Pacific/Chatham",
)  # fmt: skip


@dataclass(frozen=True)
class Spot:
    """Where one demo machine stands in the fleet."""

    name: str
    region: str
    environment: str
    zone: str | None = None
    availability_set: str | None = None


#: two geo-paired regions (never patched together) and a third; zones; an availability set
SPOTS = (
    Spot("web-eus-1", "eastus", "DevTest", zone="1"),
    Spot("web-eus-2", "eastus", "Production", zone="2"),
    Spot("app-wus-1", "westus", "DevTest", availability_set="app-set"),
    Spot("app-wus-2", "westus", "Production", availability_set="app-set"),
    Spot("app-wus-3", "westus", "Production", availability_set="app-set"),
    Spot("api-neu-1", "northeurope", "Production", zone="1"),
)


def open_window_zone(now: datetime, taken: set[str]) -> str:
    """An IANA zone where ``now`` is early in the default 22:00-06:00 off-peak window.

    Early, so that the window stays open for the whole demonstration (at least six hours
    left where any zone allows it); among those, zones not ``taken`` yet come first, so
    machines show different local times.
    """

    def left(zone: str) -> float:
        local = now.astimezone(ZoneInfo(zone))
        hours = local.hour + local.minute / 60
        return (30 - hours) % 24 if hours >= 22 or hours < 6 else -1.0

    best = max(left(z) for z in ZONES)
    roomy = [z for z in ZONES if left(z) >= min(best, 6.0)]
    return sorted(roomy, key=lambda z: (z in taken, -left(z)))[0]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answered(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, object]]:
    """One GET to a demo service: its status and JSON body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@dataclass
class Machine:
    """One machine: its agent's subprocess and its service's port."""

    spot: Spot
    time_zone: str
    root: Path
    subscription: str
    group: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vm_id(self) -> str:
        """The machine's ARM resource id."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.spot.name}"
        )

    def connect(self, server: str, token: str) -> None:
        """``hotpatch agent connect``: create the machine's resource and enrol its agent."""
        args = [
            "agent", "connect", "--server", server, "--token", token,
            "--subscription", self.subscription, "--resource-group", self.group,
            "--name", self.spot.name, "--location", self.spot.region, "--image", IMAGE,
            "--time-zone", self.time_zone, "--environment", self.spot.environment,
            "--service-command", SERVICE, "--workers", "2",
            "--listen", f"127.0.0.1:{self.port}",
            "--probe-url", f"http://127.0.0.1:{self.port}/version",
            "--heartbeat-seconds", "2", "--poll-seconds", "2",
            "--state-dir", str(self.root),
        ]  # fmt: skip
        if self.spot.zone:
            args += ["--zone", self.spot.zone]
        if self.spot.availability_set:
            args += ["--availability-set", self.spot.availability_set]
        done = subprocess.run(
            _hotpatch(*args), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise HotpatchError(f"{self.spot.name}: agent connect failed: {done.stderr.strip()}")

    def start(self, clock: dict[str, str]) -> None:
        """``hotpatch agent run`` on the demo's ``clock``: the agent, which starts the service."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen(
                _hotpatch("agent", "run", "--state-dir", str(self.root), "--stop-service"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **clock},
                start_new_session=True,  # Ctrl-C reaches the demo, which stops agents in order
            )

    def serving(self) -> bool:
        """Whether the service answers."""
        try:
            return answered(self.port, "/version", timeout=1.0)[0] == 200
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def stop(self) -> None:
        """Stop the agent, which stops its service."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the agent's log, for a failure report."""
        path = self.root / "agent.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _hotpatch(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pyhotpatch.cli import main; main()", *args]


@dataclass
class Tally:
    """What one machine's load saw in one part of the demonstration."""

    ok: int = 0
    failed: int = 0
    pids: set[int] = field(default_factory=set)


class Load:
    """One client thread per machine, a request every few milliseconds, all counted."""

    def __init__(self, machines: list[Machine], interval: float = 0.02) -> None:
        self.machines = machines
        self.interval = interval
        self.part = "start"
        self.tallies: dict[tuple[str, str], Tally] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(m,), daemon=True, name=f"load-{m.spot.name}")
            for m in machines
        ]

    def start(self) -> None:
        """Start the clients."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the clients after their current request."""
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:  # interrupted before it started: nothing to wait for
                thread.join(10)

    def begin(self, part: str) -> None:
        """Count what follows under ``part``."""
        with self._lock:
            self.part = part

    def tally(self, machine: str, part: str) -> Tally:
        """What ``machine``'s load saw during ``part``."""
        with self._lock:
            return self.tallies.setdefault((machine, part), Tally())

    def totals(self, part: str) -> Tally:
        """What the whole fleet's load saw during ``part``."""
        total = Tally()
        with self._lock:
            for (_, seen), tally in self.tallies.items():
                if seen == part:
                    total.ok += tally.ok
                    total.failed += tally.failed
                    total.pids |= tally.pids
        return total

    def _run(self, machine: Machine) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = answered(machine.port, "/version")
                ok = status == 200
                pid = int(str(body.get("pid"))) if ok else None
                error = None if ok else f"HTTP {status}"
            except (OSError, ValueError, http.client.HTTPException) as exc:
                ok, pid, error = False, None, repr(exc)
            with self._lock:
                tally = self.tallies.setdefault((machine.spot.name, self.part), Tally())
                if ok:
                    tally.ok += 1
                    if pid is not None:
                        tally.pids.add(pid)
                else:
                    tally.failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{machine.spot.name}: {error}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


def local_time(zone: str, now: datetime) -> str:
    """``now`` on the machine's wall clock, as HH:MM."""
    return now.astimezone(ZoneInfo(zone)).strftime("%H:%M")
