"""The fleet demo's pure parts: its clock, its choice of time zones, its release dates."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pyhotpatch.clock import (
    ORIGIN_VARIABLE,
    SPEED_VARIABLE,
    ScaledClock,
    from_environment,
    system_clock,
)
from pyhotpatch.demo.machines import ZONES, open_window_zone
from pyhotpatch.demo.releases import last_planned_baseline_day


def test_a_scaled_clock_runs_faster_and_processes_agree_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ScaledClock(60, origin=time.time() - 10)
    ahead = clock() - system_clock()
    assert timedelta(seconds=9 * 59) < ahead < timedelta(seconds=11 * 60)
    for key, value in clock.environment().items():
        monkeypatch.setenv(key, value)
    other = from_environment()
    assert isinstance(other, ScaledClock)
    assert abs((other() - clock()).total_seconds()) < 1
    monkeypatch.delenv(SPEED_VARIABLE)
    assert from_environment() is system_clock
    monkeypatch.setenv(SPEED_VARIABLE, "fast")
    with pytest.raises(ValueError, match=ORIGIN_VARIABLE):
        from_environment()
    with pytest.raises(ValueError):
        ScaledClock(0.5)


@pytest.mark.parametrize("hour", range(24))
def test_machines_are_placed_where_the_off_peak_window_has_hours_left(hour: int) -> None:
    now = datetime(2026, 3, 29, hour, 17, tzinfo=timezone.utc)  # a DST change in Europe
    taken: set[str] = set()
    for _ in range(6):
        zone = open_window_zone(now, taken)
        taken.add(zone)
        local = now.astimezone(ZoneInfo(zone))
        hours = local.hour + local.minute / 60
        assert hours >= 22 or hours < 6
        assert (30 - hours) % 24 >= 6, (zone, local)
    assert set(taken) <= set(ZONES)


def test_the_running_baseline_is_dated_in_the_last_baseline_month() -> None:
    assert last_planned_baseline_day(datetime(2026, 11, 26, tzinfo=timezone.utc)) == date(
        2026, 10, 13
    )
    assert last_planned_baseline_day(datetime(2026, 1, 5, tzinfo=timezone.utc)) == date(
        2025, 10, 14
    )
    assert last_planned_baseline_day(datetime(2026, 1, 13, 1, tzinfo=timezone.utc)) == date(
        2026, 1, 13
    )
