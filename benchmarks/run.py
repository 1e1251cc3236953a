"""Run the benchmarks and print each one's figures, its baseline and the ratio, then a summary.

Usage: ``benchmarks/run.py [--quick] [--json FILE] [names...]`` (``./dev bench``). ``--quick``
shrinks repetitions for a smoke run. Exits 0 whatever the figures: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

from _common import Report, Table, Target

NAMES = (
    "pause",
    "latency",
    "size",
    "buildtime",
    "readiness",
    "instructions",
    "distribution",
    "heartbeats",
    "agent",
    "orchestrator",
)


def _run_one(name: str, quick: bool) -> Report:
    started = time.perf_counter()
    try:
        report: Report = importlib.import_module(name).run(quick)
    except Exception:
        traceback.print_exc()
        report = Report(name, targets=[Target("benchmark ran", "no error", "crashed", False)])
    report.data["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _print(report: Report) -> None:
    print(f"\n=== {report.name} ({report.data['seconds']} s) ===", flush=True)
    for table in report.tables:
        print(table.render())
    for note in report.notes:
        print(f"note: {note}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default all): {', '.join(NAMES)}",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    names = args.names or list(NAMES)
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"{'quick' if args.quick else 'full'} run of {', '.join(names)}",
        flush=True,
    )
    reports = []
    for name in names:
        report = _run_one(name, args.quick)
        _print(report)
        reports.append(report)
    summary = Table("\n=== summary ===", ["benchmark", "target", "goal", "measured", "result"])
    for report in reports:
        for t in report.targets:
            verdict = "INCONCLUSIVE" if t.passed is None else ("PASS" if t.passed else "FAIL")
            summary.rows.append([report.name, t.name, t.goal, t.measured, verdict])
    print(summary.render())
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
