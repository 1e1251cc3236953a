"""heartbeats: how many agent heartbeats one control plane sustains, and their p99 latency.

A real ``hotpatch server --dev-tls`` on SQLite, then on the local PostgreSQL, each with one
server process and with two (``--workers 2``), gets a fleet of enrolled machines; ``wrk`` (C, two threads, 64 keep-alive HTTPS
connections) then sends heartbeats round-robin over their agent tokens. The baseline,
measured in the same run against the same server, is an authenticated GET that writes
nothing (``/hotpatch/whoami``), so the ratio is the cost of the durable write. The target
is 100,000 agents polling once a minute: 1,667 heartbeats per second. wrk and the server
share this machine's two cores, so the figures are a floor for a dedicated host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import BENCH, Report, Table, Target

NEEDED = 100_000 / 60
SUB = "11111111-2222-3333-4444-555555555555"
VERSION = {"api-version": "2026-04-01"}


def _wrk(url: str, tokens: Path, mode: str, seconds: int) -> dict[str, float]:
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c64",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(BENCH / "heartbeat.lua"),
            url,
            "--",
            str(tokens),
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    text = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)

    def latency(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
        assert found, text
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "rate": rate,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _fleet(arm: Any, machines: int) -> list[str]:
    owner = arm.token("Owner", SUB)
    with arm.http(owner) as client:
        group = f"/subscriptions/{SUB}/resourceGroups/fleet"
        client.put(
            group, params={"api-version": "2025-04-01"}, json={"location": "eastus"}
        ).raise_for_status()
        client.post(
            f"/subscriptions/{SUB}/providers/Microsoft.Compute/register",
            params={"api-version": "2016-02-01"},
        ).raise_for_status()
        while (
            client.get(
                f"/subscriptions/{SUB}/providers/Microsoft.Compute",
                params={"api-version": "2016-02-01"},
            ).json()["registrationState"]
            != "Registered"
        ):
            time.sleep(0.2)

    def make(n: int) -> str:
        with arm.http(owner) as client:
            vm = f"{group}/providers/Microsoft.Compute/virtualMachines/vm{n:05d}"
            body = {
                "location": "eastus",
                "properties": {
                    "hardwareProfile": {"vmSize": "Standard_B2s"},
                    "storageProfile": {
                        "imageReference": {
                            "publisher": "pyhotpatch",
                            "offer": "python-service",
                            "sku": "demo-legacy",
                            "version": "latest",
                        }
                    },
                    "osProfile": {"computerName": f"vm{n:05d}", "adminUsername": "ops"},
                },
            }
            client.put(vm, params=VERSION, json=body).raise_for_status()
            made = client.post("/agent/enroll", json={"machine": vm, "agentVersion": "bench"})
            made.raise_for_status()
            return str(made.json()["token"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(make, range(machines)))


WORKERS = (1, 2)


def _databases() -> list[tuple[str, int, str | None, Any]]:
    """(database, server processes, URL, manager to close): a fresh database for each run."""
    found: list[tuple[str, int, str | None, Any]] = [("sqlite", n, None, None) for n in WORKERS]
    for workers in WORKERS:
        try:
            from databases import postgres_database

            manager = postgres_database()
            found.append(("postgresql", workers, manager.__enter__(), manager))
        except BaseException as exc:  # pytest.skip derives from BaseException
            print(f"note: PostgreSQL not measured: {exc}")
            break
    return found


def run(quick: bool) -> Report:
    report = Report("heartbeats")
    if shutil.which("wrk") is None:
        report.targets.append(
            Target("heartbeats per second", f">= {NEEDED:.0f}/s", "wrk not installed", None)
        )
        report.notes.append("install Debian's wrk (./dev bench does when it runs as root)")
        return report
    from arm import start_arm

    machines = 100 if quick else 1000
    seconds = 3 if quick else 15
    table = Table(
        f"heartbeats: {machines} enrolled agents, wrk -t2 -c64 for {seconds} s over HTTPS",
        [
            "database",
            "workers",
            "heartbeats/s",
            "p50",
            "p99",
            "errors",
            "baseline GET/s",
            "ratio",
            "for 100k agents/min",
        ],
    )
    for name, workers, url, manager in _databases():
        with tempfile.TemporaryDirectory(prefix="bench-heartbeats-") as tmp:
            args = (*(("--db", url) if url else ()), "--workers", str(workers))
            arm = start_arm(Path(tmp) / "data", *args)
            try:
                tokens = Path(tmp) / "tokens.txt"
                tokens.write_text("\n".join(_fleet(arm, machines)) + "\n")
                base = _wrk(arm.url, tokens, "whoami", seconds)
                beats = _wrk(arm.url, tokens, "heartbeat", seconds)
            finally:
                arm.server.stop()
                if manager is not None:
                    manager.__exit__(None, None, None)
        table.rows.append(
            [
                name,
                str(workers),
                f"{beats['rate']:.0f}",
                f"{beats['p50']:.1f} ms",
                f"{beats['p99']:.1f} ms",
                f"{beats['errors']:.0f}",
                f"{base['rate']:.0f}",
                f"{beats['rate'] / base['rate']:.2f}x",
                f"{beats['rate'] / NEEDED:.2f}x",
            ]
        )
        report.targets.append(
            Target(
                f"heartbeats/s ({name}, {workers} worker{'s' if workers > 1 else ''})",
                f">= {NEEDED:.0f}/s",
                f"{beats['rate']:.0f}/s",
                beats["rate"] >= NEEDED and beats["errors"] == 0,
            )
        )
        report.data[f"{name}-{workers}"] = {
            "heartbeat": beats,
            "baseline": base,
            "machines": machines,
            "workers": workers,
        }
    report.tables.append(table)
    return report
