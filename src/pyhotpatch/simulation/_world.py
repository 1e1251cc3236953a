"""A simulated fleet and release desk: machines, their placement, and a year of releases.

Everything is drawn from one seeded ``random.Random``, so a seed names one world. The
fleet mixes what the orchestrator must handle: regions with their geo-pairs, zonal
machines, availability sets with update domains, machines in neither, DevTest and
Production, machines in other time zones and with their own off-peak windows, hotpatch
turned off, an older stack scheduled for upgrade, manual patching, and machines that are
switched off for days. The releases follow the catalog's calendar: a planned baseline each
quarter, a hotpatch on Patch Tuesday of the other months, and one unplanned baseline that
takes the place of a hotpatch month.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyhotpatch.catalog._calendar import DEFAULT_BASELINE_MONTHS, patch_tuesday

#: regions in pairs (Azure's), so that any prefix holds geo-pairs, with a local time zone
REGIONS: tuple[tuple[str, str], ...] = (
    ("eastus", "America/New_York"),
    ("westus", "America/Los_Angeles"),
    ("northeurope", "Europe/Dublin"),
    ("westeurope", "Europe/Amsterdam"),
    ("eastus2", "America/New_York"),
    ("centralus", "America/Chicago"),
    ("japaneast", "Asia/Tokyo"),
    ("japanwest", "Asia/Tokyo"),
    ("southeastasia", "Asia/Singapore"),
    ("eastasia", "Asia/Hong_Kong"),
    ("uksouth", "Europe/London"),
    ("ukwest", "Europe/London"),
    ("australiaeast", "Australia/Sydney"),
    ("australiasoutheast", "Australia/Melbourne"),
    ("westus2", "America/Los_Angeles"),
    ("westcentralus", "America/Denver"),
    ("centralindia", "Asia/Kolkata"),
    ("southindia", "Asia/Kolkata"),
    ("canadacentral", "America/Toronto"),
    ("canadaeast", "America/Toronto"),
    ("francecentral", "Europe/Paris"),
    ("francesouth", "Europe/Paris"),
    ("germanywestcentral", "Europe/Berlin"),
    ("germanynorth", "Europe/Berlin"),
    ("koreacentral", "Asia/Seoul"),
    ("koreasouth", "Asia/Seoul"),
    ("southcentralus", "America/Chicago"),
    ("northcentralus", "America/Chicago"),
)
PRODUCT = "pyhotpatch-demo"
LEGACY = "pyhotpatch-demo-legacy"
_OTHER_ZONES = ("Pacific/Auckland", "Asia/Kolkata", "America/Sao_Paulo", "Australia/Lord_Howe")
_OWN_WINDOWS = ("01:00-05:00", "20:00-23:30", "00:00-06:00", "23:00-04:00")


@dataclass(frozen=True)
class SimMachine:
    """One simulated machine's placement and settings."""

    id: str
    subscription: str
    region: str
    zone: str | None
    availability_set: str | None
    update_domain: int | None
    time_zone: str
    window: str | None
    environment: str
    hotpatch: bool
    product: str
    patch_mode: str
    assessment_mode: str
    upgrade: bool
    #: (start, end) periods during which the machine is switched off
    off: tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class SimRelease:
    """One release of the simulated calendar."""

    kb: str
    product: str
    kind: str
    baseline: str
    sequence: int
    published: datetime
    bad: bool = False

    @property
    def is_baseline(self) -> bool:
        """Whether it is a baseline (its own baseline)."""
        return self.kind != "hotpatch"


def regions(count: int) -> list[tuple[str, str]]:
    """The first ``count`` simulated regions with their time zones; ValueError past the list."""
    if not 1 <= count <= len(REGIONS):
        raise ValueError(f"--regions must be between 1 and {len(REGIONS)}")
    return list(REGIONS[:count])


