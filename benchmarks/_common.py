"""Shared pieces of the benchmarks: paths, statistics, result records and table printing."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BENCH = ROOT / "benchmarks"
if str(ROOT / "tests") not in sys.path:  # tests/support.py and tests/corpus/ are reused here
    sys.path.insert(0, str(ROOT / "tests"))


def python3() -> str:
    """The machine's python3 (the interpreter every child process runs on)."""
    return shutil.which("python3") or sys.executable


def child_env(paths: Sequence[Path | str] = (), **extra: str) -> dict[str, str]:
    """Environment for a child on python3: ``src`` plus ``paths`` importable, no PYHOTPATCH*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    # an installed service runs from cached bytecode; measure that, not recompiling each start
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *map(str, paths)])
    env.update(extra)
    return env


def run_child(args: Sequence[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run a child to completion and return its stdout; raise with its stderr if it failed."""
    done = subprocess.run(
        list(args), capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def median(values: Iterable[float]) -> float:
    """The median (NaN for no values)."""
    data = list(values)
    return statistics.median(data) if data else float("nan")


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100)."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, -(-len(data) * q // 100))  # ceil(n * q / 100)
    return data[int(rank) - 1]


def ratio(value: float, baseline: float) -> str:
    """Format ``value / baseline`` as ``1.23x``."""
    if baseline == 0 or value != value or baseline != baseline:
        return "n/a"
    r = value / baseline
    return f"{r:.3f}x" if r < 10 else f"{r:.0f}x"


@dataclass
class Table:
    """A titled table of strings."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def render(self) -> str:
        """The table as aligned plain text."""
        cells = [self.headers, *self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        line = "  ".join("-" * w for w in widths)
        out = [self.title, line]
        for n, row in enumerate(cells):
            out.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if n == 0:
                out.append(line)
        return "\n".join(out)


@dataclass
class Target:
    """One goal of a benchmark and whether this run met it (None: could not be measured)."""

    name: str
    goal: str
    measured: str
    passed: bool | None


@dataclass
class Report:
    """What one benchmark measured: tables to print, targets, notes and raw data for JSON."""

    name: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
