"""buildtime: builder wall time on the largest diffs (django 5.0.2 -> 5.0.3, twisted 24.3 -> 24.7).

Downloads go through the builder's own cache (``pyhotpatch.build._sources.fetch``) and are timed
separately first ("cached" when already there). Then the full build from the two cached files is
timed, refused or not, median of 3 runs (1 with ``--quick``).
"""

from __future__ import annotations

import time

from _common import Report, Table, Target, median

from pyhotpatch.build import build
from pyhotpatch.build._sources import cache_dir, fetch
from pyhotpatch.errors import NotHotpatchable

PAIRS = (("django", "5.0.2", "5.0.3"), ("twisted", "24.3.0", "24.7.0"))
TARGET_S = 5.0


def _fetch_timed(name: str, version: str) -> tuple[str, str]:
    """Fetch into the builder's cache; return (path, "cached" or the download time)."""
    folder = cache_dir() / "releases" / f"{name}-{version}"
    cached = folder.is_dir() and any(folder.iterdir())
    started = time.perf_counter()
    path = fetch(name, version)
    took = "cached" if cached else f"{time.perf_counter() - started:.1f} s"
    return str(path), took


def run(quick: bool) -> Report:
    runs = 1 if quick else 3
    report = Report("buildtime")
    table = Table(
        f"buildtime: builder wall time, median of {runs} run(s) after download",
        ["release pair", "download A / B", "files", "build median", "min", "max", "outcome"],
    )
    for name, old, new in PAIRS[:1] if quick else PAIRS:
        (path_a, took_a), (path_b, took_b) = _fetch_timed(name, old), _fetch_timed(name, new)
        times: list[float] = []
        outcome = ""
        for _ in range(runs):
            started = time.perf_counter()
            try:
                result = build(path_a, path_b, patch_id="KB0000001")
                e = result.explain
                outcome = (
                    f"built: {len(e.swapped)} swapped, {len(e.added)} added, "
                    f"{len(e.rebuilt)} rebuilt, {len(e.ignored)} ignored"
                )
            except NotHotpatchable as exc:
                outcome = f"refused: {len(exc.reasons)} reasons, e.g. {exc.reasons[0][:60]}"
            times.append(time.perf_counter() - started)
        files = f"{path_a.rsplit('/', 1)[-1]}, {path_b.rsplit('/', 1)[-1]}"
        mid = median(times)
        table.rows.append(
            [
                f"{name} {old} -> {new}",
                f"{took_a} / {took_b}",
                files,
                f"{mid:.2f} s",
                f"{min(times):.2f} s",
                f"{max(times):.2f} s",
                outcome,
            ]
        )
        report.targets.append(
            Target(
                f"build {name} {old} -> {new} (median)",
                f"< {TARGET_S:g} s",
                f"{mid:.2f} s",
                mid < TARGET_S,
            )
        )
        report.data[f"{name}-{old}-{new}"] = {
            "seconds": times,
            "outcome": outcome,
            "download": [took_a, took_b],
        }
    report.tables.append(table)
    return report
