"""The figures, text and plots of ``hotpatch simulate``, checked on a small hand-made run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pyhotpatch.simulation._report import (
    Curve,
    RegionProgress,
    ReleaseFacts,
    ReleaseSummary,
    Summary,
    ZoneProgress,
    read_events,
    render_svg,
    render_text,
    summarize,
)

UTC = timezone.utc
SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 1, 13, tzinfo=UTC)
END = datetime(2026, 1, 23, tzinfo=UTC)

# machine -> (region, zone); m5 runs with hotpatch off, so its hotpatches install by restart
MACHINES = {
    "m1": ("eastus", "1"),
    "m2": ("eastus", "2"),
    "m3": ("eastus", None),
    "m4": ("westus", "1"),
    "m5": ("westus", "1"),
}
ALL = {("eastus", "1"): 1, ("eastus", "2"): 1, ("eastus", None): 1, ("westus", "1"): 2}

HOTPATCH = ReleaseFacts(
    "KB5000001", "hotpatch", ("Security",), datetime(2026, 1, 13, tzinfo=UTC), ALL
)
BASELINE = ReleaseFacts(
    "KB5000002", "planned-baseline", ("Security",), datetime(2026, 1, 16, tzinfo=UTC), ALL
)
HALTED = ReleaseFacts(
    "KB5000003",
    "hotpatch",
    ("Security", "Critical"),
    datetime(2026, 1, 20, tzinfo=UTC),
    {("eastus", "1"): 1, ("eastus", "2"): 1, ("eastus", None): 1},
    halted="health probe failed",
)


def ev(
    time: str, machine: str, release: str, kind: str, event: str, healthy: bool | None = True
) -> dict[str, Any]:
    region, zone = MACHINES[machine]
    return {
        "time": time,
        "machine": f"/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/{machine}",
        "subscription": "00000000-0000-0000-0000-000000000001",
        "environment": "Production",
        "region": region,
        "zone": zone,
        "availabilitySet": None,
        "updateDomain": None,
        "timeZone": "America/New_York",
        "release": release,
        "kind": kind,
        "trigger": "auto",
        "event": event,
        "healthy": healthy,
    }


def installed(time: str, machine: str, release: str, kind: str) -> list[dict[str, Any]]:
    """start, restart (when the kind restarts), end: all at ``time``."""
    events = [ev(time, machine, release, kind, "start", None)]
    if kind != "hotpatch":
        events.append(ev(time, machine, release, kind, "restart", None))
    return [*events, ev(time, machine, release, kind, "end")]


A, B, C = HOTPATCH.kb, BASELINE.kb, HALTED.kb
EVENTS = [
    *installed("2026-01-13T06:10:00Z", "m1", A, "hotpatch"),
    ev("2026-01-13T06:00:00Z", "m2", A, "hotpatch", "start", None),
    ev("2026-01-13T06:30:00Z", "m2", A, "hotpatch", "fail", True),
    *installed("2026-01-13T12:00:00Z", "m3", A, "hotpatch"),
    *installed("2026-01-14T00:00:00Z", "m4", A, "hotpatch"),  # exactly one day in
    *installed("2026-01-14T06:30:00Z", "m2", A, "hotpatch"),  # the retry
    *installed("2026-01-15T12:00:00Z", "m5", A, "restart"),  # completes A: 2.5 days
    *installed("2026-01-16T02:00:00Z", "m1", B, "baseline"),
    *installed("2026-01-16T02:00:00Z", "m2", B, "baseline"),
    *installed("2026-01-16T20:00:00Z", "m3", B, "baseline"),
    *installed("2026-01-17T12:00:00Z", "m4", B, "baseline"),  # m5 never gets B
    *installed("2026-01-20T03:00:00Z", "m1", C, "hotpatch")[:-1],
    ev("2026-01-20T03:00:00Z", "m1", C, "hotpatch", "end", False),
    *installed("2026-01-20T04:00:00Z", "m2", C, "hotpatch"),
    ev("2026-01-21T06:00:00Z", "m1", C, "hotpatch", "revert", None),
    ev("2026-01-21T06:00:00Z", "m2", C, "hotpatch", "revert", None),
    *installed("2026-01-22T00:00:00Z", "m5", "KB5000099", "upgrade"),  # no facts: totals only
]


@pytest.fixture(scope="module")
def summary() -> Summary:
    return summarize(EVENTS, [HOTPATCH, BASELINE, HALTED], machines=5, start=START, end=END)


def curves(release: Any) -> dict[tuple[str, str | None] | str, Curve]:
    """Region curves by name, zone curves by (region, zone)."""
    out: dict[tuple[str, str | None] | str, Curve] = {}
    for region in release.regions:
        out[region.region] = region.curve
        out.update({(region.region, z.zone): z.curve for z in region.zones})
    return out


def test_fleet_figures(summary: Summary) -> None:
    assert summary.machines == 5
    assert summary.days == 10.0
    assert summary.published_by_kind == {
        "hotpatch": 2,
        "planned-baseline": 1,
        "unplanned-baseline": 0,
    }
    assert (summary.installs, summary.failures, summary.reverts) == (12, 1, 2)


def test_restarts_against_restart_based_patching(summary: Summary) -> None:
    # 1 restart-based install of A on m5, 4 baseline installs of B, 1 upgrade
    assert summary.restarts == 6
    assert summary.restart_based == 12
    assert summary.restarts_avoided == 6
    assert summary.restart_ratio == 0.5


def test_hotpatch_with_a_failure_and_a_retry(summary: Summary) -> None:
    a = summary.releases[0]
    assert (a.kb, a.kind, a.published) == (A, "hotpatch", HOTPATCH.published)
    assert (a.reached, a.targets, a.installs, a.failures, a.reverts, a.restarts) == (
        5,
        5,
        5,
        1,
        0,
        1,
    )
    assert a.time_to_full == timedelta(days=2, hours=12)
    assert a.latest == timedelta(days=2, hours=12)
    assert a.halted is None
    assert a.days == 3
    got = curves(a)
    assert got["eastus"] == Curve(3, (2, 3, 3))
    assert got[("eastus", "1")] == Curve(1, (1, 1, 1))
    assert got[("eastus", "2")] == Curve(1, (0, 1, 1))
    assert got[("eastus", None)] == Curve(1, (1, 1, 1))
    assert got["westus"] == Curve(2, (0, 1, 2))
    assert got[("westus", "1")] == Curve(2, (0, 1, 2))
    assert [r.region for r in a.regions] == ["eastus", "westus"]
    assert [z.zone for z in a.regions[0].zones] == ["1", "2", None]


def test_baseline_that_never_reaches_every_target(summary: Summary) -> None:
    b = summary.releases[1]
    assert (b.reached, b.targets, b.installs, b.restarts, b.failures) == (4, 5, 4, 4, 0)
    assert b.time_to_full is None
    assert b.latest == timedelta(days=1, hours=12)
    assert b.days == 7  # until the end of the simulation
    got = curves(b)
    assert got["eastus"] == Curve(3, (3,) * 7)
    assert got["westus"] == Curve(2, (0,) + (1,) * 6)
    assert got["westus"].fraction(6) == 0.5


def test_halted_release_with_reverts(summary: Summary) -> None:
    c = summary.releases[2]
    assert (c.reached, c.targets, c.installs, c.reverts) == (2, 3, 2, 2)
    assert c.halted == "health probe failed"
    assert c.classifications == ("Security", "Critical")
    assert c.time_to_full is None
    assert c.latest == timedelta(hours=4)
    got = curves(c)
    assert got["eastus"] == Curve(3, (2, 0, 0))
    assert got[("eastus", "1")] == Curve(1, (1, 0, 0))
    assert got[("eastus", None)] == Curve(1, (0, 0, 0))
    assert "westus" not in got
    assert summary.halted == ((C, "health probe failed"),)


def test_time_to_compliance(summary: Summary) -> None:
    assert summary.time_to_compliance is None  # B never got everywhere
    without_b = summarize(EVENTS, [HOTPATCH, HALTED], machines=5, start=START, end=END)
    assert without_b.time_to_compliance == timedelta(days=2, hours=12)  # C halted: not counted
    assert without_b.installs == 12  # B's events still count in the fleet totals


def test_a_machine_counts_once_and_again_after_a_revert() -> None:
    facts = ReleaseFacts(A, "hotpatch", (), START, {("eastus", "1"): 2})
    events = [
        ev("2026-01-13T01:00:00Z", "m1", A, "hotpatch", "end"),
        ev("2026-01-13T02:00:00Z", "m1", A, "hotpatch", "end"),
        ev("2026-01-14T01:00:00Z", "m1", A, "hotpatch", "revert"),
        ev("2026-01-15T01:00:00Z", "m1", A, "hotpatch", "end"),
    ]
    (release,) = summarize(events, [facts], machines=1, start=START, end=END).releases
    assert (release.reached, release.installs, release.reverts) == (1, 3, 1)
    assert release.time_to_full is None
    assert curves(release)[("eastus", "1")].have == (1, 0, 1, 1, 1, 1, 1, 1, 1, 1)


def test_time_to_full_is_the_install_that_completes_the_targets() -> None:
    facts = ReleaseFacts(A, "hotpatch", (), START, {("eastus", "1"): 1, ("eastus", "2"): 1})
    events = [
        ev("2026-01-13T05:00:00Z", "m1", A, "hotpatch", "end"),
        ev("2026-01-16T05:00:00Z", "m2", A, "hotpatch", "end"),
        ev("2026-01-18T05:00:00Z", "m1", A, "hotpatch", "end"),  # a reinstall later
    ]
    (release,) = summarize(events, [facts], machines=2, start=START, end=END).releases
    assert release.time_to_full == timedelta(days=3, hours=5)
    assert release.latest == timedelta(days=5, hours=5)
    assert release.days == 4
    # written out of order: the later install still decides when both machines had it
    (swapped,) = summarize(
        [events[1], events[0]], [facts], machines=2, start=START, end=END
    ).releases
    assert swapped.time_to_full == timedelta(days=3, hours=5)


def test_summarize_names_a_bad_event() -> None:
    broken = [EVENTS[0], {k: v for k, v in EVENTS[1].items() if k != "release"}]
    with pytest.raises(ValueError, match=r"event 2 has no 'release' field"):
        summarize(broken, [HOTPATCH], machines=5, start=START, end=END)
    bad_time = [dict(EVENTS[1], time="yesterday")]
    assert bad_time[0]["event"] == "end"
    with pytest.raises(ValueError, match=r"event 1: "):
        summarize(bad_time, [HOTPATCH], machines=5, start=START, end=END)


def test_render_text(summary: Summary) -> None:
    text = render_text(summary)
    assert "\x1b" not in text
    for figure in (
        "Simulated 5 machines for 10.0 days",
        "Releases published: 3 (2 hotpatch, 1 planned-baseline, 0 unplanned-baseline)",
        "Installs ended: 12, failures: 1, reverts: 2",
        "Restarts taken: 6 of 12 that restart-based patching would take (50%); 6 avoided",
        "Time to 100% compliance: not reached",
        "KB5000003: health probe failed",
    ):
        assert figure in text
    rows = {
        line.split()[0]: line.split()
        for line in text.splitlines()
        if line.startswith("KB") and "2026-01-" in line
    }
    assert rows[A][:8] == [A, "hotpatch", "2026-01-13", "5/5", "2.5", "days", "2.5", "days"]
    assert rows[B][:6] == [B, "planned-baseline", "2026-01-16", "4/5", "not", "reached"]
    sparks = [line.split() for line in text.splitlines() if line.startswith("  ")]
    assert ["eastus", "\u2586\u2588\u2588", "3/3", "100%"] in sparks  # A: 2/3, 3/3, 3/3
    assert ["westus", "\u2581\u2585\u2588", "2/2", "100%"] in sparks  # A: 0, 1/2, 2/2
    assert ["zone", "2", "\u2581\u2588\u2588", "1/1", "100%"] in sparks
    assert ["westus", "\u2581" + "\u2585" * 6, "1/2", "50%"] in sparks  # B
    assert ["eastus", "\u2586\u2581\u2581", "0/3", "0%"] in sparks  # C, reverted


def test_render_text_fits_the_width() -> None:
    facts = ReleaseFacts(A, "hotpatch", (), START, {**ALL, ("westus", "1"): 0, ("eastus", None): 2})
    events = [
        ev(f"2026-01-{13 + day}T01:00:00Z", f"m{day}", A, "hotpatch", "end") for day in (1, 2)
    ]
    summary = summarize(events, [facts], machines=4, start=START, end=START + timedelta(days=300))
    assert summary.releases[0].days == 300
    text = render_text(summary, width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    eastus = next(line for line in text.splitlines() if line.startswith("  eastus"))
    # 60 less the label ("    no zone"), the counts ("2/4") and the gaps and percentage
    assert eastus.split() == ["eastus", "\u2585" * 37, "2/4", "50%"]


def test_sparkline_is_full_only_when_complete() -> None:
    curve = Curve(20, (0, 1, 10, 19, 20))
    almost = Curve(200, (0, 0, 0, 0, 199))
    release = ReleaseSummary(
        kb=A,
        kind="hotpatch",
        classifications=(),
        published=START,
        targets=20,
        reached=20,
        installs=20,
        failures=0,
        reverts=0,
        restarts=0,
        time_to_full=timedelta(days=4, hours=1),
        latest=timedelta(days=4, hours=1),
        halted=None,
        regions=(
            RegionProgress("eastus", curve, (ZoneProgress("1", curve),)),
            RegionProgress("westus", almost, (ZoneProgress(None, almost),)),
        ),
    )
    summary = Summary(20, START, END, 20, 0, 0, 0, (release,))
    text = render_text(summary)
    assert "  eastus     \u2581\u2582\u2585\u2587\u2588    20/20 100%" in text.splitlines()
    assert "  westus     \u2581\u2581\u2581\u2581\u2587  199/200  99%" in text.splitlines()
    assert "Time to 100% compliance: 4.0 days" in text


def test_render_svg(summary: Summary) -> None:
    svg = render_svg(summary)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title") is not None
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text is not None
    assert "6 restarts taken of 12" in desc.text
    assert "KB5000003 (hotpatch) reached 2 of 3 machines" in desc.text
    assert not list(root.iter(f"{SVG}script"))
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    panels = [g for g in root.iter(f"{SVG}g") if g.get("data-release")]
    by_region = [g.get("data-release") for g in panels if g.get("data-view") == "region"]
    by_zone = [g.get("data-release") for g in panels if g.get("data-view") == "zone"]
    assert by_region == by_zone == [A, B, C]
    first = panels[0]
    texts = " ".join(t.text or "" for t in first.iter(f"{SVG}text"))
    assert "days since publish" in texts and "% of targets" in texts and "100%" in texts
    lines = list(first.iter(f"{SVG}polyline"))
    assert len(lines) == 2  # eastus, westus
    assert all(len((p.get("points") or "").split()) == 4 for p in lines)  # publish + 3 days
    zone_lines = list(panels[1].iter(f"{SVG}polyline"))
    assert len(zone_lines) == 4  # eastus 1, 2, none; westus 1
    titles = {t.text for t in first.iter(f"{SVG}title")}
    assert "eastus: 3 of 3 (100%) after 3 days" in titles
    assert render_svg(summary) == svg


def test_empty_run_renders() -> None:
    empty = summarize([], [], machines=3, start=START, end=END)
    assert empty.time_to_compliance == timedelta(0)
    assert empty.restart_ratio is None
    assert "Restarts taken: 0 of 0" in render_text(empty)
    root = ET.fromstring(render_svg(empty))
    assert not [g for g in root.iter(f"{SVG}g") if g.get("data-release")]


def test_read_events(tmp_path: Path) -> None:
    good = tmp_path / "events.jsonl"
    good.write_text("\n".join(json.dumps(e) for e in EVENTS[:3]) + "\n\n", encoding="utf-8")
    assert list(read_events(good)) == EVENTS[:3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(EVENTS[0]) + "\n\n" + '{"time": "2026-01-13T0\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON"):
        list(read_events(bad))
    array = tmp_path / "array.jsonl"
    array.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"array\.jsonl:1: not a JSON object"):
        list(read_events(array))
