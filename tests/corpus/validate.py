"""Check the corpus: every check must see its bug with release A and not with release B.

Usage: ``python tests/corpus/validate.py [KEY...]`` (default: all cases). Installs both releases of
each case with ``envs.ensure_env`` (cached), then runs the case's check in a fresh interpreter
whose ``sys.path`` starts with that install dir: ``prepare()`` once, ``exploited(ctx)`` twice on
the same context. Prints one row per case and exits 1 unless every case shows A=True, B=False,
stably and without any output from the check.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass

from cases import BY_KEY, CASES, Case
from envs import cache_root, ensure_env

CORPUS_DIR = pathlib.Path(__file__).resolve().parent

_RUNNER = """
import importlib, importlib.metadata, json, sys, time
module, distribution = sys.argv[1:]
check = importlib.import_module("checks." + module)
start = time.perf_counter()
ctx = check.prepare()
results = [check.exploited(ctx), check.exploited(ctx)]
elapsed = time.perf_counter() - start
version = importlib.metadata.version(distribution)
sys.stdout.write(json.dumps({"results": results, "seconds": elapsed, "version": version}))
"""


@dataclass(frozen=True)
class Outcome:
    """What one check run in one release environment reported."""

    exploited: bool | None  # None: the run failed or was unstable
    seconds: float
    problem: str = ""


def run_check(case: Case, version: str) -> Outcome:
    """Run ``case``'s check in a subprocess against ``version`` of its distribution."""
    env_dir = ensure_env(case.distribution, version, case.extra_requirements)
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(env_dir), str(CORPUS_DIR)])
    environ["PYTHONPYCACHEPREFIX"] = str(cache_root() / "pycache")
    proc = subprocess.run(
        [sys.executable, "-s", "-W", "error", "-c", _RUNNER, case.check, case.distribution],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or proc.stderr:
        return Outcome(None, 0.0, (proc.stderr or proc.stdout).strip().splitlines()[-1:][0])
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return Outcome(None, 0.0, f"check printed: {proc.stdout[:80]!r}")
    first, second = report["results"]
    if report["version"] != version:
        return Outcome(None, report["seconds"], f"imported {report['version']}, not {version}")
    if first is not second:
        return Outcome(None, report["seconds"], f"unstable: {first} then {second}")
    return Outcome(bool(first), report["seconds"])


def main(argv: list[str]) -> int:
    """Validate the cases named in ``argv`` (all when empty); return the exit status."""
    unknown = [key for key in argv if key not in BY_KEY]
    if unknown:
        print(f"unknown case keys: {', '.join(unknown)}", file=sys.stderr)
        return 2
    selected = [BY_KEY[key] for key in argv] if argv else list(CASES)
    print(f"{'case':<20} {'A exploited':<12} {'B exploited':<12} {'time':>7}  verdict")
    failures = 0
    for case in selected:
        a, b = run_check(case, case.vulnerable), run_check(case, case.fixed)
        ok = a.exploited is True and b.exploited is False
        failures += not ok
        notes = "; ".join(f"{tag}: {o.problem}" for tag, o in (("A", a), ("B", b)) if o.problem)
        print(
            f"{case.key:<20} {a.exploited!s:<12} {b.exploited!s:<12} "
            f"{a.seconds + b.seconds:>6.2f}s  {'ok' if ok else 'FAIL'} {notes}".rstrip()
        )
    print(f"{len(selected) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
