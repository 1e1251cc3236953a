"""What the signed catalog offers one machine: its product's releases, from TUF alone.

Every field used here was signed by the control plane's targets role with the
artifact it describes (``catalog._tuf_repo.target_custom``), so an assessment
cannot be steered by an unsigned answer. Hotpatches are cumulative: only the
newest one for the running baseline is offered, as Windows Update offers only the
latest cumulative update. A newer baseline of the product is offered too; it
installs with a restart. Other updates (``other-update``) ship inside the next
baseline and are not offered on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pyhotpatch.catalog.tufclient import TargetInfo

HOTPATCH, PLANNED, UNPLANNED = "hotpatch", "planned-baseline", "unplanned-baseline"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def moment(text: Any) -> datetime:
    """An ISO 8601 time from signed metadata; the epoch when absent or malformed."""
    if not isinstance(text, str) or not text:
        return _EPOCH
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Offer:
    """One release of the catalog as the agent sees it, with its signed artifacts by role."""

    kb: str
    product: str
    kind: str
    baseline: str | None
    sequence: int
    title: str
    classifications: tuple[str, ...]
    severity: str
    reboot_behavior: str
    published: datetime
    available: datetime
    artifacts: Mapping[str, tuple[str, ...]]

    @property
    def is_baseline(self) -> bool:
        """Whether installing it means a new environment and a restart."""
        return self.kind in (PLANNED, UNPLANNED)

    def patch(self, *, restart_based: bool = False) -> dict[str, Any]:
        """The offer as an assessment lists it (Azure's ``VirtualMachineSoftwarePatchProperties``).

        ``restart_based`` is true on machines that take hotpatches by restarting
        (hotpatch turned off): then every release needs a restart.
        """
        reboot = "AlwaysRequiresReboot" if restart_based else self.reboot_behavior
        return {
            "name": self.title,
            "kbId": self.kb,
            "classifications": list(self.classifications),
            "rebootBehavior": reboot,
            "publishedDate": self.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kind": self.kind,
            "baseline": self.baseline,
        }


def offers(targets: Mapping[str, TargetInfo]) -> list[Offer]:
    """The releases the signed targets describe, one per KB id, oldest first."""
    grouped: dict[tuple[str, str], list[TargetInfo]] = {}
    for target in targets.values():
        custom = target.custom
        kb, product = custom.get("kbId"), custom.get("product")
        if isinstance(kb, str) and isinstance(product, str):
            grouped.setdefault((product, kb), []).append(target)
    found = []
    for (product, kb), group in grouped.items():
        custom = group[0].custom
        roles: dict[str, list[str]] = {}
        for target in group:
            roles.setdefault(str(target.custom.get("role", "file")), []).append(target.path)
        published = moment(custom.get("publishedDate"))
        sequence = custom.get("sequence")
        found.append(
            Offer(
                kb=kb,
                product=product,
                kind=str(custom.get("kind", "")),
                baseline=custom.get("baseline")
                if isinstance(custom.get("baseline"), str)
                else None,
                sequence=sequence if isinstance(sequence, int) else 0,
                title=str(custom.get("title") or kb),
                classifications=tuple(str(c) for c in custom.get("classifications") or ()),
                severity=str(custom.get("severity", "Unspecified")),
                reboot_behavior=str(custom.get("rebootBehavior", "Unknown")),
                published=published,
                available=moment(custom.get("availableDate"))
                if custom.get("availableDate")
                else published,
                artifacts={role: tuple(sorted(paths)) for role, paths in roles.items()},
            )
        )
    return sorted(found, key=lambda o: (o.published, o.sequence, o.kb))


def newest_baseline(catalog: Iterable[Offer], product: str, now: datetime) -> Offer | None:
    """The product's current baseline: the newest one that may install by ``now``."""
    found = [o for o in catalog if o.product == product and o.is_baseline and o.available <= now]
    return found[-1] if found else None


def newest_hotpatch(catalog: Iterable[Offer], baseline: str, now: datetime) -> Offer | None:
    """The newest cumulative hotpatch for ``baseline`` that may install by ``now``."""
    found = [
        o
        for o in catalog
        if o.kind == HOTPATCH
        and o.baseline == baseline
        and o.available <= now
        and "hotpatch" in o.artifacts
    ]
    return max(found, key=lambda o: o.sequence) if found else None


def latest_after(latest: Offer | None, running: Offer) -> bool:
    """Whether ``latest`` was published no earlier than the running baseline."""
    return latest is not None and latest.published >= running.published


def applicable(
    catalog: list[Offer],
    *,
    product: str,
    baseline: str | None,
    active_hotpatch: str | None,
    now: datetime,
) -> list[Offer]:
    """What the machine lacks: a newer cumulative hotpatch for its baseline, a newer baseline."""
    by_kb = {o.kb: o for o in catalog}
    wanted: list[Offer] = []
    if baseline is not None:
        hotpatch = newest_hotpatch(catalog, baseline, now)
        active = by_kb.get(active_hotpatch) if active_hotpatch else None
        if hotpatch is not None and (active is None or hotpatch.sequence > active.sequence):
            wanted.append(hotpatch)
    latest = newest_baseline(catalog, product, now)
    running = by_kb.get(baseline) if baseline else None
    newer = running is None or running.product != product or latest_after(latest, running)
    if latest is not None and latest.kb != baseline and newer:
        wanted.append(latest)
    return wanted
