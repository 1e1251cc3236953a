"""pause: the longest stall application threads see while a hotpatch of 1, 10, 100 functions lands.

A generated module of 120 functions (60 module functions, 60 methods in 6 classes) and three
releases changing 1, 10 and 100 of them are built in-process. ``pause_child.py`` imports the
baseline, enables the runtime and runs two application threads that call every function in a
loop. For each size the parent alternates: a window in which it applies the package through the
control socket, a baseline window of the same length with no apply, and a window with the revert.
Reported per size (median and p95 over the repetitions): the longest gap between two loop
iterations during the apply and in the baseline window, the engine's own ``prepare_ms`` and
``pause_ms`` (the swap critical section), the client round trip and the same for the revert.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from _common import BENCH, Report, Table, Target, child_env, median, percentile, python3, ratio

from pyhotpatch.build import build
from pyhotpatch.runtime import client

UNITS = 120
SIZES = (1, 10, 100)
PAD_S = 0.02  # quiet time before and after the apply inside each window
TARGET_MS = 1.0


def module_source(changed: int) -> str:
    """``benchmod``: even units are functions, odd ones methods; the first ``changed`` differ."""
    funcs: list[str] = []
    methods: list[list[str]] = [[] for _ in range(6)]
    for i in range(UNITS):
        k = 1000 + i if i < changed else i
        if i % 2:
            methods[(i // 2) % 6].append(
                f"    def m{i:03d}(self, x):\n        y = x + {k}\n"
                "        return y * 2 if y % 3 else y - 1\n"
            )
        else:
            funcs.append(
                f"def f{i:03d}(x):\n    y = x + {k}\n    return y * 2 if y % 3 else y - 1\n"
            )
    classes = [f"class C{c}:\n" + "\n".join(body) for c, body in enumerate(methods)]
    names = [f"f{i:03d}" for i in range(0, UNITS, 2)]
    tail = f"FUNCTIONS = {names!r}\nCLASSES = [{', '.join(f'C{c}' for c in range(6))}]\n"
    return "\n\n".join(['"""Generated for the pause benchmark."""', *funcs, *classes, tail])


def _build_packages(root: Path) -> tuple[Path, dict[int, bytes]]:
    from support import make_release

    base = make_release(root / "a", "benchmod", "1.0", {"benchmod.py": module_source(0)})
    packages = {}
    for size in SIZES:
        fixed = make_release(
            root / f"b{size}", "benchmod", "1.1", {"benchmod.py": module_source(size)}
        )
        result = build(str(base), str(fixed), patch_id=f"KB{size:04d}")
        if len(result.explain.swapped) != size:
            raise RuntimeError(f"expected {size} swapped functions, got {result.explain.swapped}")
        packages[size] = result.to_bytes()
    return base, packages


class _Child:
    """The child process and its line protocol."""

    def __init__(self, base: Path, run_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [python3(), str(BENCH / "pause_child.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env([base, BENCH], PYHOTPATCH_RUN_DIR=str(run_dir)),
        )
        self.run_dir = run_dir
        if self._line() != "ready":
            raise RuntimeError("pause child did not start")

    def _line(self) -> str:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        return out.readline().strip()

    def _send(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line()

    def window(
        self, action: Callable[[], Any] | None = None, length: float = 0.0
    ) -> tuple[dict[str, Any], Any, float]:
        """Run ``action`` (or sleep ``length``) inside a window; return gaps, result, duration."""
        if self._send("start") != "ok":
            raise RuntimeError("pause child out of step")
        time.sleep(PAD_S)
        started = time.perf_counter()
        result = action() if action else time.sleep(length)  # type: ignore[func-returns-value]
        took = time.perf_counter() - started
        time.sleep(PAD_S)
        return json.loads(self._send("stop")), result, took

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _stats(values: list[float]) -> str:
    return f"{median(values):.3f} / {percentile(values, 95):.3f}"


def _trial(child: _Child, size: int, package: bytes) -> dict[str, float]:
    """Apply, an idle window as long as the apply, and revert; the figures of each, in ms."""
    pid, run_dir = child.proc.pid, child.run_dir
    win, rep, took = child.window(lambda: client.apply(pid, package, run_dir))
    idle, _, _ = child.window(length=took)
    rev_win, rev, _ = child.window(lambda: client.revert(pid, f"KB{size:04d}", run_dir))
    if min(w["threads_alive"] for w in (win, idle, rev_win)) != 2:
        raise RuntimeError("an application thread of the pause child died")
    if win["swap_ns"] is None or rev_win["swap_ns"] is None:
        raise RuntimeError("no swap seen in the window: did _engine._commit/_clear change?")
    if rep["functions"] != size:
        raise RuntimeError(f"apply patched {rep['functions']} functions, not {size}")
    return {
        "gap_apply": win["max_gap_ns"] / 1e6,
        "gap_base": idle["max_gap_ns"] / 1e6,
        "pause": rep["pause_ms"],
        "prepare": rep["prepare_ms"],
        "round_trip": took * 1e3,
        "gap_revert": rev_win["max_gap_ns"] / 1e6,
        "revert_pause": rev["pause_ms"],
        "inside_swap": win["iterations_inside_swap"] + rev_win["iterations_inside_swap"],
    }


COLUMNS = {  # figure -> column title
    "gap_apply": "max gap, apply",
    "gap_base": "max gap, baseline",
    "pause": "pause_ms (swap)",
    "prepare": "prepare_ms",
    "round_trip": "round trip",
    "gap_revert": "max gap, revert",
    "revert_pause": "revert pause_ms",
}


def run(quick: bool) -> Report:
    repeats = 3 if quick else 20
    report = Report("pause")
    rows: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pause-") as tmp:
        base, packages = _build_packages(Path(tmp))
        child = _Child(base, Path(tmp) / "run")
        try:
            for size in SIZES:
                trials = [_trial(child, size, packages[size]) for _ in range(repeats)]
                rows[size] = {k: [t[k] for t in trials] for k in trials[0]}
        finally:
            child.close()
    table = Table(
        f"pause: {repeats} applies and reverts per size, ms as median / p95 "
        f"(sys.getswitchinterval() = {sys.getswitchinterval() * 1e3:g} ms)",
        ["functions", *list(COLUMNS.values())[:2], "ratio", *list(COLUMNS.values())[2:]],
    )
    table.headers.append("ran mid-swap")
    for size, d in rows.items():
        cells = [_stats(d[k]) for k in COLUMNS]
        gap_ratio = ratio(median(d["gap_apply"]), median(d["gap_base"]))
        table.rows.append(
            [str(size), *cells[:2], gap_ratio, *cells[2:], f"{sum(d['inside_swap']):.0f}"]
        )
    report.tables.append(table)
    ten = rows[10]
    stall, base_gap = median(ten["gap_apply"]), median(ten["gap_base"])
    report.targets.append(
        Target(
            "longest stall during apply, 10 functions",
            f"< {TARGET_MS:g} ms",
            f"median {stall:.3f} ms, p95 {percentile(ten['gap_apply'], 95):.3f} ms "
            f"(baseline {base_gap:.3f} ms)",
            stall < TARGET_MS,
        )
    )
    pause_p95 = percentile(ten["pause"], 95)
    report.targets.append(
        Target(
            "swap critical section, 10 functions",
            f"< {TARGET_MS:g} ms",
            f"p95 pause_ms {pause_p95:.3f} ms",
            pause_p95 < TARGET_MS,
        )
    )
    report.notes.append(
        "max gap = longest time between two loop iterations of an application thread (50 us "
        "sleep + work per iteration); prepare runs on the control thread and holds the GIL "
        "between its I/O, so a thread can wait up to one switch interval during it. "
        "ran mid-swap = loop iterations of application threads that completed inside the swap "
        "critical section (0: no thread ran while the batch was written)."
    )
    report.data = {
        "repeats": repeats,
        "units": UNITS,
        "sizes": {str(k): v for k, v in rows.items()},
    }
    return report
