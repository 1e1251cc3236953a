"""instructions: what the enabled runtime costs per request, counted in CPU instructions.

Requests per second on a shared 2-core machine swing by several percent between identical
runs, too much to resolve a 1% target. Valgrind's callgrind counts the instructions a process
executes, which repeats to a small fraction of a percent whatever else the machine does. Each
mode (runtime off, runtime on) runs the same in-process server twice, for 0 and for N
keep-alive requests; the difference divided by N is the cost of one request, with start-up
(and ``enable()`` itself, measured in ``readiness``) cancelled out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from _common import BENCH, Report, Table, Target, child_env, python3

TOLERANCE = 0.01
_COLLECTED = re.compile(r"Collected : (\d+)")


def _interpreter() -> str:
    """The real python3 binary: valgrind must run it, not a launcher script in front of it."""
    done = subprocess.run(
        [python3(), "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _instructions(mode: str, count: int) -> int:
    env = child_env([BENCH], PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix="ph-instr-") as tmp:
        env["PYHOTPATCH_RUN_DIR"] = tmp
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp) / 'out'}",
                _interpreter(),
                str(BENCH / "instructions_child.py"),
                mode,
                str(count),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def run(quick: bool) -> Report:
    report = Report("instructions")
    if shutil.which("valgrind") is None:
        report.notes.append("valgrind is not installed: nothing measured")
        report.targets.append(Target("instructions per request", "within 1%", "not run", None))
        return report
    count = 40 if quick else 300
    table = Table(
        f"instructions: callgrind counts, in-process server, 0 and {count} keep-alive requests",
        ["runtime", "start-up only", f"start-up + {count} requests", "per request", "vs off"],
    )
    per: dict[str, float] = {}
    for mode in ("off", "on"):
        base, loaded = _instructions(mode, 0), _instructions(mode, count)
        per[mode] = (loaded - base) / count
        report.data[mode] = {"startup": base, "with_requests": loaded, "per_request": per[mode]}
        change = "" if mode == "off" else f"{(per['on'] / per['off'] - 1) * 100:+.2f}%"
        table.rows.append([mode, f"{base:,}", f"{loaded:,}", f"{per[mode]:,.0f}", change])
    report.tables.append(table)
    delta = per["on"] / per["off"] - 1
    report.targets.append(
        Target(
            "instructions per request, runtime enabled vs not",
            "within 1%",
            f"{delta * 100:+.2f}% ({per['on']:,.0f} vs {per['off']:,.0f})",
            abs(delta) <= TOLERANCE,
        )
    )
    return report
