"""Region pairs and rollout phases: a release reaches regions a few at a time, pairs apart.

Azure staggers its own updates so that the two regions of a geo-pair, each the other's
disaster-recovery site, are never updated at the same time; rollouts here keep the same
rule. :data:`AZURE_PAIRS` lists Azure's region pairs among the regions this control plane
knows, as published in "Azure region pairs and nonpaired regions"
(https://learn.microsoft.com/azure/reliability/cross-region-replication-azure); the US
Government and DoD pairs are those the same page listed before it narrowed to the public
cloud. Regions Azure lists without a pair (Italy North, Poland Central, ...) have none; a
pair whose other region is unknown here (Sweden Central with Sweden South) is left out.

Invariants kept by :func:`plan_phases`: every region with machines appears in exactly one
phase, no phase holds two partners, no phase is empty, and the same input always gives the
same phases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Azure's published cross-region pairs for the regions below, as unordered pairs.
AZURE_PAIRS: tuple[tuple[str, str], ...] = (
    ("eastus", "westus"),
    ("eastus2", "centralus"),
    ("northcentralus", "southcentralus"),
    ("westus2", "westcentralus"),
    ("westus3", "eastus"),
    ("canadacentral", "canadaeast"),
    ("brazilsouth", "southcentralus"),
    ("brazilsoutheast", "brazilsouth"),
    ("northeurope", "westeurope"),
    ("uksouth", "ukwest"),
    ("francecentral", "francesouth"),
    ("germanywestcentral", "germanynorth"),
    ("norwayeast", "norwaywest"),
    ("switzerlandnorth", "switzerlandwest"),
    ("uaenorth", "uaecentral"),
    ("southafricanorth", "southafricawest"),
    ("eastasia", "southeastasia"),
    ("japaneast", "japanwest"),
    ("koreacentral", "koreasouth"),
    ("centralindia", "southindia"),
    ("westindia", "southindia"),
    ("australiaeast", "australiasoutheast"),
    ("australiacentral", "australiacentral2"),
    ("usgovvirginia", "usgovtexas"),
    ("usgovarizona", "usgovtexas"),
    ("usdodeast", "usdodcentral"),
)

_NAME = re.compile(r"[a-z0-9]+")


def paired(pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """Each region -> the regions it may never share a phase with (symmetric).

    A region may have several partners: Azure pairs westus3 with eastus besides eastus with
    westus.
    """
    partners: dict[str, set[str]] = {}
    for first, second in pairs:
        if first == second:
            raise ValueError(f"region {first!r} cannot be paired with itself")
        partners.setdefault(first, set()).add(second)
        partners.setdefault(second, set()).add(first)
    return {region: frozenset(others) for region, others in partners.items()}


def parse_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """The pairs configured as ``"eastus:westus,northeurope:westeurope"``.

    ARM names, case-insensitive; spaces and empty items are ignored, so ``""`` means no pairs.
    """
    pairs: list[tuple[str, str]] = []
    for item in "".join(text.split()).lower().split(","):
        if not item:
            continue
        names = item.split(":")
        if len(names) != 2 or not all(_NAME.fullmatch(name) for name in names):
            raise ValueError(
                f"region pair {item!r} in {text!r} is not two ARM region names such as "
                "eastus:westus"
            )
        if names[0] == names[1]:
            raise ValueError(f"region pair {item!r} pairs a region with itself")
        pairs.append((names[0], names[1]))
    return tuple(pairs)


def plan_phases(
    counts: Mapping[str, int], partners: Mapping[str, frozenset[str]]
) -> list[list[str]]:
    """A rollout's regions (ARM name -> target machines) in phases, canary first.

    Like Azure's safe deployment (canary, pilot, broad), the smallest regions go first and
    phases double in size (1, 2, 4, ...), so a bad release meets few machines before it is
    stopped; partners never share a phase, so one region of each pair is always untouched.
    Regions without machines are left out.
    """
    phases: list[list[str]] = []
    first_with_room = 0
    for _, region in sorted((count, name) for name, count in counts.items() if count > 0):
        avoid = partners.get(region, frozenset())
        for index in range(first_with_room, len(phases)):
            phase = phases[index]
            if len(phase) < 2**index and avoid.isdisjoint(phase):
                phase.append(region)
                break
        else:
            phases.append([region])
        while first_with_room < len(phases) and len(phases[first_with_room]) >= 2**first_with_room:
            first_with_room += 1
    return phases
