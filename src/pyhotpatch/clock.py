"""The one source of time for the control plane, so that it can run on simulated days.

Everything that reads the time (publishing, metadata expiry, schedules) takes a
``Clock``: a callable returning an aware UTC ``datetime``. Production passes
``system_clock``; tests and simulations pass a ``ManualClock`` and move it.
"""

from __future__ import annotations

import os
import threading
import time
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


class ScaledClock:
    """A clock that runs ``speed`` times faster than the wall clock since ``origin``.

    The demo runs its control plane and its agents on one so that off-peak windows, bake
    and soak times pass in minutes. Time is anchored on the wall clock (``origin``, Unix
    seconds), so separate processes given the same speed and origin agree on the time; and
    it never runs behind the wall clock, so metadata signed by it stays valid for clients
    that check against real time.
    """

    def __init__(self, speed: float, origin: float | None = None) -> None:
        if speed < 1:
            raise ValueError("ScaledClock runs at least as fast as the wall clock")
        self.speed = speed
        self.origin = time.time() if origin is None else origin

    def __call__(self) -> datetime:
        """The scaled time."""
        elapsed = time.time() - self.origin
        return datetime.fromtimestamp(self.origin + elapsed * self.speed, timezone.utc)

    def environment(self) -> dict[str, str]:
        """The variables that put another process on this clock (``from_environment``)."""
        return {SPEED_VARIABLE: repr(self.speed), ORIGIN_VARIABLE: repr(self.origin)}


SPEED_VARIABLE, ORIGIN_VARIABLE = "PYHOTPATCH_CLOCK_SPEED", "PYHOTPATCH_CLOCK_ORIGIN"


def from_environment() -> Clock:
    """The wall clock, or the ``ScaledClock`` that ``PYHOTPATCH_CLOCK_SPEED`` and ``_ORIGIN`` name.

    Meant for demonstrations and rehearsals only: a fleet on accelerated time patches in
    minutes what takes days on the wall clock.
    """
    speed = os.environ.get(SPEED_VARIABLE)
    if not speed:
        return system_clock
    try:
        return ScaledClock(float(speed), float(os.environ.get(ORIGIN_VARIABLE) or time.time()))
    except ValueError as exc:
        raise ValueError(f"{SPEED_VARIABLE}/{ORIGIN_VARIABLE}: {exc}") from None
