"""latency: delivering a real fix by hotpatch (socket round trip) vs by restarting the service.

The service is ``flask_service.py`` (Flask 2.3.1 on werkzeug, installed with
``tests/corpus/envs.py``), vulnerable to CVE-2023-30861. The fix is the package built from
``flask==2.3.1`` to ``flask==2.3.2``. Hotpatch latency is the ``client.apply(pid, bytes)`` round
trip (the ``hotpatch apply --pid`` path), repeated apply/revert; the bug is checked over HTTP
before and after. Restart latency is killing the service and starting it again on the same port
with Flask 2.3.2 on its path, until the first good HTTP response (start-up, imports, first
request); the restarted service is checked to be fixed too.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from _common import BENCH, Report, Table, Target, child_env, median, percentile, python3, ratio

from corpus.envs import ensure_env
from pyhotpatch.build import build
from pyhotpatch.runtime import client

VULNERABLE, FIXED = "2.3.1", "2.3.2"
APPLY_TARGET_MS = 50.0
SPEEDUP_TARGET = 100.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(env_dir: Path, port: int, run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [python3(), str(BENCH / "flask_service.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env([env_dir], PYHOTPATCH_RUN_DIR=str(run_dir)),
    )


def _get(port: int, path: str, cookie: str = "") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _wait_ready(port: int, proc: subprocess.Popen[str], deadline_s: float = 30.0) -> None:
    """Poll until ``GET /`` answers 200 (every millisecond until connected)."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if _get(port, "/").status == 200:
                return
        except OSError:
            time.sleep(0.001)
    raise RuntimeError("service did not answer in time")


def _vulnerable(port: int) -> bool:
    """CVE-2023-30861: a refreshed session cookie on a page that never touched the session."""
    login = _get(port, "/login")
    cookie = (login.getheader("Set-Cookie") or "").split(";")[0]
    public = _get(port, "/public", cookie)
    if not public.getheader("Set-Cookie"):
        raise RuntimeError("the permanent session cookie was not refreshed")
    return "Cookie" not in (public.getheader("Vary") or "")


def run(quick: bool) -> Report:
    applies, restarts = (3, 2) if quick else (20, 5)
    report = Report("latency")
    env_a, env_b = ensure_env("flask", VULNERABLE), ensure_env("flask", FIXED)
    package = build(f"flask=={VULNERABLE}", f"flask=={FIXED}", patch_id="KB3086100").to_bytes()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        run_dir = Path(tmp)
        proc = _start(env_a, port, run_dir)
        try:
            _wait_ready(port, proc)
            checks = {"before apply": _vulnerable(port)}
            round_trips, prepare, pause = [], [], []
            for n in range(applies):
                started = time.perf_counter()
                result = client.apply(proc.pid, package, run_dir)
                round_trips.append(time.perf_counter() - started)
                prepare.append(result["prepare_ms"])
                pause.append(result["pause_ms"])
                if n == 0:
                    checks["after apply"] = _vulnerable(port)
                client.revert(proc.pid, "KB3086100", run_dir)
            checks["after revert"] = _vulnerable(port)
            restart_times = []
            for _ in range(restarts):
                started = time.perf_counter()
                proc.kill()
                proc.wait()
                proc = _start(env_b, port, run_dir)
                _wait_ready(port, proc)
                restart_times.append(time.perf_counter() - started)
            checks["after restart on 2.3.2"] = _vulnerable(port)
        finally:
            proc.kill()
            proc.wait()
    expected = {
        "before apply": True,
        "after apply": False,
        "after revert": True,
        "after restart on 2.3.2": False,
    }
    if checks != expected:
        raise RuntimeError(f"the fix did not behave as expected: {checks}")
    apply_ms, restart_ms = median(round_trips) * 1e3, median(restart_times) * 1e3
    table = Table(
        f"latency: flask {VULNERABLE} -> {FIXED} (CVE-2023-30861), {len(package)}-byte package; "
        f"{applies} applies, {restarts} restarts",
        ["delivery", "median", "p95", "min", "speed-up vs restart"],
    )
    rows = [
        (
            "hotpatch: client.apply round trip",
            [t * 1e3 for t in round_trips],
            ratio(restart_ms, apply_ms),
        ),
        ("  of which engine prepare_ms", prepare, ""),
        ("  of which engine pause_ms", pause, ""),
        ("restart: kill, start, first good response", [t * 1e3 for t in restart_times], "1x"),
    ]
    for label, values, versus in rows:
        figures = (median(values), percentile(values, 95), min(values))
        table.rows.append([label, *(f"{v:.3f} ms" for v in figures), versus])
    report.tables.append(table)
    report.notes.append("vulnerable? " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
    report.targets.append(
        Target(
            "hotpatch apply round trip (median)",
            f"< {APPLY_TARGET_MS:g} ms",
            f"{apply_ms:.2f} ms",
            apply_ms < APPLY_TARGET_MS,
        )
    )
    speedup = restart_ms / apply_ms
    report.targets.append(
        Target(
            "restart / hotpatch (medians)",
            f">= {SPEEDUP_TARGET:g}x",
            f"{speedup:.0f}x ({restart_ms:.0f} ms vs {apply_ms:.2f} ms)",
            speedup >= SPEEDUP_TARGET,
        )
    )
    report.data = {
        "apply_s": round_trips,
        "prepare_ms": prepare,
        "pause_ms": pause,
        "restart_s": restart_times,
        "checks": checks,
        "package_bytes": len(package),
    }
    return report
