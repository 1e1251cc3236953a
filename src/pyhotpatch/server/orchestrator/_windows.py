"""Off-peak maintenance windows: when, in a machine's own time zone, patches may install.

A :class:`Window` is a daily stretch of local wall-clock time ``[start, end)``; it crosses
midnight when ``end < start`` and lasts all day when ``end == start``. Each local day's
*occurrence* of a window opens at the first real instant the local clock reads ``start`` and
closes at the real instant it reads ``end`` (on the next day when the window crosses midnight).

Invariants, daylight saving included:

- away from a clock change a moment is in the window exactly when its local wall-clock time
  is in ``[start, end)`` (crossing midnight: ``>= start`` or ``< end``), so :func:`is_open`
  costs one conversion and a comparison on all but a few days a year;
- a wall time skipped by spring-forward stands for the first real instant after the gap: a
  window starting (or ending) in the gap opens (or closes) when the clocks jump;
- a wall time repeated by fall-back opens a window at its first occurrence. An ``end`` in the
  repeated stretch closes the window at its *second* occurrence when the window was already
  open as the stretch began (it never closes early, nor closes and reopens for the repeat),
  and at its first occurrence otherwise (a window lying inside the stretch runs once);
- hence an occurrence lasts its nominal length give or take the zone's clock change (one
  hour almost everywhere, 30 minutes on Lord Howe, two hours at Troll). Occurrences that
  touch or overlap (an all-day window, or a nearly all-day one on a fall-back day) make one
  longer open stretch;
- :func:`is_open`, :func:`next_opening` and :func:`closes_at` always agree with each other.

Moments in must be aware; instants out are aware UTC.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

_UTC = timezone.utc
_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)
_SAMPLE = timedelta(hours=6)
_FORMAT = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True)
class Window:
    """An off-peak window in local wall-clock time, e.g. 22:00-06:00 (crosses midnight).

    Machines keep their own window so that patches install when their users are away.
    """

    start: time
    end: time  # end < start: crosses midnight; end == start: open all day

    def __post_init__(self) -> None:
        for edge in (self.start, self.end):
            if edge.tzinfo is not None or edge.second or edge.microsecond:
                raise ValueError(f"window edges are naive whole minutes, not {edge!r}")

    @classmethod
    def parse(cls, text: str) -> Window:
        """The window written as ``HH:MM-HH:MM`` (``00:00-00:00`` is all day), as configured."""
        found = _FORMAT.fullmatch(text)
        if found is None:
            raise ValueError(f"maintenance window {text!r} is not of the form HH:MM-HH:MM")
        sh, sm, eh, em = (int(part) for part in found.groups())
        if sh > 23 or eh > 23 or sm > 59 or em > 59:
            raise ValueError(f"maintenance window {text!r} has a time outside 00:00-23:59")
        return cls(time(sh, sm), time(eh, em))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def all_day(self) -> bool:
        """Whether the window never closes, so that nothing waits for it."""
        return self.start == self.end

    def duration(self) -> timedelta:
        """The nominal length, ignoring clock changes: what an operator means by the window."""
        span = datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)
        return span if span > timedelta(0) else span + _DAY

    def _holds(self, wall: time) -> bool:
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end


#: the window machines get unless configured otherwise
DEFAULT_WINDOW = Window(time(22, 0), time(6, 0))


@functools.cache
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (e.g. ``Europe/London``), for machines that report one."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def is_open(window: Window, tz: zoneinfo.ZoneInfo, moment: datetime) -> bool:
    """Whether a machine in ``tz`` may install at ``moment`` under ``window``."""
    local = _aware(moment).astimezone(tz)
    if window.all_day:
        return True
    if _steady(tz, local.date()):
        return window._holds(local.time())
    return any(opens <= moment < closes for opens, closes in _around(window, tz, local.date()))


def closes_at(window: Window, tz: zoneinfo.ZoneInfo, moment: datetime) -> datetime | None:
    """When the window open at ``moment`` closes, so work can be fitted in; None if closed.

    An all-day window never closes: it reports the end of the current day's occurrence,
    which is when the next one opens.
    """
    if not is_open(window, tz, moment):
        return None
    spans = list(_around(window, tz, moment.astimezone(tz).date(), before=2, after=3))
    if window.all_day:
        return min(opens for opens, _ in spans if opens > moment)
    end = max(closes for opens, closes in spans if opens <= moment < closes)
    while later := [closes for opens, closes in spans if opens <= end < closes]:
        end = max(later)
    return end


def next_opening(window: Window, tz: zoneinfo.ZoneInfo, moment: datetime) -> datetime:
    """``moment`` when the window is open then, else the next instant it opens."""
    if is_open(window, tz, moment):
        return moment.astimezone(_UTC)
    spans = _around(window, tz, moment.astimezone(tz).date(), before=1, after=2)
    return min(opens for opens, _ in spans if opens > moment)


def _aware(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"moment {moment.isoformat()} has no time zone")
    return moment


@functools.lru_cache(maxsize=8192)
def _steady(tz: zoneinfo.ZoneInfo, day: date) -> bool:
    """Whether ``tz`` keeps one UTC offset from two days before ``day`` to three days after.

    Zones change offset months apart, so sampling every six hours sees every change.
    """
    first = datetime.combine(day - 2 * _DAY, time(), _UTC)
    offsets = {(first + k * _SAMPLE).astimezone(tz).utcoffset() for k in range(21)}
    return len(offsets) == 1


def _around(
    window: Window, tz: zoneinfo.ZoneInfo, day: date, before: int = 2, after: int = 1
) -> Iterator[tuple[datetime, datetime]]:
    """The non-empty occurrences ``(opens, closes)`` of the local days around ``day``."""
    for shift in range(-before, after + 1):
        opens, closes = _occurrence(window, tz, day + shift * _DAY)
        if opens < closes:
            yield opens, closes


def _occurrence(window: Window, tz: zoneinfo.ZoneInfo, day: date) -> tuple[datetime, datetime]:
    opens = _instants(tz, day, window.start)[0]
    end_day = day if window.start < window.end else day + _DAY
    first, last = _instants(tz, end_day, window.end)
    if first == last:
        return opens, first
    repeat = last - first
    repeat_began = _change(tz, first, last) - repeat
    return opens, last if opens <= repeat_began else first


def _instants(tz: zoneinfo.ZoneInfo, day: date, wall: time) -> tuple[datetime, datetime]:
    """The first and last real instants the local clock reads ``wall`` on ``day``.

    A wall time skipped by spring-forward maps, both times, to the first instant after the gap.
    """
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=tz).astimezone(_UTC)
    last = naive.replace(tzinfo=tz, fold=1).astimezone(_UTC)
    if first <= last:
        return first, last
    jump = _change(tz, last, first)  # in a gap, fold=0 resolves later than fold=1
    return jump, jump


def _change(tz: zoneinfo.ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in ``(before, after]`` at which ``tz`` takes the offset it has at ``after``."""
    offset = after.astimezone(tz).utcoffset()
    while after - before > _TICK:
        middle = before + (after - before) // 2
        if middle.astimezone(tz).utcoffset() == offset:
            after = middle
        else:
            before = middle
    return after
