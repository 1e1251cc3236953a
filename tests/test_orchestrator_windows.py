"""Off-peak windows: parsing, the open/closed edges, and daylight saving in many zones."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhotpatch.server.orchestrator._windows import (
    DEFAULT_WINDOW,
    Window,
    closes_at,
    is_open,
    next_opening,
    zone,
)

UTC = timezone.utc
NY = zone("America/New_York")
LONDON = zone("Europe/London")
LORD_HOWE = zone("Australia/Lord_Howe")
KOLKATA = zone("Asia/Kolkata")
CHATHAM = zone("Pacific/Chatham")
ZONES = sorted(zoneinfo.available_timezones())


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def w(text: str) -> Window:
    return Window.parse(text)


def span(window: Window, tz: zoneinfo.ZoneInfo, moment: datetime) -> tuple[datetime, datetime]:
    """The open stretch that starts at or after ``moment``."""
    opens = next_opening(window, tz, moment)
    closes = closes_at(window, tz, opens)
    assert closes is not None
    return opens, closes


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "hours"),
    [
        ("22:00-06:00", time(22), time(6), 8),
        ("01:30-04:00", time(1, 30), time(4), 2.5),
        ("00:00-00:00", time(0), time(0), 24),
        ("06:00-05:59", time(6), time(5, 59), 24 - 1 / 60),
        ("23:59-00:00", time(23, 59), time(0), 1 / 60),
    ],
)
def test_parse_str_round_trip(text: str, start: time, end: time, hours: float) -> None:
    window = Window.parse(text)
    assert (window.start, window.end) == (start, end)
    assert str(window) == text
    assert Window.parse(str(window)) == window
    assert window.duration() == timedelta(hours=hours)


def test_parse_is_lenient_about_spaces_and_short_hours() -> None:
    assert Window.parse(" 6:05 - 7:00 ") == Window(time(6, 5), time(7))
    assert str(Window.parse(" 6:05 - 7:00 ")) == "06:05-07:00"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "22:00",
        "22-06",
        "22:00-06:00-07:00",
        "24:00-06:00",
        "22:60-06:00",
        "22:00\u201306:00",
        "ab:cd-ef:gh",
        "22:0-06:00",
        "-22:00-06:00",
    ],
)
def test_parse_rejects_bad_text_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="maintenance window") as caught:
        Window.parse(text)
    assert repr(text) in str(caught.value)


def test_window_edges_are_whole_minutes() -> None:
    with pytest.raises(ValueError, match="whole minutes"):
        Window(time(22, 0, 30), time(6))
    with pytest.raises(ValueError, match="whole minutes"):
        Window(time(22), time(6, tzinfo=UTC))


def test_default_window_and_all_day() -> None:
    assert str(DEFAULT_WINDOW) == "22:00-06:00"
    assert DEFAULT_WINDOW.duration() == timedelta(hours=8)
    assert not DEFAULT_WINDOW.all_day
    assert w("03:00-03:00").all_day


def test_zone_is_cached_and_rejects_unknown_names() -> None:
    assert zone("Europe/London") is zone("Europe/London")
    for name in ("Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"):
        with pytest.raises(ValueError, match="unknown time zone"):
            zone(name)


def test_naive_moments_are_refused() -> None:
    naive = datetime(2026, 6, 1, 23)
    for call in (is_open, closes_at, next_opening):
        with pytest.raises(ValueError, match="no time zone"):
            call(DEFAULT_WINDOW, NY, naive)


# --- edges -----------------------------------------------------------------------------


def test_same_day_window_edges() -> None:
    window, tz = w("01:30-04:00"), zone("UTC")
    assert not is_open(window, tz, utc(2026, 6, 1, 1, 29, 59))
    assert is_open(window, tz, utc(2026, 6, 1, 1, 30))
    assert is_open(window, tz, utc(2026, 6, 1, 3, 59, 59))
    assert not is_open(window, tz, utc(2026, 6, 1, 4))
    assert next_opening(window, tz, utc(2026, 6, 1, 1)) == utc(2026, 6, 1, 1, 30)
    assert next_opening(window, tz, utc(2026, 6, 1, 4)) == utc(2026, 6, 2, 1, 30)
    assert closes_at(window, tz, utc(2026, 6, 1, 2)) == utc(2026, 6, 1, 4)
    assert closes_at(window, tz, utc(2026, 6, 1, 5)) is None


def test_window_crossing_midnight() -> None:
    tz = zone("UTC")
    assert is_open(DEFAULT_WINDOW, tz, utc(2026, 6, 1, 22))
    assert is_open(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 0))
    assert is_open(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 5, 59))
    assert not is_open(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 6))
    assert not is_open(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 21, 59))
    assert closes_at(DEFAULT_WINDOW, tz, utc(2026, 6, 1, 23)) == utc(2026, 6, 2, 6)
    assert closes_at(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 3)) == utc(2026, 6, 2, 6)
    assert next_opening(DEFAULT_WINDOW, tz, utc(2026, 6, 2, 12)) == utc(2026, 6, 2, 22)
    late = w("22:00-00:00")
    assert is_open(late, tz, utc(2026, 6, 1, 23, 59))
    assert closes_at(late, tz, utc(2026, 6, 1, 23)) == utc(2026, 6, 2)


def test_all_day_window_is_always_open() -> None:
    window = w("03:00-03:00")
    for moment in (utc(2026, 3, 8, 7), utc(2026, 11, 1, 6, 30), utc(2027, 1, 1)):
        assert is_open(window, NY, moment)
        assert next_opening(window, NY, moment) == moment
    # it reports the end of the day's occurrence: the next 03:00 local
    assert closes_at(window, NY, utc(2026, 6, 1, 12)) == utc(2026, 6, 2, 7)


def test_results_are_utc_whatever_zone_the_moment_has() -> None:
    moment = datetime(2026, 6, 1, 23, 30, tzinfo=NY)
    assert next_opening(DEFAULT_WINDOW, NY, moment).tzinfo is UTC
    closing = closes_at(DEFAULT_WINDOW, NY, moment)
    assert closing == utc(2026, 6, 2, 10)
    assert closing is not None and closing.tzinfo is UTC


# --- zones -----------------------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    # 2026-03-08: 02:00 EST (07:00 UTC) jumps to 03:00 EDT
    jump = utc(2026, 3, 8, 7)
    assert span(DEFAULT_WINDOW, NY, utc(2026, 3, 7, 12)) == (
        utc(2026, 3, 8, 3),
        utc(2026, 3, 8, 10),
    )
    # a start in the gap opens at the first real instant after it
    assert next_opening(w("02:30-06:00"), NY, utc(2026, 3, 8, 6)) == jump
    assert not is_open(w("02:30-06:00"), NY, jump - timedelta(seconds=1))
    # an end in the gap closes at the jump
    assert closes_at(w("22:00-02:30"), NY, utc(2026, 3, 8, 6, 30)) == jump
    assert not is_open(w("22:00-02:30"), NY, jump)
    # a window wholly in the gap does not open that day
    assert next_opening(w("02:10-02:40"), NY, utc(2026, 3, 8, 6)) == utc(2026, 3, 9, 6, 10)


def test_new_york_fall_back() -> None:
    # 2026-11-01: 02:00 EDT (06:00 UTC) goes back to 01:00 EST; 01:00-02:00 happens twice
    assert span(DEFAULT_WINDOW, NY, utc(2026, 10, 31, 12)) == (
        utc(2026, 11, 1, 2),
        utc(2026, 11, 1, 11),
    )
    # an end in the repeat closes at its second occurrence: the window never closes early
    late = w("22:00-01:30")
    assert is_open(late, NY, utc(2026, 11, 1, 5, 45))  # 01:45 EDT, wall clock past the end
    assert closes_at(late, NY, utc(2026, 11, 1, 3)) == utc(2026, 11, 1, 6, 30)
    assert not is_open(late, NY, utc(2026, 11, 1, 6, 30))
    # a start in the repeat opens at its first occurrence and stays open through it
    early = w("01:30-06:00")
    assert next_opening(early, NY, utc(2026, 11, 1, 5)) == utc(2026, 11, 1, 5, 30)
    assert is_open(early, NY, utc(2026, 11, 1, 6, 15))  # 01:15 EST, before the start again
    assert closes_at(early, NY, utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 11)
    # a window inside the repeat runs once
    inside = w("01:10-01:20")
    assert span(inside, NY, utc(2026, 11, 1, 4)) == (
        utc(2026, 11, 1, 5, 10),
        utc(2026, 11, 1, 5, 20),
    )
    assert not is_open(inside, NY, utc(2026, 11, 1, 6, 15))
    assert next_opening(inside, NY, utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 2, 6, 10)


def test_europe_london() -> None:
    assert span(DEFAULT_WINDOW, LONDON, utc(2026, 3, 28, 12)) == (
        utc(2026, 3, 28, 22),
        utc(2026, 3, 29, 5),
    )
    assert span(DEFAULT_WINDOW, LONDON, utc(2026, 10, 24, 12)) == (
        utc(2026, 10, 24, 21),
        utc(2026, 10, 25, 6),
    )
    # 2026-03-29 01:00 GMT jumps to 02:00 BST: 01:30 does not exist
    assert span(w("01:30-03:00"), LONDON, utc(2026, 3, 29)) == (
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 2),
    )
    assert span(DEFAULT_WINDOW, LONDON, utc(2026, 7, 1, 12)) == (
        utc(2026, 7, 1, 21),
        utc(2026, 7, 2, 5),
    )


def test_lord_howe_half_hour_shift() -> None:
    # 2026-04-05 02:00 (+11:00) goes back to 01:30 (+10:30)
    assert span(DEFAULT_WINDOW, LORD_HOWE, utc(2026, 4, 4)) == (
        utc(2026, 4, 4, 11),
        utc(2026, 4, 4, 19, 30),
    )
    # 01:45 is repeated; the window was open when the repeat began, so it runs to the second
    assert span(w("01:00-01:45"), LORD_HOWE, utc(2026, 4, 4, 12)) == (
        utc(2026, 4, 4, 14),
        utc(2026, 4, 4, 15, 15),
    )
    # 2026-10-04 02:00 (+10:30) jumps to 02:30 (+11:00)
    assert span(w("02:15-04:00"), LORD_HOWE, utc(2026, 10, 3, 12)) == (
        utc(2026, 10, 3, 15, 30),
        utc(2026, 10, 3, 17),
    )
    assert span(DEFAULT_WINDOW, LORD_HOWE, utc(2026, 10, 3)) == (
        utc(2026, 10, 3, 11, 30),
        utc(2026, 10, 3, 19),
    )


def test_asia_kolkata_half_hour_offset() -> None:
    assert span(DEFAULT_WINDOW, KOLKATA, utc(2026, 6, 1, 12)) == (
        utc(2026, 6, 1, 16, 30),
        utc(2026, 6, 2, 0, 30),
    )
    assert is_open(DEFAULT_WINDOW, KOLKATA, utc(2026, 6, 1, 16, 30))
    assert not is_open(DEFAULT_WINDOW, KOLKATA, utc(2026, 6, 1, 16, 29, 59))


def test_pacific_chatham_quarter_hour_offset() -> None:
    # +13:45 in January
    assert span(DEFAULT_WINDOW, CHATHAM, utc(2026, 1, 10)) == (
        utc(2026, 1, 10, 8, 15),
        utc(2026, 1, 10, 16, 15),
    )
    # 2026-04-05 03:45 (+13:45) goes back to 02:45 (+12:45): a night of nine hours
    assert span(DEFAULT_WINDOW, CHATHAM, utc(2026, 4, 4)) == (
        utc(2026, 4, 4, 8, 15),
        utc(2026, 4, 4, 17, 15),
    )
    # 2026-09-27 02:45 (+12:45) jumps to 03:45 (+13:45): a night of seven hours
    assert span(DEFAULT_WINDOW, CHATHAM, utc(2026, 9, 26)) == (
        utc(2026, 9, 26, 9, 15),
        utc(2026, 9, 26, 16, 15),
    )


# --- properties ------------------------------------------------------------------------

windows = st.builds(
    lambda sh, sm, eh, em: Window(time(sh, sm), time(eh, em)),
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45, 59]) | st.integers(0, 59),
    st.integers(0, 23),
    st.sampled_from([0, 15, 30, 45, 59]) | st.integers(0, 59),
)
moments = st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))


def offset_changes(tz: zoneinfo.ZoneInfo) -> list[datetime]:
    """Where ``tz`` changes offset in 2026-2027, to within an hour (tests only)."""
    days = [utc(2026, 1, 1) + timedelta(days=n) for n in range(731)]
    offsets = [day.astimezone(tz).utcoffset() for day in days]
    found = []
    for day, before, after in zip(days, offsets, offsets[1:], strict=False):
        if before != after:
            hour = next(
                day + timedelta(hours=h)
                for h in range(1, 25)
                if (day + timedelta(hours=h)).astimezone(tz).utcoffset() == after
            )
            found.append(hour)
    return found


CHANGES = {name: offset_changes(zone(name)) for name in ZONES}
SHIFTING = [name for name in ZONES if CHANGES[name]]


def check_consistent(window: Window, tz: zoneinfo.ZoneInfo, moment: datetime) -> None:
    opening = next_opening(window, tz, moment)
    assert opening >= moment
    # a day later at most, or two when the whole window falls in an hour the clock skips
    assert opening - moment <= timedelta(hours=49)
    assert is_open(window, tz, opening)
    if opening > moment:
        assert not is_open(window, tz, moment)
        assert closes_at(window, tz, moment) is None
        assert not is_open(window, tz, opening - timedelta(microseconds=1))
    else:
        closing = closes_at(window, tz, moment)
        assert closing is not None and closing > moment
        assert is_open(window, tz, closing - timedelta(seconds=1))
        assert not is_open(window, tz, closing) or window.all_day


def test_a_window_inside_a_skipped_hour_does_not_open_that_day() -> None:
    # Morocco moves its clocks from UTC+0 to UTC+1 at 02:00 on 22 March 2026: 02:00-02:15
    # local does not exist that day, so the window next opens on the 23rd (01:00 UTC)
    window = Window.parse("02:00-02:15")
    opening = next_opening(window, zone("Africa/Casablanca"), utc(2026, 3, 21, 2, 15))
    assert opening == utc(2026, 3, 23, 1, 0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES), windows, moments)
def test_property_any_zone(name: str, window: Window, moment: datetime) -> None:
    check_consistent(window, zone(name), moment)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SHIFTING), windows, st.data())
def test_property_near_clock_changes(name: str, window: Window, data: st.DataObject) -> None:
    change = data.draw(st.sampled_from(CHANGES[name]))
    moment = change + data.draw(st.timedeltas(timedelta(hours=-30), timedelta(hours=30)))
    check_consistent(window, zone(name), moment)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(SHIFTING), windows, st.data())
def test_property_open_stretches_agree_with_is_open(
    name: str, window: Window, data: st.DataObject
) -> None:
    """Walk two days across a clock change, checking every stretch minute by minute."""
    tz = zone(name)
    change = data.draw(st.sampled_from(CHANGES[name]))
    moment = change - timedelta(hours=data.draw(st.integers(1, 30)))
    limit = timedelta(hours=2 if name == "Antarctica/Troll" else 1)
    end = moment + timedelta(days=2)
    while moment < end:
        opening = next_opening(window, tz, moment)
        for step in range(int((opening - moment) / timedelta(minutes=7))):
            assert not is_open(window, tz, moment + step * timedelta(minutes=7))
        closing = closes_at(window, tz, opening)
        assert closing is not None
        for step in range(int((closing - opening) / timedelta(minutes=7))):
            assert is_open(window, tz, opening + step * timedelta(minutes=7))
        if window.all_day:
            return
        whole = opening > moment and window.duration() + limit < timedelta(days=1)
        if whole:  # a stretch of its own lasts its nominal length, give or take the change
            assert abs(closing - opening - window.duration()) <= limit
        moment = closing
