"""The one source of time for the control plane, so that it can run on simulated days.

Everything that reads the time (publishing, metadata expiry, schedules) takes a
``Clock``: a callable returning an aware UTC ``datetime``. Production passes
``system_clock``; tests and simulations pass a ``ManualClock`` and move it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall-clock time, in UTC."""
    return datetime.now(timezone.utc)


class ManualClock:
    """A clock that stands still until it is set or advanced; safe to share between threads."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        """The time the clock was last set to."""
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware)."""
        if moment.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        with self._lock:
            self._now = moment.astimezone(timezone.utc)

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        with self._lock:
            self._now += delta
            return self._now
