"""size: hotpatch package size vs the fixed release's wheel, over the development corpus.

For every case of ``tests/corpus/cases.py`` the builder turns ``name==A`` into ``name==B``
(releases cached by the builder); cases it refuses are listed with their reason count. The fixed
wheel is what ``pip download --no-deps --only-binary=:all: name==B`` fetches for this interpreter
(the platform wheel for tornado), kept under ``<cache>/wheels``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from _common import Report, Table, Target, median

from corpus.cases import CASES
from corpus.envs import cache_root
from pyhotpatch.build import build
from pyhotpatch.errors import NotHotpatchable, SourceError

QUICK = ("requests-32681", "werkzeug-46136", "pyjwt-53861")
TARGET = 0.05


def fixed_wheel(distribution: str, version: str) -> Path:
    """The wheel pip picks for ``distribution==version`` here, downloaded once into the cache."""
    target = cache_root() / "wheels" / f"{distribution}-{version}"
    found = sorted(target.glob("*.whl")) if target.is_dir() else []
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    flags = ["--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:"]
    command = [sys.executable, "-m", "pip", "download", *flags, "-d", str(target)]
    subprocess.run([*command, f"{distribution}=={version}"], check=True, capture_output=True)
    return sorted(target.glob("*.whl"))[0]


def run(quick: bool) -> Report:
    report = Report("size")
    table = Table(
        "size: package bytes vs fixed wheel bytes, per corpus case",
        ["case", "A -> B", "package", "wheel", "ratio", "build+fetch", "wheel file"],
    )
    ratios: dict[str, float] = {}
    for case in CASES:
        if quick and case.key not in QUICK:
            continue
        wheel = fixed_wheel(case.distribution, case.fixed)
        wheel_size = wheel.stat().st_size
        started = time.perf_counter()
        try:
            package = build(
                case.requirement(case.vulnerable),
                case.requirement(case.fixed),
                patch_id="KB0000001",
            ).to_bytes()
        except (NotHotpatchable, SourceError) as exc:
            why = (
                f"refused ({len(exc.reasons)} reasons)" if isinstance(exc, NotHotpatchable) else ""
            )
            cells = [why or f"error: {exc}"[:60], f"{wheel_size:,}", "-", ""]
        else:
            ratios[case.key] = len(package) / wheel_size
            took = f"{time.perf_counter() - started:.1f} s"
            cells = [f"{len(package):,}", f"{wheel_size:,}", f"{ratios[case.key]:.2%}", took]
        table.rows.append([case.key, f"{case.vulnerable} -> {case.fixed}", *cells, wheel.name])
    mid = median(ratios.values())
    table.rows.append([f"median of {len(ratios)} built", "", "", "", f"{mid:.2%}", "", ""])
    report.tables.append(table)
    report.targets.append(
        Target(
            f"median package / wheel size ({len(ratios)} cases)",
            f"< {TARGET:.0%}",
            f"{mid:.2%}",
            mid < TARGET,
        )
    )
    report.data = {"ratios": ratios}
    return report
