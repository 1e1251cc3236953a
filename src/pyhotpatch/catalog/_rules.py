"""The publishing rules, one small named function each.

A rule looks at what is being published and what the catalog already holds (a
``Proposal``) and returns the sentences that say why it cannot be published, or
nothing. ``refusals`` runs the rules that apply to the release's kind; publishing
goes ahead only when all of them are silent, so every reason is reported at once.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pyhotpatch.catalog._lock import Pin, normal_version, wheel_pin
from pyhotpatch.catalog._model import ARTIFACT_ROLES, Kind, Product, Release, iso
from pyhotpatch.package import Manifest

#: how far ahead of the clock a publish date may be, to allow for clock skew
CLOCK_SKEW = timedelta(minutes=5)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


@dataclass(frozen=True)
class Proposal:
    """A release about to be published, with everything the rules need to judge it.

    ``pins`` is the lock of a baseline being published; ``manifest`` the package of
    a hotpatch; ``baseline`` and ``baseline_pins`` the product's current baseline;
    ``previous`` the hotpatch it would replace, with ``previous_manifest``;
    ``older_baselines`` earlier baselines and their locks, newest first, to name
    the one a stale hotpatch was built for.
    """

    release: Release
    product: Product
    now: datetime
    baseline_months: tuple[int, ...]
    pins: dict[str, Pin] | None = None
    manifest: Manifest | None = None
    baseline: Release | None = None
    baseline_pins: dict[str, Pin] = field(default_factory=dict)
    previous: Release | None = None
    previous_manifest: Manifest | None = None
    older_baselines: tuple[tuple[Release, dict[str, Pin]], ...] = ()


Rule = Callable[[Proposal], Iterator[str]]


def not_in_the_future(p: Proposal) -> Iterator[str]:
    """A release cannot be published later than now."""
    if p.release.published > p.now + CLOCK_SKEW:
        yield f"{p.release.kb} is dated {iso(p.release.published)}, which is in the future"


def after_current_baseline(p: Proposal) -> Iterator[str]:
    """Nothing is dated before the baseline it is published on (history is not rewritten)."""
    if p.baseline is not None and p.release.published < p.baseline.published:
        yield (
            f"{p.release.kb} is dated {iso(p.release.published)}, before the current baseline "
            f"{p.baseline.kb} ({iso(p.baseline.published)})"
        )


def artifacts_are_well_formed(p: Proposal) -> Iterator[str]:
    """Artifact names are plain file names, unique, with a known role."""
    seen: set[str] = set()
    for artifact in p.release.artifacts:
        if not _NAME.match(artifact.name):
            yield f"artifact name {artifact.name!r} is not a plain file name"
        if artifact.name in seen:
            yield f"artifact {artifact.name} is listed twice"
        seen.add(artifact.name)
        if artifact.role not in ARTIFACT_ROLES:
            yield f"artifact {artifact.name} has unknown role {artifact.role!r} (expected one of {', '.join(ARTIFACT_ROLES)})"


def hotpatch_product(p: Proposal) -> Iterator[str]:
    """Only a hotpatch-capable product takes hotpatches."""
    if not p.product.hotpatch:
        upgrade = f"; upgrade machines to {p.product.upgrade_to}" if p.product.upgrade_to else ""
        yield f"product {p.product.name} is not hotpatch-capable: ship a baseline instead{upgrade}"


def security_only(p: Proposal) -> Iterator[str]:
    """Hotpatch months carry only Critical and Security fixes; the rest waits for a baseline."""
    if not p.release.is_security:
        yield (
            f"{p.release.kb} is classified {', '.join(p.release.classifications)}: only Critical and "
            "Security fixes ship as hotpatches; publish it as an other-update, which waits for the next baseline month"
        )


def one_package(p: Proposal) -> Iterator[str]:
    """A hotpatch ships exactly one ``.hotpatch`` package, whose id is the release's KB."""
    packages = [a for a in p.release.artifacts if a.role == "hotpatch"]
    if len(packages) != 1:
        yield f"a hotpatch release carries exactly one artifact of role 'hotpatch', not {len(packages)}"
    elif p.manifest is not None and p.manifest.id != p.release.kb:
        yield f"the package's id is {p.manifest.id}, not {p.release.kb}: rebuild it with --id {p.release.kb}"


def has_baseline(p: Proposal) -> Iterator[str]:
    """A hotpatch needs a baseline to build on."""
    if p.baseline is None:
        yield f"product {p.product.name} has no baseline yet: publish a baseline first"


def targets_current_baseline(p: Proposal) -> Iterator[str]:
    """Every distribution the package patches is locked at its baseline version in the current baseline."""
    if p.manifest is None or p.baseline is None:
        return
    stale = _mismatches(p.manifest, p.baseline_pins)
    if not stale:
        if p.release.baseline not in (None, p.baseline.kb):
            yield (
                f"{p.release.kb} says it builds on {p.release.baseline}, but the current baseline of "
                f"{p.product.name} is {p.baseline.kb}"
            )
        return
    for older, pins in p.older_baselines:
        if not _mismatches(p.manifest, pins):
            yield (
                f"{p.release.kb} was built for baseline {older.kb}, which {older.superseded_by or p.baseline.kb} "
                f"superseded; rebuild it against the current baseline {p.baseline.kb}"
            )
            return
    yield from (
        f"{p.release.kb} does not build on the current baseline {p.baseline.kb}: {why}"
        for why in stale
    )


