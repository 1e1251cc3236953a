"""The catalog's vocabulary: products, releases and their artifacts, as plain values.

These are the shapes every other part of the catalog (rules, calendar, storage,
signed distribution) and its callers (server, agent, CLI) exchange. They carry no
behaviour beyond validation and conversion to and from the JSON the API serves,
whose field names follow Azure's (``kbId``, ``rebootBehavior``, ``publishedDate``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pyhotpatch.errors import CatalogError
from pyhotpatch.package import CLASSIFICATIONS

KB_RE = re.compile(r"^KB[0-9]{4,10}$")
#: CVE, GHSA, PYSEC and other advisory ids
ADVISORY_RE = re.compile(r"^[A-Z][A-Z0-9]{1,15}-[A-Za-z0-9-]{1,60}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class Kind(str, Enum):
    """What a release is, which decides how it installs and where the calendar shows it."""

    PLANNED_BASELINE = "planned-baseline"
    UNPLANNED_BASELINE = "unplanned-baseline"
    HOTPATCH = "hotpatch"
    OTHER_UPDATE = "other-update"

    @property
    def is_baseline(self) -> bool:
        """Whether a release of this kind is a whole environment that needs a restart."""
        return self in (Kind.PLANNED_BASELINE, Kind.UNPLANNED_BASELINE)


#: the classifications that install automatically and may ship as a hotpatch
SECURITY_CLASSIFICATIONS = ("Critical", "Security")
#: MSRC severity ratings
SEVERITIES = ("Critical", "Important", "Moderate", "Low", "Unspecified")
#: Azure's ``rebootBehavior`` values
REBOOT_BEHAVIORS = ("NeverReboots", "AlwaysRequiresReboot", "CanRequestReboot")
#: what an artifact is to its release
ARTIFACT_ROLES = ("hotpatch", "wheel", "lock", "file")


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """The ISO 8601 form the API uses: UTC, seconds, a trailing ``Z``."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Image:
    """An ``imageReference`` without its version: what a machine was created from."""

    publisher: str
    offer: str
    sku: str

    def matches(self, publisher: str, offer: str, sku: str) -> bool:
        """Whether an ``imageReference`` names this image; Azure compares case-insensitively."""
        return (publisher.lower(), offer.lower(), sku.lower()) == (
            self.publisher.lower(),
            self.offer.lower(),
            self.sku.lower(),
        )

    def to_json(self) -> dict[str, str]:
        """The ``imageReference`` fields."""
        return {"publisher": self.publisher, "offer": self.offer, "sku": self.sku}


@dataclass(frozen=True)
class Product:
    """A Python service stack: its releases form one baseline and hotpatch line.

    ``images`` are the images that run it. A product with ``hotpatch`` false is an
    older stack: machines on it take restart-based updates until they are upgraded
    to ``upgrade_to``, a hotpatch-capable product.
    """

    name: str
    title: str
    images: tuple[Image, ...]
    hotpatch: bool = True
    upgrade_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's representation."""
        return {
            "name": self.name,
            "title": self.title,
            "hotpatch": self.hotpatch,
            "upgradeTo": self.upgrade_to,
            "images": [image.to_json() for image in self.images],
        }


@dataclass(frozen=True)
class Artifact:
    """One file of a release, stored once by content and signed as a TUF target."""

    name: str
    role: str
    sha256: str
    size: int

    def to_json(self) -> dict[str, Any]:
        """The API's representation."""
        return {"name": self.name, "role": self.role, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Release:
    """A published release: a baseline, a hotpatch or another update of one product.

    ``baseline`` is the KB id of the baseline a hotpatch builds on (a baseline names
    itself); ``sequence`` counts hotpatches within that baseline (0 for the baseline).
    ``replaces`` is the month (``YYYY-MM``) whose hotpatch an unplanned baseline took
    the place of; ``available`` is when it may install (later than ``published`` for
    updates that wait for a baseline month); ``notes`` says why the catalog decided
    what it did, such as the builder's refusals that made a fix a baseline. ``halted`` is
    when its automatic rollout was halted by the health gate, ``halt_reason`` why: a halted
    release installs on no more machines unless an operator asks for it.
    """

    kb: str
    product: str
    kind: Kind
    title: str
    classifications: tuple[str, ...]
    published: datetime
    baseline: str | None
    sequence: int
    reboot_behavior: str
    severity: str = "Unspecified"
    cves: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    available: datetime | None = None
    replaces: str | None = None
    superseded_by: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)
    halted: datetime | None = field(default=None, compare=False)
    halt_reason: str | None = field(default=None, compare=False)

    @property
    def is_security(self) -> bool:
        """Whether this release installs automatically (``Critical`` or ``Security``)."""
        return any(c in SECURITY_CLASSIFICATIONS for c in self.classifications)

    def to_json(self) -> dict[str, Any]:
        """The API's representation; field names follow Azure's patch properties."""
        return {
            "kbId": self.kb,
            "product": self.product,
            "kind": self.kind.value,
            "name": self.title,
            "classifications": list(self.classifications),
            "severity": self.severity,
            "cves": list(self.cves),
            "publishedDate": iso(self.published),
            "availableDate": iso(self.available or self.published),
            "baseline": self.baseline,
            "sequence": self.sequence,
            "rebootBehavior": self.reboot_behavior,
            "replaces": self.replaces,
            "supersededBy": self.superseded_by,
            "artifacts": [a.to_json() for a in self.artifacts],
            "notes": list(self.notes),
            "halted": (
                {"time": iso(self.halted), "reason": self.halt_reason or ""}
                if self.halted is not None
                else None
            ),
        }


def check_kb(kb: str) -> str:
    """``kb`` if it is a KB id (``KB`` and 4 to 10 digits), else a ``CatalogError``."""
    if not isinstance(kb, str) or not KB_RE.match(kb):
        raise CatalogError(f"{kb!r} is not a KB id: expected 'KB' followed by 4 to 10 digits")
    return kb


def check_advisories(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The advisory ids (``CVE-2024-1234``, ``GHSA-…``, ``PYSEC-…``), each well formed."""
    for value in values:
        if not isinstance(value, str) or not ADVISORY_RE.match(value):
            raise CatalogError(f"{value!r} is not an advisory id such as CVE-2024-12345")
    return tuple(values)


def check_classifications(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The classifications in Azure's order, each known, none twice, at least one."""
    unknown = [v for v in values if v not in CLASSIFICATIONS]
    if unknown:
        raise CatalogError(
            f"unknown classification {unknown[0]!r}: expected one of {', '.join(CLASSIFICATIONS)}"
        )
    if not values:
        raise CatalogError("a release needs at least one classification")
    return tuple(c for c in CLASSIFICATIONS if c in values)
