"""readiness: what being hotpatchable costs a service that never gets a hotpatch.

(a) ``import pyhotpatch; pyhotpatch.enable()`` timed inside fresh python3 interpreters (median of
20), next to interpreter start-up alone (wall time of ``python3 -c pass``) and the wall time with
the import, runs alternated; plus the five slowest imports it adds (``-X importtime``).
(b) ``http_service.py`` (ThreadingHTTPServer, HTTP/1.1 keep-alive) serving a loopback client:
fresh servers without (A) and with (B) the runtime enabled, plus another without (A2) as a noise
control, in rotating order, several rounds; requests/s each and the ratios to A. (b2) removes
the differences between processes: each server measures batches before and after enabling the
runtime in place (``GET /enable``), next to control processes that never enable it.
"""

from __future__ import annotations

import http.client
import subprocess
import tempfile
import time
from pathlib import Path

from _common import BENCH, Report, Table, Target, child_env, median, python3, ratio, run_child

STARTUP_TARGET_MS = 20.0
THROUGHPUT_TOLERANCE = 0.01
TIMED = (
    "import time; t, c = time.perf_counter(), time.process_time(); import pyhotpatch; "
    "pyhotpatch.enable(); print(time.perf_counter() - t, time.process_time() - c)"
)


def _wall(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    run_child([python3(), "-c", code], env)
    return time.perf_counter() - started


def _import_breakdown(env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) of the imports ``import pyhotpatch; enable()`` adds."""

    def parse(code: str) -> list[tuple[str, int, int]]:
        done = subprocess.run(
            [python3(), "-X", "importtime", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows = []
        for line in done.stderr.splitlines():
            if line.startswith("import time:") and "|" in line and "self" not in line:
                own, cumulative, name = line.removeprefix("import time:").split("|")
                rows.append((name.strip(), int(own), int(cumulative)))
        return rows

    startup = {name for name, _, _ in parse("pass")}
    added = [r for r in parse("import pyhotpatch; pyhotpatch.enable()") if r[0] not in startup]
    return sorted(added, key=lambda r: -r[1])[:5]


def _startup(runs: int, env: dict[str, str]) -> tuple[Table, Target, dict[str, list[float]]]:
    data: dict[str, list[float]] = {"bare": [], "with": [], "inside": [], "cpu": []}
    for _ in range(runs):
        data["bare"].append(_wall("pass", env))
        data["with"].append(_wall("import pyhotpatch; pyhotpatch.enable()", env))
        wall, cpu = run_child([python3(), "-c", TIMED], env).split()
        data["inside"].append(float(wall))
        data["cpu"].append(float(cpu))
    bare, inside = median(data["bare"]) * 1e3, median(data["inside"]) * 1e3
    with_ = median(data["with"]) * 1e3
    table = Table(
        f"readiness (a): start-up of fresh python3 interpreters, median of {runs}",
        ["measurement", "median", "min", "vs interpreter start-up"],
    )

    def row(label: str, key: str, versus: str) -> None:
        table.rows.append(
            [label, f"{median(data[key]) * 1e3:.2f} ms", f"{min(data[key]) * 1e3:.2f} ms", versus]
        )

    row("interpreter start-up alone (python3 -c pass, wall)", "bare", "1x")
    row(
        "start-up with import + enable (wall)",
        "with",
        f"+{with_ - bare:.1f} ms ({ratio(with_, bare)})",
    )
    row(
        "import pyhotpatch; enable() (timed inside, wall)",
        "inside",
        f"{inside / bare:.1%} of start-up",
    )
    row("import pyhotpatch; enable() (timed inside, CPU)", "cpu", "")
    for name, own, cumulative in _import_breakdown(env):
        table.rows.append(
            [
                f"  import {name}",
                f"{own / 1e3:.2f} ms self",
                f"{cumulative / 1e3:.2f} ms cumul.",
                "one -X importtime run",
            ]
        )
    target = Target(
        "import pyhotpatch; enable() at start-up (median)",
        f"< {STARTUP_TARGET_MS:g} ms",
        f"{inside:.2f} ms (interpreter start-up {bare:.1f} ms)",
        inside < STARTUP_TARGET_MS,
    )
    return table, target, data


class _Server:
    """One fresh ``http_service.py`` process and a keep-alive connection to it."""

    def __init__(self, mode: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [python3(), str(BENCH / "http_service.py"), mode],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", int(self.proc.stdout.readline()), timeout=10
        )

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"server answered {response.status}")
        return body

    def batch(self, requests: int) -> tuple[float, float]:
        """Send ``requests`` GETs one after another; return requests/s and server CPU us/request."""
        cpu = float(self.get("/cpu"))
        started = time.perf_counter()
        for n in range(requests):
            self.get(f"/item/{n}")
        took = time.perf_counter() - started
        return requests / took, (float(self.get("/cpu")) - cpu) / requests * 1e6

    def close(self) -> None:
        self.conn.close()
        self.proc.kill()
        self.proc.wait()


def _throughput(
    rounds: int, requests: int, env: dict[str, str]
) -> tuple[Table, Target, dict[str, list[tuple[float, float]]]]:
    """Fresh servers A (off), B (on) and A2 (off, the noise control), order rotated per round."""
    names = {"A": "off", "B": "on", "A2": "off"}
    data: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    order = list(names)
    for n in range(rounds):
        for name in order[n % 3 :] + order[: n % 3]:
            server = _Server(names[name], env)
            try:
                server.batch(requests // 10)  # warm-up
                data[name].append(server.batch(requests))
            finally:
                server.close()
    rps = {name: [r for r, _ in runs] for name, runs in data.items()}
    cpu = {name: median(c for _, c in runs) for name, runs in data.items()}
    change = {name: median(rps[name]) / median(rps["A"]) - 1 for name in names}
    table = Table(
        f"readiness (b): ThreadingHTTPServer, {rounds} rounds of one fresh server per "
        f"kind, {requests} keep-alive requests each, order rotated each round",
        ["server", "median req/s", "min", "max", "vs A", "server CPU per request"],
    )
    labels = {
        "A": "A: runtime not enabled",
        "B": "B: pyhotpatch.enable()",
        "A2": "A2: not enabled (noise control)",
    }
    for name, label in labels.items():
        table.rows.append(
            [
                label,
                f"{median(rps[name]):,.0f}",
                f"{min(rps[name]):,.0f}",
                f"{max(rps[name]):,.0f}",
                f"{change[name]:+.2%}",
                f"{cpu[name]:.1f} us ({ratio(cpu[name], cpu['A'])})",
            ]
        )
    noisy = abs(change["A2"]) > THROUGHPUT_TOLERANCE
    target = Target(
        "requests/s with runtime vs without (medians)",
        f"within {THROUGHPUT_TOLERANCE:.0%}",
        f"{change['B']:+.2%} (noise control A2 vs A: {change['A2']:+.2%})",
        None if noisy else abs(change["B"]) <= THROUGHPUT_TOLERANCE,
    )
    if noisy:
        table.rows.append(
            ["inconclusive: two identical servers differ by more than the goal", "", "", "", "", ""]
        )
    return table, target, data


def _in_process(pairs: int, requests: int, env: dict[str, str]) -> tuple[Table, Target]:
    """One server process, 3 batches before and 3 after ``GET /enable``; controls skip it."""
    ratios: dict[str, list[tuple[float, float]]] = {"enable()": [], "control": []}
    for n in range(pairs):
        for kind in ("enable()", "control") if n % 2 == 0 else ("control", "enable()"):
            server = _Server("off", env)
            try:
                server.batch(requests // 10)  # warm-up
                before = [server.batch(requests) for _ in range(3)]
                if kind == "enable()":
                    server.get("/enable")
                after = [server.batch(requests) for _ in range(3)]
            finally:
                server.close()
            rps = median(r for r, _ in after) / median(r for r, _ in before)
            ratios[kind].append((rps, median(c for _, c in after) / median(c for _, c in before)))
    table = Table(
        f"readiness (b2): the same server process before and after enable(), {pairs} processes "
        f"each, 3 + 3 batches of {requests} requests",
        ["process", "req/s after / before", "CPU per request after / before"],
    )
    figures = {}
    for kind, values in ratios.items():
        figures[kind] = (median(r for r, _ in values), median(c for _, c in values))
        table.rows.append([kind, f"{figures[kind][0]:.3f}x", f"{figures[kind][1]:.3f}x"])
    net = figures["enable()"][0] / figures["control"][0] - 1
    net_cpu = figures["enable()"][1] / figures["control"][1] - 1
    table.rows.append(["enable() net of control", f"{net:+.2%}", f"{net_cpu:+.2%}"])
    controls = [r for r, _ in ratios["control"]]
    target = Target(
        "requests/s after enable() in the same process, net of control",
        f"within {THROUGHPUT_TOLERANCE:.0%}",
        f"{net:+.2%} (CPU/request {net_cpu:+.2%}; control processes "
        f"{min(controls) - 1:+.1%} .. {max(controls) - 1:+.1%})",
        abs(net) <= THROUGHPUT_TOLERANCE,
    )
    return table, target


def run(quick: bool) -> Report:
    report = Report("readiness")
    with tempfile.TemporaryDirectory(prefix="bench-ready-") as tmp:
        env = child_env(PYHOTPATCH_RUN_DIR=str(Path(tmp)))
        table, target, startup = _startup(5 if quick else 20, env)
        report.tables.append(table)
        report.targets.append(target)
        table, target, serving = _throughput(2 if quick else 10, 300 if quick else 2000, env)
        report.tables.append(table)
        report.targets.append(target)
        table, target = _in_process(1 if quick else 6, 300 if quick else 1500, env)
        report.tables.append(table)
        report.targets.append(target)
    report.data = {"startup_s": startup, "requests_per_s": serving}
    return report
