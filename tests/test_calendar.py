"""The release calendar: Patch Tuesdays, the baseline rhythm, grouping, JSON and the SVG picture."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyhotpatch.catalog._calendar import (
    DEFAULT_BASELINE_MONTHS,
    MonthEntry,
    calendar,
    check_baseline_months,
    month_kind,
    next_baseline_release,
    patch_tuesday,
)
from pyhotpatch.catalog._model import Kind, Release
from pyhotpatch.catalog._svg import render_svg
from pyhotpatch.errors import CatalogError

UTC = timezone.utc
EST = timezone(timedelta(hours=-5))
SVG = "{http://www.w3.org/2000/svg}"

ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
SUMMARY_KEYS = [
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
]


def release(
    kb: str,
    published: datetime,
    kind: Kind = Kind.HOTPATCH,
    *,
    available: datetime | None = None,
    title: str = "Security update",
    replaces: str | None = None,
) -> Release:
    baseline = kind.is_baseline
    return Release(
        kb=kb,
        product="py312-web",
        kind=kind,
        title=title,
        classifications=("Security",) if kind is not Kind.OTHER_UPDATE else ("Updates",),
        published=published,
        baseline=kb if baseline else "KB5000001",
        sequence=0 if baseline else 1,
        reboot_behavior="AlwaysRequiresReboot" if baseline else "NeverReboots",
        severity="Critical",
        cves=("CVE-2026-12345",),
        available=available,
        replaces=replaces,
        notes=("why the catalog decided this",),
    )


def sample_year() -> list[Release]:
    """A 2026 catalog: baselines and hotpatches, an unplanned baseline in May, a held update."""
    return [
        release("KB5000001", datetime(2026, 1, 13, 18, tzinfo=UTC), Kind.PLANNED_BASELINE),
        release("KB5000002", datetime(2026, 2, 10, 18, tzinfo=UTC)),
        release("KB5000003", datetime(2026, 3, 10, 18, tzinfo=UTC)),
        release("KB5000004", datetime(2026, 4, 14, 18, tzinfo=UTC), Kind.PLANNED_BASELINE),
        release(
            "KB5000005",
            datetime(2026, 5, 12, 18, tzinfo=UTC),
            Kind.UNPLANNED_BASELINE,
            replaces="2026-05",
        ),
        release("KB5000006", datetime(2026, 6, 9, 18, tzinfo=UTC)),
        release(
            "KB5000007",
            datetime(2026, 6, 20, tzinfo=UTC),
            Kind.OTHER_UPDATE,
            available=datetime(2026, 7, 14, tzinfo=UTC),
        ),
        release("KB5000008", datetime(2026, 7, 14, 18, tzinfo=UTC), Kind.PLANNED_BASELINE),
        *(release(f"KB50001{i:02d}", datetime(2026, 7, 20 + i, tzinfo=UTC)) for i in range(4)),
    ]


# -- Patch Tuesday ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 1, date(2026, 1, 13)),
        (2026, 2, date(2026, 2, 10)),
        (2026, 3, date(2026, 3, 10)),
        (2024, 10, date(2024, 10, 8)),
        (2025, 11, date(2025, 11, 11)),
        (2027, 1, date(2027, 1, 12)),
    ],
)
def test_patch_tuesday_known_dates(year: int, month: int, expected: date) -> None:
    assert patch_tuesday(year, month) == expected


@given(st.integers(1, 9999), st.integers(1, 12))
def test_patch_tuesday_is_the_second_tuesday(year: int, month: int) -> None:
    day = patch_tuesday(year, month)
    assert (day.year, day.month) == (year, month)
    assert day.weekday() == 1
    assert 8 <= day.day <= 14


# -- baseline months --------------------------------------------------------------


def test_check_baseline_months_sorts_and_deduplicates() -> None:
    assert check_baseline_months([10, 1, 4, 1, 7, 10]) == (1, 4, 7, 10)
    assert check_baseline_months(iter([12])) == (12,)
    assert check_baseline_months(range(1, 13)) == tuple(range(1, 13))
    assert DEFAULT_BASELINE_MONTHS == (1, 4, 7, 10)


@pytest.mark.parametrize("bad", [[0], [13], [1, 13], [-1], [True], [False], ["1"], [1.0], [None]])
def test_check_baseline_months_rejects_non_months(bad: list[object]) -> None:
    with pytest.raises(CatalogError, match="not a baseline month"):
        check_baseline_months(bad)  # type: ignore[arg-type]


def test_check_baseline_months_rejects_empty() -> None:
    with pytest.raises(CatalogError, match="at least one month"):
        check_baseline_months([])
    with pytest.raises(CatalogError):
        calendar(2026, [], baseline_months=())


# -- the year's plan --------------------------------------------------------------


def test_default_months_give_four_baselines_and_eight_hotpatches() -> None:
    entries = calendar(2026, [])
    assert [e.month for e in entries] == list(range(1, 13))
    assert [e.date for e in entries] == [patch_tuesday(2026, m) for m in range(1, 13)]
    kinds = [e.kind for e in entries]
    assert kinds.count("planned-baseline") == 4
    assert kinds.count("hotpatch") == 8
    assert [e.month for e in entries if e.kind == "planned-baseline"] == [1, 4, 7, 10]
    assert all(e.releases == () for e in entries)


def test_custom_baseline_months() -> None:
    entries = calendar(2026, [], baseline_months=[11, 2, 8, 5, 5])
    assert [e.month for e in entries if e.kind == "planned-baseline"] == [2, 5, 8, 11]
    assert [e.kind for e in calendar(2026, [], baseline_months=[6])].count("hotpatch") == 11
    every = calendar(2026, [], baseline_months=range(1, 13))
    assert {e.kind for e in every} == {"planned-baseline"}


def test_unplanned_baseline_replaces_the_hotpatch_month() -> None:
    unplanned = release(
        "KB5000005",
        datetime(2026, 5, 12, 18, tzinfo=UTC),
        Kind.UNPLANNED_BASELINE,
        replaces="2026-05",
    )
    entries = calendar(2026, [unplanned])
    may = entries[4]
    assert may.kind == "unplanned-baseline"
    assert may.releases == (unplanned,)
    assert [e.kind for e in entries].count("hotpatch") == 7
    assert month_kind(2026, 5, [unplanned]) == "unplanned-baseline"
    assert month_kind(2026, 6, [unplanned]) == "hotpatch"
    assert month_kind(2025, 5, [unplanned]) == "hotpatch"


def test_unplanned_baseline_in_a_baseline_month_keeps_the_plan() -> None:
    unplanned = release(
        "KB5000005", datetime(2026, 4, 20, tzinfo=UTC), Kind.UNPLANNED_BASELINE, replaces="2026-04"
    )
    april = calendar(2026, [unplanned])[3]
    assert april.kind == "planned-baseline"
    assert april.releases == (unplanned,)
    assert month_kind(2026, 4, [unplanned]) == "planned-baseline"


def test_hotpatches_and_other_updates_do_not_change_a_month() -> None:
    releases = [
        release("KB5000002", datetime(2026, 2, 10, tzinfo=UTC)),
        release("KB5000009", datetime(2026, 3, 3, tzinfo=UTC), Kind.OTHER_UPDATE),
    ]
    entries = calendar(2026, releases)
    assert (entries[1].kind, entries[2].kind) == ("hotpatch", "hotpatch")
    assert [len(e.releases) for e in entries[1:3]] == [1, 1]


def test_release_belongs_to_its_utc_month() -> None:
    # 23:30 on 31 March at UTC-5 is 04:30 on 1 April in UTC
    late = release("KB5000010", datetime(2026, 3, 31, 23, 30, tzinfo=EST))
    entries = calendar(2026, [late])
    assert entries[2].releases == ()
    assert entries[3].releases == (late,)


def test_naive_datetimes_are_utc() -> None:
    naive = release("KB5000010", datetime(2026, 3, 31, 23, 30))
    assert calendar(2026, [naive])[2].releases == (naive,)


def test_available_decides_the_month_over_published() -> None:
    held = release(
        "KB5000011",
        datetime(2026, 2, 20, tzinfo=UTC),
        Kind.OTHER_UPDATE,
        available=datetime(2026, 4, 14, tzinfo=UTC),
    )
    entries = calendar(2026, [held])
    assert entries[1].releases == ()
    assert entries[3].releases == (held,)
    # available in the next year: not in this year's calendar at all
    later = release(
        "KB5000012",
        datetime(2026, 11, 20, tzinfo=UTC),
        Kind.OTHER_UPDATE,
        available=datetime(2027, 1, 12, tzinfo=UTC),
    )
    assert all(e.releases == () for e in calendar(2026, [later]))
    assert calendar(2027, [later])[0].releases == (later,)


def test_releases_of_other_years_are_ignored() -> None:
    releases = [
        release("KB5000020", datetime(2025, 12, 31, 23, 59, tzinfo=UTC)),
        release("KB5000021", datetime(2027, 1, 1, tzinfo=UTC)),
        # 20:00 on 31 December at UTC-5 is already 2027 in UTC
        release("KB5000022", datetime(2026, 12, 31, 20, tzinfo=EST)),
        release(
            "KB5000023",
            datetime(2025, 5, 12, tzinfo=UTC),
            Kind.UNPLANNED_BASELINE,
            replaces="2025-05",
        ),
    ]
    entries = calendar(2026, releases)
    assert all(e.releases == () for e in entries)
    assert entries[4].kind == "hotpatch"
    assert [r.kb for r in calendar(2027, releases)[0].releases] == ["KB5000021", "KB5000022"]


def test_releases_are_ordered_by_published_then_kb() -> None:
    when = datetime(2026, 2, 10, 18, tzinfo=UTC)
    b = release("KB5000032", when)
    a = release("KB5000031", when)
    first = release("KB5000039", when - timedelta(days=1))
    # published before both, but in another zone: order is by the instant, not the wall time
    zoned = release("KB5000040", datetime(2026, 2, 10, 12, tzinfo=EST))  # 17:00 UTC
    entries = calendar(2026, [b, a, zoned, first])
    assert [r.kb for r in entries[1].releases] == [
        "KB5000039",
        "KB5000040",
        "KB5000031",
        "KB5000032",
    ]


def test_calendar_accepts_any_iterable_once() -> None:
    entries = calendar(2026, iter(sample_year()), baseline_months=iter([1, 4, 7, 10]))
    assert sum(len(e.releases) for e in entries) == len(sample_year())


# -- JSON -------------------------------------------------------------------------


def test_month_entry_json_shape() -> None:
    entries = calendar(2026, sample_year())
    document = [e.to_json() for e in entries]
    assert json.loads(json.dumps(document)) == document
    for entry, data in zip(entries, document, strict=True):
        assert list(data) == ["month", "date", "kind", "releases"]
        assert data["month"] == entry.month
        assert data["date"] == entry.date.isoformat()
        assert len(data["releases"]) == len(entry.releases)
    assert document[0]["date"] == "2026-01-13"
    assert document[0]["kind"] == "planned-baseline"
    assert document[4]["kind"] == "unplanned-baseline"
    assert document[1]["kind"] == "hotpatch"
    may = document[4]["releases"][0]
    assert list(may) == SUMMARY_KEYS
    assert may == {
        "kbId": "KB5000005",
        "product": "py312-web",
        "kind": "unplanned-baseline",
        "name": "Security update",
        "classifications": ["Security"],
        "severity": "Critical",
        "publishedDate": "2026-05-12T18:00:00Z",
        "availableDate": "2026-05-12T18:00:00Z",
        "baseline": "KB5000005",
        "sequence": 0,
        "replaces": "2026-05",
    }
    held = document[6]["releases"][0]
    assert held["kbId"] == "KB5000007"
    assert (held["publishedDate"], held["availableDate"]) == (
        "2026-06-20T00:00:00Z",
        "2026-07-14T00:00:00Z",
    )
    assert "artifacts" not in held
    assert "notes" not in held


def test_month_entry_is_frozen() -> None:
    entry = calendar(2026, [])[0]
    assert isinstance(entry, MonthEntry)
    with pytest.raises(AttributeError):
        entry.kind = "hotpatch"  # type: ignore[misc]


# -- holding updates until a baseline ----------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 5, 9, tzinfo=UTC), datetime(2026, 1, 13, tzinfo=UTC)),
        (datetime(2026, 1, 13, tzinfo=UTC), datetime(2026, 1, 13, tzinfo=UTC)),
        (datetime(2026, 1, 14, tzinfo=UTC), datetime(2026, 4, 14, tzinfo=UTC)),
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 4, 14, tzinfo=UTC)),
        (datetime(2026, 3, 31, 23, 59, tzinfo=UTC), datetime(2026, 4, 14, tzinfo=UTC)),
        (datetime(2026, 10, 13, 0, 0, 1, tzinfo=UTC), datetime(2026, 10, 13, 0, 0, 1, tzinfo=UTC)),
        (datetime(2026, 11, 20, tzinfo=UTC), datetime(2027, 1, 12, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 12, tzinfo=UTC)),
    ],
)
def test_next_baseline_release(moment: datetime, expected: datetime) -> None:
    result = next_baseline_release(moment)
    assert result == expected
    assert result.tzinfo == UTC


def test_next_baseline_release_later_on_the_day_is_the_moment_itself() -> None:
    moment = datetime(2026, 4, 14, 18, 30, tzinfo=UTC)
    assert next_baseline_release(moment) == moment


def test_next_baseline_release_naive_and_zoned() -> None:
    assert next_baseline_release(datetime(2026, 2, 1)) == datetime(2026, 4, 14, tzinfo=UTC)
    # 22:00 on 12 January at UTC-5 is 03:00 on Patch Tuesday in UTC: already that day
    zoned = datetime(2026, 1, 12, 22, tzinfo=EST)
    result = next_baseline_release(zoned)
    assert result == zoned
    assert result.tzinfo == UTC
    assert result.hour == 3


def test_next_baseline_release_custom_months() -> None:
    assert next_baseline_release(datetime(2026, 1, 14, tzinfo=UTC), [6]) == datetime(
        2026, 6, 9, tzinfo=UTC
    )
    assert next_baseline_release(datetime(2026, 6, 10, tzinfo=UTC), [6]) == datetime(
        2027, 6, 8, tzinfo=UTC
    )
    assert next_baseline_release(datetime(2026, 2, 11, tzinfo=UTC), range(1, 13)) == datetime(
        2026, 3, 10, tzinfo=UTC
    )
    with pytest.raises(CatalogError):
        next_baseline_release(datetime(2026, 1, 1, tzinfo=UTC), [0])


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sets(st.integers(1, 12), min_size=1),
)
def test_next_baseline_release_is_the_first_baseline_tuesday(
    moment: datetime, months: set[int]
) -> None:
    aware = moment.replace(tzinfo=UTC)
    result = next_baseline_release(moment, months)
    assert result >= aware
    assert result.month in months
    assert result.date() == patch_tuesday(result.year, result.month)
    assert result == aware or result.time() == datetime.min.time()
    # no baseline Patch Tuesday (as a whole day) lies between the moment and the result
    year, month = aware.year, aware.month
    while (year, month) < (result.year, result.month):
        if month in months:
            assert patch_tuesday(year, month) < aware.date()
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


# -- the SVG picture --------------------------------------------------------------


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def cells(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "data-month" in g.attrib]


def all_text(element: ET.Element) -> str:
    return " ".join(t.strip() for t in element.itertext() if t.strip())


def test_svg_is_a_standalone_accessible_image() -> None:
    svg = render_svg(2026, calendar(2026, sample_year()))
    assert svg.startswith("<svg")
    root = parse(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert int(root.get("width", "0")) >= 900
    assert "sans-serif" in root.get("font-family", "")
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert title.text == "Hotpatch release calendar 2026"
    labelled = root.get("aria-labelledby", "").split()
    assert labelled == [title.get("id"), desc.get("id")]
    assert desc.text is not None
    assert "3 planned baselines" not in desc.text
    assert "4 planned baselines" in desc.text
    assert "7 hotpatch months" in desc.text
    assert "1 unplanned baseline (May)" in desc.text
    assert "Patch Tuesday dates in UTC" in all_text(root)
    for forbidden in ("<script", "href", "url(", "@import", "<image", "<foreignObject"):
        assert forbidden not in svg


def test_svg_has_twelve_month_cells_in_order() -> None:
    entries = calendar(2026, sample_year())
    root = parse(render_svg(2026, entries))
    found = cells(root)
    assert [g.get("data-month") for g in found] == [str(m) for m in range(1, 13)]
    assert [g.get("data-kind") for g in found] == [e.kind for e in entries]
    assert [g.get("data-releases") for g in found] == [str(len(e.releases)) for e in entries]
    words = {
        "planned-baseline": "Baseline \u00b7 restart",
        "hotpatch": "Hotpatch \u00b7 no restart",
        "unplanned-baseline": "Unplanned baseline \u00b7 restart",
    }
    for g, entry in zip(found, entries, strict=True):
        text = all_text(g)
        assert words[entry.kind] in text
        assert f"Tue {entry.date.day} {ABBR[entry.month - 1]}" in text
    assert "January" in all_text(found[0])
    assert "Tue 13 Jan" in all_text(found[0])
    assert "Replaced this month's hotpatch" in all_text(found[4])


def test_svg_lists_kb_ids_and_folds_the_rest() -> None:
    root = parse(render_svg(2026, calendar(2026, sample_year())))
    found = cells(root)
    for month, kb in [(1, "KB5000001"), (2, "KB5000002"), (5, "KB5000005"), (6, "KB5000006")]:
        assert kb in all_text(found[month - 1])
    # July: the held update, the baseline and four hotpatches; three shown, then "+3 more"
    july = all_text(found[6])
    assert "KB5000007" in july
    assert "KB5000008" in july
    assert "KB5000100" in july
    assert "KB5000103" not in [t.text for t in found[6].iter(f"{SVG}text")]
    assert "+3 more" in july


def test_svg_shows_unshipped_months_faintly() -> None:
    root = parse(render_svg(2026, calendar(2026, sample_year())))
    for g in cells(root):
        frame = g.find(f"{SVG}rect")
        assert frame is not None
        dashed = frame.get("stroke-dasharray") is not None
        assert dashed == (g.get("data-releases") == "0")
        if dashed:
            assert "nothing shipped yet" in all_text(g)


def test_svg_escapes_text() -> None:
    nasty = release(
        "KB5000050",
        datetime(2026, 2, 10, tzinfo=UTC),
        title='<script>alert("x")</script> & more \x00',
    )
    title = 'Ops <prod> & "staging" calendar'
    svg = render_svg(2026, calendar(2026, [nasty]), title=title)
    root = parse(svg)
    heading = root.find(f"{SVG}title")
    assert heading is not None
    assert heading.text == title
    assert title in all_text(root)
    assert "<script" not in svg
    assert "<prod>" not in svg
    assert '<script>alert("x")</script> & more' in all_text(root)


def test_svg_is_deterministic() -> None:
    first = render_svg(2026, calendar(2026, sample_year()))
    again = render_svg(2026, calendar(2026, list(reversed(sample_year()))))
    assert first == again
    assert render_svg(2026, calendar(2026, []), title="x") == render_svg(
        2026, calendar(2026, []), title="x"
    )


def test_svg_of_an_empty_year_and_custom_months() -> None:
    entries = calendar(2027, [], baseline_months=[3, 6, 9, 12])
    root = parse(render_svg(2027, entries))
    assert [g.get("data-kind") for g in cells(root)].count("planned-baseline") == 4
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text is not None
    assert "March, June, September, December" in desc.text
    assert "0 releases shipped" in desc.text


def test_svg_refuses_entries_that_are_not_one_year() -> None:
    entries = calendar(2026, [])
    with pytest.raises(CatalogError, match="each month"):
        render_svg(2026, entries[:11])
    with pytest.raises(CatalogError, match="each month"):
        render_svg(2026, [*entries, entries[0]])
    with pytest.raises(CatalogError, match="outside 2025"):
        render_svg(2025, entries)
    # months given out of order are drawn in calendar order
    root = parse(render_svg(2026, list(reversed(entries))))
    assert [g.get("data-month") for g in cells(root)] == [str(m) for m in range(1, 13)]
