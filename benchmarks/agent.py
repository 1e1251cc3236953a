"""The node agent: time from an install request to every worker patched, and the agent at idle.

A real control plane (``hotpatch server --dev-tls``, SQLite) publishes the demo stack's
baseline and hotpatch; real agents (``hotpatch agent run``) run the demo web service
with 1, 8 and 32 workers. For each, the figure is the time from ``POST …/installPatches``
to the moment every worker's control socket reports the hotpatch active. The baseline
in the same run is the floor under it: the same package applied to the same workers
directly through their sockets, with no control plane, queue, TUF or journal in between.

At idle (production intervals: the server's 60 s heartbeats, 25 s work polls) the
agent's resident memory is compared with a bare interpreter that has imported httpx,
and its CPU use is measured over a quiet minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Report, Table, Target, median, ratio

from agent_world import GROUP, HOTPATCH_1, SUB, AgentProcess, World, world
from pyhotpatch.runtime import client

WORKERS = (1, 8, 32)
PATCH_TARGET_S = 5.0  # every worker patched within 5 s of the request, at 32 workers
IDLE_CPU_TARGET = 1.0  # percent of one core


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _all_at(agent: AgentProcess, kb: str | None) -> bool:
    pids = agent.pids()
    return len(pids) >= agent.workers and all(
        (client.status(pid, agent.run_dir).get("active") or {}).get("id") == kb for pid in pids
    )


def _direct(agent: AgentProcess, data: bytes) -> float:
    """Apply ``data`` to every worker through its socket, then revert; the apply time."""
    pids = agent.pids()
    started = time.perf_counter()
    for pid in pids:
        client.apply(pid, data, agent.run_dir)
    took = time.perf_counter() - started
    for pid in pids:
        client.revert(pid, HOTPATCH_1, agent.run_dir)
    return took


def _through_control_plane(agent: AgentProcess) -> float:
    arm = agent.world.arm
    path = f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines/{agent.name}/installPatches"
    body = {
        "maximumDuration": "PT1H",
        "rebootSetting": "IfRequired",
        "windowsParameters": {"classificationsToInclude": ["Security"]},
    }
    with arm.http(arm.token("Owner", SUB)) as http:
        started = time.perf_counter()
        reply = http.post(path, params={"api-version": "2024-07-01"}, json=body)
        assert reply.status_code == 202, reply.text
        while not _all_at(agent, HOTPATCH_1):
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"{agent.name} did not patch every worker in 120 s")
            time.sleep(0.005)
        return time.perf_counter() - started


def _package(found: World) -> bytes:
    catalog, _ = found.publisher()
    try:
        release = catalog.release(HOTPATCH_1)
        artifact = next(a for a in release.artifacts if a.role == "hotpatch")
        return catalog.blobs.read(artifact.sha256)
    finally:
        catalog.close()


def _idle(agent: AgentProcess, seconds: float) -> tuple[int, float]:
    assert agent.proc is not None
    pid = agent.proc.pid
    time.sleep(5)  # let start-up settle
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    used = _cpu_seconds(pid) - before
    return _rss_kb(pid), 100.0 * used / seconds


def _bare_rss() -> int:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import httpx, sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    proc.stdout.readline()
    rss = _rss_kb(proc.pid)
    proc.stdin.close()
    proc.wait(30)
    return rss


def run(quick: bool) -> Report:
    report = Report("agent")
    table = Table(
        "agent: install request to every worker patched (median of "
        + ("1" if quick else "3")
        + " runs)",
        ["workers", "through the control plane", "direct, socket by socket", "ratio"],
    )
    repeats = 1 if quick else 3
    sizes = (1, 8) if quick else WORKERS
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        root = Path(tmp)
        with world(root) as found:
            data = _package(found)
            for n in sizes:
                agents = []
                e2e, direct = [], []
                try:
                    for i in range(repeats):
                        agent = AgentProcess(
                            found,
                            root / f"a{n}-{i}",
                            f"bench-{n}-{i}",
                            workers=n,
                            heartbeat_seconds=60,
                            poll_seconds=25,
                        )
                        agents.append(agent)
                        agent.connect()
                        agent.start().serving(300)
                        _direct(
                            agent, data
                        )  # warm: each process loads the planner on its first apply
                        direct.append(_direct(agent, data))
                        e2e.append(_through_control_plane(agent))
                finally:
                    for agent in agents:
                        agent.stop()
                table.rows.append(
                    [
                        str(n),
                        f"{median(e2e) * 1000:.0f} ms",
                        f"{median(direct) * 1000:.1f} ms",
                        ratio(median(e2e), median(direct)),
                    ]
                )
                report.data[f"workers_{n}"] = {"e2e": e2e, "direct": direct}
                if n == max(sizes):
                    report.targets.append(
                        Target(
                            f"every worker patched, {n} workers",
                            f"< {PATCH_TARGET_S:.0f} s",
                            f"{median(e2e):.2f} s",
                            median(e2e) < PATCH_TARGET_S,
                        )
                    )
            idle = AgentProcess(
                found, root / "idle", "bench-idle", workers=2, heartbeat_seconds=60, poll_seconds=25
            )
            idle.connect()
            idle.start().serving(300)
            try:
                rss, cpu = _idle(idle, 15 if quick else 60)
            finally:
                idle.stop()
        bare = _bare_rss()
    idle_table = Table(
        "agent at idle (production intervals)",
        ["agent RSS", "python + httpx RSS", "ratio", "agent CPU"],
    )
    idle_table.rows.append(
        [f"{rss / 1024:.1f} MiB", f"{bare / 1024:.1f} MiB", ratio(rss, bare), f"{cpu:.2f} %"]
    )
    report.tables = [table, idle_table]
    report.data["idle"] = {"rss_kb": rss, "bare_rss_kb": bare, "cpu_percent": cpu}
    report.targets.append(
        Target(
            "agent CPU at idle",
            f"< {IDLE_CPU_TARGET:.0f} % of a core",
            f"{cpu:.2f} %",
            cpu < IDLE_CPU_TARGET,
        )
    )
    report.notes.append(
        "the control-plane time includes the work poll's wake-up, a TUF refresh and "
        "download, the journal's fsyncs and one socket call per worker"
    )
    return report