def cumulative(p: Proposal) -> Iterator[str]:
    """A hotpatch contains every fix published since its baseline: it replaces the previous one."""
    if p.manifest is None or p.previous is None or p.previous_manifest is None:
        return
    mine = {canonicalize_name(t.distribution): t for t in p.manifest.targets}
    for before in p.previous_manifest.targets:
        name = canonicalize_name(before.distribution)
        now = mine.get(name)
        if now is None:
            yield (
                f"{p.release.kb} is not cumulative: {p.previous.kb} fixed {before.distribution} "
                f"{before.fixed_version} and this package does not patch {before.distribution}"
            )
            continue
        if _older(now.fixed_version, before.fixed_version):
            yield (
                f"{p.release.kb} is not cumulative: it brings {before.distribution} to {now.fixed_version}, "
                f"older than {before.fixed_version} from {p.previous.kb}"
            )
        missing = sorted({m.name for m in before.modules} - {m.name for m in now.modules})
        if missing:
            yield (
                f"{p.release.kb} is not cumulative: {p.previous.kb} patched {', '.join(missing)} "
                f"in {before.distribution} and this package does not"
            )


def planned_in_baseline_month(p: Proposal) -> Iterator[str]:
    """Planned baselines ship in the baseline months; a baseline at another time is unplanned."""
    months = p.baseline_months
    if p.release.published.month not in months:
        names = ", ".join(calendar.month_name[m] for m in months)
        yield (
            f"{p.release.kb} is a planned baseline dated in {calendar.month_name[p.release.published.month]}; "
            f"planned baselines ship in {names}: publish it as an unplanned baseline"
        )


def unplanned_is_a_fix(p: Proposal) -> Iterator[str]:
    """An unplanned baseline exists only to ship a Critical or Security fix early."""
    if not p.release.is_security:
        yield (
            f"{p.release.kb} is an unplanned baseline but is classified {', '.join(p.release.classifications)}: "
            "unplanned baselines ship Critical or Security fixes; the rest waits for the planned baseline"
        )


def whole_environment(p: Proposal) -> Iterator[str]:
    """A baseline is a lock file and a wheel for every pin in it, nothing more or less."""
    locks = [a for a in p.release.artifacts if a.role == "lock"]
    if len(locks) != 1:
        yield f"a baseline carries exactly one artifact of role 'lock', not {len(locks)}"
        return
    if p.pins is None:
        return
    wheels: dict[str, tuple[str, str]] = {}
    for artifact in p.release.artifacts:
        if artifact.role == "wheel":
            name, version = wheel_pin(artifact.name)
            pin = p.pins.get(name)
            if pin is None:
                yield f"wheel {artifact.name} is not in the lock file"
            elif normal_version(version) != pin.version:
                yield f"wheel {artifact.name} is version {version}, but the lock pins {name}=={pin.version}"
            elif pin.hashes and artifact.sha256 not in pin.hashes:
                yield f"wheel {artifact.name} has sha256 {artifact.sha256}, which the lock does not allow"
            wheels[name] = (artifact.name, version)
        elif artifact.role not in ("lock", "file"):
            yield f"a baseline cannot carry an artifact of role {artifact.role!r} ({artifact.name})"
    for name, pin in sorted(p.pins.items()):
        if name not in wheels:
            yield f"the lock pins {name}=={pin.version} but no wheel for it was published"


def security_is_not_held(p: Proposal) -> Iterator[str]:
    """Other updates wait for a baseline month, so a security fix cannot be one."""
    if p.release.is_security:
        yield (
            f"{p.release.kb} is classified {', '.join(p.release.classifications)}: a security fix ships as "
            "a hotpatch or an unplanned baseline, not as an other-update that waits for a baseline month"
        )


RULES: dict[Kind, tuple[Rule, ...]] = {
    Kind.HOTPATCH: (
        not_in_the_future,
        after_current_baseline,
        artifacts_are_well_formed,
        hotpatch_product,
        security_only,
        one_package,
        has_baseline,
        targets_current_baseline,
        cumulative,
    ),
    Kind.PLANNED_BASELINE: (
        not_in_the_future,
        after_current_baseline,
        artifacts_are_well_formed,
        planned_in_baseline_month,
        whole_environment,
    ),
    Kind.UNPLANNED_BASELINE: (
        not_in_the_future,
        after_current_baseline,
        artifacts_are_well_formed,
        unplanned_is_a_fix,
        whole_environment,
    ),
    Kind.OTHER_UPDATE: (not_in_the_future, artifacts_are_well_formed, security_is_not_held),
}


def refusals(p: Proposal) -> list[str]:
    """Every reason the proposal breaks a rule of its kind; empty when it may be published."""
    return [reason for rule in RULES[p.release.kind] for reason in rule(p)]


def _mismatches(manifest: Manifest, pins: dict[str, Pin]) -> list[str]:
    reasons = []
    for target in manifest.targets:
        pin = pins.get(canonicalize_name(target.distribution))
        if pin is None:
            reasons.append(f"it patches {target.distribution}, which the baseline does not lock")
        elif pin.version != normal_version(target.baseline_version):
            reasons.append(
                f"it patches {target.distribution} {target.baseline_version}, but the baseline locks "
                f"{target.distribution}=={pin.version}"
            )
    return reasons


def _older(version: str, than: str) -> bool:
    try:
        return Version(version) < Version(than)
    except InvalidVersion:
        return False
