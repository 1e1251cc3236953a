"""The fleet demo's releases: the demo stack's baselines and hotpatch, built and published.

Built from the demo app's real wheels (``stack.demo_wheels``): the running baseline is
app 1.0.0; the hotpatch (1.0.0 to 1.0.1) fixes the path traversal in ``resolve`` in
memory; the next baseline (1.1.0) changes a class layout, which no hotpatch can, so it
ships as an unplanned Security baseline and installs with a restart. Each is published
through ``Catalog.publish`` with its rules, exactly as ``hotpatch release publish`` does.
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from pathlib import Path

from pyhotpatch.build import build
from pyhotpatch.catalog import (
    DEFAULT_BASELINE_MONTHS,
    ArtifactRef,
    Catalog,
    Kind,
    PublishRequest,
)
from pyhotpatch.catalog._calendar import patch_tuesday
from pyhotpatch.catalog._products import DEMO
from pyhotpatch.demo.stack import demo_wheels, lock_text
from pyhotpatch.package import Manifest, write_package

RUNNING, HOTPATCH, NEXT_BASELINE = "KB5070100", "KB5070101", "KB5070110"


def last_planned_baseline_day(now: datetime) -> date:
    """The latest baseline month's Patch Tuesday on or before ``now``."""
    year, month = now.year, now.month
    while True:
        if month in DEFAULT_BASELINE_MONTHS:
            day = patch_tuesday(year, month)
            if datetime.combine(day, time(), timezone.utc) <= now:
                return day
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)


class ReleaseDesk:
    """Builds the demo's releases once and publishes each when the story needs it."""

    def __init__(self, catalog: Catalog, root: Path) -> None:
        self.catalog = catalog
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.wheels = demo_wheels(root / "wheels")

    def _ref(self, path: Path, role: str) -> ArtifactRef:
        sha, _ = self.catalog.blobs.put_file(path)
        return ArtifactRef(path.name, role, sha)

    def _baseline(self, kb: str, version: str, kind: Kind, when: datetime) -> None:
        wheel = self.wheels[version]
        lock = self.root / f"{kb}.lock"
        lock.write_text(lock_text([wheel]))
        self.catalog.publish(
            PublishRequest(
                product=DEMO,
                kind=kind,
                artifacts=(self._ref(lock, "lock"), self._ref(wheel, "wheel")),
                kb=kb,
                title=f"demo app {version}",
                classifications=("Security",),
                severity="Important",
                published=when,
            )
        )

    def publish_running(self, now: datetime) -> None:
        """The baseline the machines start on: app 1.0.0, last planned baseline month."""
        day = last_planned_baseline_day(now)
        when = datetime.combine(day, time(), timezone.utc)
        self._baseline(RUNNING, "1.0.0", Kind.PLANNED_BASELINE, when)

    def publish_hotpatch(self, now: datetime) -> int:
        """The Security hotpatch for the path traversal; the package's size in bytes."""
        result = build(
            str(self.wheels["1.0.0"]),
            str(self.wheels["1.0.1"]),
            patch_id=HOTPATCH,
            classification="Security",
        )
        manifest = Manifest(
            id=HOTPATCH,
            title="Path traversal in /files (demo app 1.0.1)",
            classification="Security",
            targets=result.manifest.targets,
        )
        package = self.root / f"{HOTPATCH}.hotpatch"
        write_package(package, manifest, result.sources)
        self.catalog.publish(
            PublishRequest(
                product=DEMO,
                kind=Kind.HOTPATCH,
                artifacts=(self._ref(package, "hotpatch"),),
                published=now,
            )
        )
        return package.stat().st_size

    def publish_next_baseline(self, now: datetime) -> None:
        """App 1.1.0: a change no hotpatch can carry, so an unplanned baseline (a restart)."""
        self._baseline(NEXT_BASELINE, "1.1.0", Kind.UNPLANNED_BASELINE, now)
