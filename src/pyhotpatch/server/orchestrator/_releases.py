"""Which release a machine still needs: the line of baselines and cumulative hotpatches.

A hotpatch is built for one baseline and is cumulative within it, so a machine needs
hotpatch *N* when it runs that baseline with no hotpatch or an earlier one; it takes it
without a restart when hotpatch is on (``hotpatch``), else by restarting its service
(``restart``: the restart-based cumulative update). A machine needs a baseline when it
runs an older baseline of the same product (``baseline``: always a restart). Read once per
orchestrator pass from ``catalog_releases``, so deciding is a dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from pyhotpatch.server.orchestrator._fleet import Machine
from pyhotpatch.storage._tables import fleet_machines, machines, releases

HOTPATCH, BASELINE, RESTART = "hotpatch", "baseline", "restart"
_BASELINES = ("planned-baseline", "unplanned-baseline")


@dataclass(frozen=True, slots=True)
class ReleaseLine:
    """One release as the orchestrator reads it."""

    kb: str
    product: str
    kind: str
    classifications: tuple[str, ...]
    baseline: str | None
    sequence: int
    published: datetime
    available: datetime
    superseded_by: str | None
    halted: datetime | None
    title: str = ""
    reboot_behavior: str = "Unknown"

    @property
    def is_baseline(self) -> bool:
        """Whether installing it means a new baseline (a restart)."""
        return self.kind in _BASELINES


class Releases:
    """Every release of the catalog, by KB id, as of one orchestrator pass."""

    def __init__(self, found: dict[str, ReleaseLine]) -> None:
        self.by_kb = found

    @classmethod
    def read(cls, conn: Connection) -> Releases:
        """The catalog's releases as they are in ``conn``'s transaction."""
        rows = conn.execute(
            select(
                releases.c.kb,
                releases.c.product,
                releases.c.kind,
                releases.c.classifications,
                releases.c.baseline,
                releases.c.sequence,
                releases.c.published,
                releases.c.available,
                releases.c.superseded_by,
                releases.c.halted,
                releases.c.title,
                releases.c.reboot_behavior,
            ).order_by(releases.c.published, releases.c.kb)
        )
        return cls(
            {
                row.kb: ReleaseLine(
                    kb=row.kb,
                    product=row.product,
                    kind=row.kind,
                    classifications=tuple(row.classifications),
                    baseline=row.baseline,
                    sequence=int(row.sequence),
                    published=row.published,
                    available=row.available,
                    superseded_by=row.superseded_by,
                    halted=row.halted,
                    title=row.title,
                    reboot_behavior=row.reboot_behavior,
                )
                for row in rows
            }
        )

    def get(self, kb: str | None) -> ReleaseLine | None:
        """The release ``kb``, if the catalog has it."""
        return self.by_kb.get(kb) if kb else None

    def needs(self, release: ReleaseLine, machine: Machine) -> str | None:
        """How ``machine`` would install ``release`` (hotpatch, restart, baseline), or None.

        None when it is not a machine of the release's product, or already has the release
        or something newer of its line.
        """
        if machine.product != release.product or machine.baseline is None:
            return None
        running = self.by_kb.get(machine.baseline)
        if release.is_baseline:
            if machine.baseline == release.kb:
                return None
            if running is not None and running.published > release.published:
                return None
            return BASELINE
        if release.kind != HOTPATCH or machine.baseline != release.baseline:
            return None
        active = self.by_kb.get(machine.active_hotpatch or "")
        if active is not None and active.sequence >= release.sequence:
            return None
        return HOTPATCH if machine.hotpatch else RESTART

    def candidates(self, release: ReleaseLine) -> list[ColumnElement[bool]]:
        """SQL conditions that keep the machines that may need ``release`` (``needs`` decides).

        They let the database leave out, before any row is read, the machines of other
        products and those that already have the release or something newer of its line.
        """
        found: list[ColumnElement[bool]] = [
            fleet_machines.c.product == release.product,
            fleet_machines.c.patch_mode == "AutomaticByPlatform",
            machines.c.baseline.is_not(None),
        ]
        line = [r for r in self.by_kb.values() if r.product == release.product]
        if release.is_baseline:
            newer = [r.kb for r in line if r.is_baseline and r.published >= release.published]
            found.append(machines.c.baseline.not_in(newer))
        else:
            assert release.baseline is not None
            level = [
                r.kb
                for r in line
                if r.kind == HOTPATCH
                and r.baseline == release.baseline
                and r.sequence >= release.sequence
            ]
            found.append(machines.c.baseline == release.baseline)
            found.append(or_(machines.c.hotpatch.is_(None), machines.c.hotpatch.not_in(level)))
        return [and_(*found)]

    def missing(self, machine: Machine, now: datetime, *, security_only: bool = True) -> list[str]:
        """The KB ids of ``lacking``: what the machine should still install."""
        return [release.kb for release in self.lacking(machine, now, security_only=security_only)]

    def lacking(
        self, machine: Machine, now: datetime, *, security_only: bool = True
    ) -> list[ReleaseLine]:
        """The newest releases of the machine's line it lacks (available by ``now``).

        At most the newest baseline and the newest hotpatch on the baseline it runs; with
        ``security_only``, Critical and Security ones only.
        """
        found: dict[str, ReleaseLine] = {}
        for release in self.by_kb.values():
            if release.available > now or release.superseded_by is not None:
                continue
            if release.halted is not None:
                continue  # halted by the health gate: not offered until a fixed release
            if security_only and not {"Critical", "Security"} & set(release.classifications):
                continue
            if self.needs(release, machine) is not None:
                slot = "baseline" if release.is_baseline else "hotpatch"
                found[slot] = release
        return list(found.values())