def fleet(
    machines: int, region_count: int, seed: int, start: datetime, days: int
) -> list[SimMachine]:
    """A seeded fleet of ``machines`` over the first ``region_count`` regions."""
    rng = random.Random(seed)
    places = regions(region_count)
    weights = [rng.uniform(1, 5) for _ in places]
    subscriptions = [f"{rng.getrandbits(128):032x}" for _ in range(max(1, machines // 40))]
    subscriptions = [f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}" for s in subscriptions]
    sets: dict[tuple[str, str], list[tuple[str, int, int]]] = {}  # (region, sub) -> open sets
    found: list[SimMachine] = []
    end = start + timedelta(days=days)
    for index in range(machines):
        region, tz = rng.choices(places, weights)[0]
        sub = rng.choice(subscriptions)
        group = f"rg-{region}"
        vm = f"/subscriptions/{sub}/resourcegroups/{group}/providers/microsoft.compute/virtualmachines/vm{index:07d}"
        roll = rng.random()
        zone: str | None = None
        availability: str | None = None
        domain: int | None = None
        if roll < 0.55:
            zone = str(rng.randint(1, 3))
        elif roll < 0.80:
            open_sets = sets.setdefault((region, sub), [])
            if not open_sets or open_sets[-1][1] >= open_sets[-1][2]:
                name = f"/subscriptions/{sub}/resourcegroups/{group}/providers/microsoft.compute/availabilitysets/as{len(found):07d}"
                open_sets.append((name, 0, rng.randint(2, 30)))
            name, members, size = open_sets[-1]
            open_sets[-1] = (name, members + 1, size)
            availability, domain = name, members % 5
        legacy = rng.random() < 0.03
        off: list[tuple[datetime, datetime]] = []
        if rng.random() < 0.03:
            for _ in range(rng.randint(1, 3)):
                begin = start + timedelta(days=rng.uniform(0, max(days - 1, 1)))
                off.append((begin, min(begin + timedelta(days=rng.uniform(0.5, 4)), end)))
        found.append(
            SimMachine(
                id=vm,
                subscription=sub,
                region=region,
                zone=zone,
                availability_set=availability,
                update_domain=domain,
                time_zone=tz if rng.random() < 0.9 else rng.choice(_OTHER_ZONES),
                window=rng.choice(_OWN_WINDOWS) if rng.random() < 0.1 else None,
                environment="DevTest" if rng.random() < 0.15 else "Production",
                hotpatch=not legacy and rng.random() < 0.93,
                product=LEGACY if legacy else PRODUCT,
                patch_mode="AutomaticByPlatform" if rng.random() < 0.98 else "Manual",
                assessment_mode="AutomaticByPlatform" if rng.random() < 0.5 else "ImageDefault",
                upgrade=legacy and rng.random() < 0.5,
                off=tuple(sorted(off)),
            )
        )
    return found


def releases(start: datetime, days: int, seed: int, bad: tuple[str, ...]) -> list[SimRelease]:
    """The calendar of releases from three months before ``start`` to ``days`` after it.

    The releases before ``start`` are what the fleet already runs. ``bad`` KB ids are
    published as extra hotpatches a day into the simulation, one day apart. Each release
    names the baseline it was published on and its place in that baseline's line, as the
    catalog numbers them: in publish order.
    """
    rng = random.Random(seed + 1)
    end = start + timedelta(days=days)
    months: list[tuple[int, int]] = []
    y, m = (start.year, start.month - 3) if start.month > 3 else (start.year - 1, start.month + 9)
    while (y, m) <= (end.year, end.month):
        months.append((y, m))
        y, m = (y, m + 1) if m < 12 else (y + 1, 1)
    future = [
        ym
        for ym in months
        if ym[1] not in DEFAULT_BASELINE_MONTHS and ym >= (start.year, start.month)
    ]
    unplanned = rng.choice(future) if len(future) > 2 else None
    drafts: list[tuple[datetime, str, str, str, bool]] = []  # when, kb, product, kind, bad
    number = 5060000
    for y, m in months:
        day = patch_tuesday(y, m)
        when = datetime(day.year, day.month, day.day, 18, 0, tzinfo=timezone.utc)
        if when > end:
            break
        kind = "planned-baseline" if m in DEFAULT_BASELINE_MONTHS else "hotpatch"
        if (y, m) == unplanned:
            kind = "unplanned-baseline"
        if not drafts:
            kind = "planned-baseline"  # the fleet's starting point is a baseline
        number += 10
        drafts.append((when, f"KB{number}", PRODUCT, kind, False))
        # the older stack takes a restart-based cumulative update every month
        drafts.append((when, f"KB{number + 5}", LEGACY, "planned-baseline", False))
    moment = start + timedelta(days=1)
    for kb in bad:
        drafts.append((moment, kb, PRODUCT, "hotpatch", True))
        moment += timedelta(days=1)
    found: list[SimRelease] = []
    line: dict[str, tuple[str, int]] = {}
    for when, kb, product, drafted, is_bad in sorted(drafts):
        kind = drafted
        if drafted == "hotpatch" and product in line:
            baseline, sequence = line[product][0], line[product][1] + 1
        else:
            baseline, sequence = kb, 0
            kind = drafted if drafted != "hotpatch" else "planned-baseline"
        line[product] = (baseline, sequence)
        found.append(SimRelease(kb, product, kind, baseline, sequence, when, bad=is_bad))
    return found
