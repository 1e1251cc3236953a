"""The catalog's release calendar: which month of a year is a baseline and which a hotpatch.

The rhythm follows Azure's Hotpatch: a planned baseline (cumulative, needs a restart)
ships every three months, by default in January, April, July and October; the months
between get a hotpatch (no restart) on Patch Tuesday, the second Tuesday of the month.
An unplanned baseline takes the place of a hotpatch month when a Critical or Security
fix cannot be hotpatched, and non-security updates wait for a baseline month.

This module holds that plan as pure values, so the API, the CLI and the SVG picture
(``_svg``) all show the same calendar, and the rules can hold updates back until the
next baseline.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyhotpatch.catalog._model import Kind, Release, utc
from pyhotpatch.errors import CatalogError

#: Azure's planned baseline months: one per quarter, starting the quarter
DEFAULT_BASELINE_MONTHS: tuple[int, ...] = (1, 4, 7, 10)

#: the month kinds a calendar entry can have
PLANNED_BASELINE = Kind.PLANNED_BASELINE.value
UNPLANNED_BASELINE = Kind.UNPLANNED_BASELINE.value
HOTPATCH = Kind.HOTPATCH.value

_TUESDAY = 1  # datetime.date.weekday() of a Tuesday

#: the Release.to_json() fields a calendar entry lists for each release, in order
_SUMMARY_FIELDS = (
    "kbId",
    "product",
    "kind",
    "name",
    "classifications",
    "severity",
    "publishedDate",
    "availableDate",
    "baseline",
    "sequence",
    "replaces",
)


def check_baseline_months(months: Iterable[int]) -> tuple[int, ...]:
    """The baseline months sorted and without repeats, or a ``CatalogError``.

    Every month must be an ``int`` from 1 to 12 (``True`` and ``False`` are not
    months) and there must be at least one, or no baseline would ever ship.
    """
    found: set[int] = set()
    for month in months:
        if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
            raise CatalogError(
                f"{month!r} is not a baseline month: expected a whole number from 1 to 12"
            )
        found.add(month)
    if not found:
        raise CatalogError("baseline months must name at least one month from 1 to 12")
    return tuple(sorted(found))


def patch_tuesday(year: int, month: int) -> datetime.date:
    """The second Tuesday of ``month``: the day hotpatches and planned baselines ship."""
    first = datetime.date(year, month, 1)
    to_tuesday = (_TUESDAY - first.weekday()) % 7
    return first + datetime.timedelta(days=to_tuesday + 7)


def _release_month(release: Release) -> tuple[int, int]:
    """The UTC ``(year, month)`` a release belongs to: when it may install."""
    moment = utc(release.available or release.published)
    return moment.year, moment.month


def _month_kind(month: int, releases: Iterable[Release], baseline_months: tuple[int, ...]) -> str:
    """The kind of ``month`` given the releases already known to belong to it."""
    if month in baseline_months:
        return PLANNED_BASELINE
    if any(release.kind is Kind.UNPLANNED_BASELINE for release in releases):
        return UNPLANNED_BASELINE
    return HOTPATCH


def month_kind(
    year: int,
    month: int,
    releases: Iterable[Release],
    baseline_months: Iterable[int] = DEFAULT_BASELINE_MONTHS,
) -> str:
    """What ``month`` of ``year`` is in the plan, after the releases that actually shipped.

    A baseline month is a planned baseline; any other month is a hotpatch month
    unless an unplanned baseline shipped in it, which then replaced the hotpatch.
    Releases of other months are ignored, so a whole catalog may be passed.
    """
    months = check_baseline_months(baseline_months)
    own = [release for release in releases if _release_month(release) == (year, month)]
    return _month_kind(month, own, months)


@dataclass(frozen=True)
class MonthEntry:
    """One month of a release calendar: its plan, its Patch Tuesday and what shipped."""

    month: int
    date: datetime.date
    kind: str
    releases: tuple[Release, ...]

    def to_json(self) -> dict[str, Any]:
        """The API's representation: the month's plan and a summary of each release."""
        return {
            "month": self.month,
            "date": self.date.isoformat(),
            "kind": self.kind,
            "releases": [_summary(release) for release in self.releases],
        }


def _summary(release: Release) -> dict[str, Any]:
    """The fields of a release a calendar shows, without its artifacts and notes."""
    full = release.to_json()
    return {key: full[key] for key in _SUMMARY_FIELDS}


def _order(release: Release) -> tuple[datetime.datetime, str]:
    return utc(release.published), release.kb


def calendar(
    year: int,
    releases: Iterable[Release],
    baseline_months: Iterable[int] = DEFAULT_BASELINE_MONTHS,
) -> list[MonthEntry]:
    """The twelve months of ``year``, each with its plan and the releases that shipped in it.

    A release counts in the UTC month it became available (its ``available`` time,
    or ``published`` when it was available at once), so an update held back for a
    baseline shows where machines actually get it. Releases of other years are left
    out, so the whole catalog may be passed.
    """
    months = check_baseline_months(baseline_months)
    by_month: dict[int, list[Release]] = {month: [] for month in range(1, 13)}
    for release in releases:
        release_year, release_month = _release_month(release)
        if release_year == year:
            by_month[release_month].append(release)
    entries = []
    for month in range(1, 13):
        own = tuple(sorted(by_month[month], key=_order))
        entries.append(
            MonthEntry(
                month=month,
                date=patch_tuesday(year, month),
                kind=_month_kind(month, own, months),
                releases=own,
            )
        )
    return entries


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)


def next_baseline_release(
    moment: datetime.datetime,
    baseline_months: Iterable[int] = DEFAULT_BASELINE_MONTHS,
) -> datetime.datetime:
    """When an update published at ``moment`` may install if it must wait for a baseline.

    That is the start (00:00 UTC) of the first baseline month's Patch Tuesday at or
    after ``moment``, or ``moment`` itself when it already falls on such a day, so
    the answer is never earlier than ``moment``. Naive datetimes are taken as UTC.
    """
    months = check_baseline_months(baseline_months)
    moment = utc(moment)
    year, month = moment.year, moment.month
    # a baseline month comes around within a year, so 13 months always reach one
    for _ in range(13):
        if month in months:
            day = patch_tuesday(year, month)
            start = _midnight(day)
            if moment <= start:
                return start
            if moment.date() == day:
                return moment
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        if year > datetime.MAXYEAR:
            break
    raise CatalogError(f"no baseline Patch Tuesday after {moment.isoformat()} in the date range")
