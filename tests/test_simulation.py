"""The orchestrator on simulated fleets: the availability-first rules, windows, the 30 days.

Each example runs the real orchestrator, rules and storage against simulated agents on a
virtual clock (``hotpatch simulate``'s engine) and checks the install events it wrote
against the rules, from the outside: what ran together, when, and where.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pyhotpatch.server.orchestrator._batches import set_limit, subscription_limit
from pyhotpatch.server.orchestrator._regions import AZURE_PAIRS, paired
from pyhotpatch.server.orchestrator._settings import Settings
from pyhotpatch.server.orchestrator._windows import DEFAULT_WINDOW, Window, is_open, zone
from pyhotpatch.simulation._engine import Options, Outcome, simulate
from pyhotpatch.simulation._report import render_times

SOAK = Settings().soak


def run(**kw: Any) -> tuple[Outcome, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    outcome = simulate(Options(**kw), events.append)
    return outcome, events


def moment(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def intervals(events: list[dict[str, Any]]) -> list[tuple[datetime, datetime, dict[str, Any]]]:
    """Each automatic install as (start, end) with its start event."""
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    found = []
    for e in events:
        if e["trigger"] != "auto" or e["event"] not in ("start", "end", "fail"):
            continue
        key = (e["machine"], e["release"])
        if e["event"] == "start":
            open_[key] = e
        elif key in open_:
            begun = open_.pop(key)
            found.append((moment(begun), moment(e), begun))
    far = datetime(2100, 1, 1, tzinfo=timezone.utc)
    found.extend((moment(b), far, b) for b in open_.values())
    return found


def check_rules(outcome: Outcome, events: list[dict[str, Any]]) -> None:
    """Every availability-first rule and window holds in the events."""
    machines = {m.id: m for m in outcome.world}
    subs: dict[str, int] = defaultdict(int)
    sets: dict[str, int] = defaultdict(int)
    for m in outcome.world:
        subs[m.subscription] += 1
        if m.availability_set:
            sets[m.availability_set] += 1
    spans = intervals(events)
    partners = paired(AZURE_PAIRS)
    # windows: no automatic install starts outside its machine's off-peak window
    for begun, _, e in spans:
        m = machines[e["machine"]]
        window = Window.parse(m.window) if m.window else DEFAULT_WINDOW
        assert is_open(window, zone(m.time_zone), begun), (e, str(window))
    # sweep over time: what is in flight together
    points = sorted(
        [(b, 1, i) for i, (b, _, _) in enumerate(spans)]
        + [(f, 0, i) for i, (_, f, _) in enumerate(spans)]
    )
    flight: set[int] = set()
    for _, opening, i in points:
        if not opening:
            flight.discard(i)
            continue
        flight.add(i)
        now = [spans[j][2] for j in flight]
        by_region: dict[str, set[Any]] = defaultdict(set)
        by_set: dict[str, list[dict[str, Any]]] = defaultdict(list)
        by_sub: dict[str, int] = defaultdict(int)
        by_release_region: dict[str, set[str]] = defaultdict(set)
        for e in now:
            by_region[e["region"]].add(e["zone"])
            if e["availabilitySet"]:
                by_set[e["availabilitySet"]].append(e)
            by_sub[e["subscription"]] += 1
            by_release_region[e["release"]].add(e["region"])
        for region, zones in by_region.items():
            assert len(zones) == 1, f"{region}: zones {zones} patched together"
        for aset, members in by_set.items():
            assert len({e["updateDomain"] for e in members}) == 1, f"{aset}: two update domains"
            assert len(members) <= set_limit(sets[aset], 20, 10), f"{aset}: too many at once"
        for sub, count in by_sub.items():
            assert count <= subscription_limit(subs[sub], 20), f"{sub}: {count} at once"
            assert subs[sub] == 1 or count < subs[sub]
        for release, regions in by_release_region.items():
            for region in regions:
                assert not partners.get(region, frozenset()) & regions, (
                    f"{release}: paired regions {region} and {partners[region] & regions}"
                )
    # DevTest first: a region's first Production install waits for a DevTest one to soak
    # (releases published before the simulated period rolled out before it). The ring is
    # over once every running DevTest target had its try, so a DevTest machine that was
    # switched off meanwhile may get the release after Production did.
    published = {r.kb: r.published for r in outcome.releases if r.published >= outcome.start}
    first: dict[tuple[str, str, str], datetime] = {}
    for begun, _, e in spans:
        if e["release"] not in published:
            continue
        key = (e["release"], e["region"], e["environment"])
        first[key] = min(first.get(key, begun), begun)
    for (release, region, env), when in first.items():
        devtest = first.get((release, region, "DevTest"))
        if env != "Production" or devtest is None:
            continue
        if devtest < when:
            assert when >= devtest + SOAK, (release, region, when, devtest)
            continue
        for _, _, e in spans:
            if (e["release"], e["region"], e["environment"]) == (release, region, "DevTest"):
                off = machines[e["machine"]].off
                assert any(a < when and b > published[release] for a, b in off), (
                    f"{release} in {region}: Production at {when} before {e['machine']}, "
                    "a DevTest machine that was running all along"
                )


def check_thirty_days(outcome: Outcome, events: list[dict[str, Any]]) -> None:
    """Every target of a release that was never switched off has it (or newer) within 30 days."""
    got: dict[str, dict[str, datetime]] = defaultdict(dict)  # machine -> release -> when
    for e in events:
        if e["event"] == "end":
            got[e["machine"]].setdefault(e["release"], moment(e))
        elif e["event"] == "revert":
            got[e["machine"]].pop(e["release"], None)
    machines = {m.id: m for m in outcome.world}
    halted = {kb for kb, _ in outcome.halted}
    published = sorted(outcome.releases, key=lambda r: r.published)
    for release in published:
        deadline = release.published + timedelta(days=30)
        if release.kb in halted or deadline > outcome.end:
            continue
        later = {r.kb for r in published if r.published >= release.published and r.kb not in halted}
        for machine_id in outcome.targets[release.kb]:
            m = machines[machine_id]
            if m.off or m.patch_mode != "AutomaticByPlatform" or m.upgrade:
                continue
            when = min((t for kb, t in got[machine_id].items() if kb in later), default=None)
            assert when is not None and when <= deadline, (release.kb, machine_id, when)


fleets = st.fixed_dictionaries(
    {
        "machines": st.integers(10, 80),
        "regions": st.integers(1, 8),
        "days": st.integers(3, 30),
        "seed": st.integers(0, 10_000),
        "start": st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
            lambda d: d.replace(tzinfo=timezone.utc)
        ),
    }
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(fleets)
def test_random_fleets_and_clocks_keep_every_rule(world: dict[str, Any]) -> None:
    outcome, events = run(**world)
    check_rules(outcome, events)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_every_release_within_thirty_days(seed: int, regions: int) -> None:
    outcome, events = run(machines=100, regions=regions, days=70, seed=seed)
    check_rules(outcome, events)
    check_thirty_days(outcome, events)
    assert any(e["event"] == "end" for e in events)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_a_bad_release_halts_in_its_first_batch(seed: int, regions: int) -> None:
    outcome, events = run(
        machines=120, regions=regions, days=6, seed=seed, bad_releases=("KB5099999",)
    )
    bad = [e for e in events if e["release"] == "KB5099999" and e["trigger"] == "auto"]
    starts = [e for e in bad if e["event"] == "start"]
    assert [kb for kb, _ in outcome.halted] == ["KB5099999"]
    assert len(starts) == 1, "the first batch is one machine"
    ended = {e["machine"] for e in bad if e["event"] == "end"}
    reverted = {e["machine"] for e in bad if e["event"] == "revert"}
    assert ended and reverted == ended
    assert all(e["healthy"] is False for e in bad if e["event"] == "end")
    check_rules(outcome, events)


def test_hotpatch_machines_restart_only_for_baselines() -> None:
    outcome, events = run(machines=120, regions=4, days=95, seed=7)
    restarts = [e for e in events if e["event"] == "restart"]
    ends = [e for e in events if e["event"] == "end"]
    machines = {m.id: m for m in outcome.world}
    assert ends and restarts
    for e in restarts:
        m = machines[e["machine"]]
        assert e["kind"] in ("baseline", "restart", "upgrade")
        if e["kind"] == "restart":
            # a hotpatch month restarts only machines with hotpatch off (or an older stack)
            assert not m.hotpatch
    assert len(restarts) < len(ends) / 2, "most installs were hotpatches, with no restart"


def test_the_run_says_where_its_time_went() -> None:
    outcome, events = run(machines=80, regions=3, days=40, seed=5)
    steps, own = outcome.orchestrator_times, outcome.simulation_times
    assert steps.counts["passes"] == outcome.passes
    assert steps.counts["batches started"] == sum(r["batches"] for r in outcome.rollouts) > 0
    started = [e for e in events if e["trigger"] == "auto" and e["event"] == "start"]
    assert steps.counts["installs started"] == len(started)
    assert steps.counts["region looks"] >= steps.counts["batches started"]
    assert {"dispatch", "assess", "settle", "judge", "commit"} <= set(steps.seconds)
    assert {"agents' heartbeats", "agents' answers"} <= set(own.seconds)
    spent = sum(steps.seconds.values()) + sum(own.seconds.values())
    assert 0 < spent <= outcome.wall_seconds
    text = render_times(steps, own, outcome.wall_seconds)
    assert "orchestrator: dispatch" in text and "simulation: agents' answers" in text
    assert f"{outcome.passes:,} passes" in text


def test_the_command_writes_events_and_a_summary(tmp_path: Any) -> None:
    from pyhotpatch.cli import app

    events = tmp_path / "events.jsonl"
    plot = tmp_path / "progress.svg"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--machines",
            "60",
            "--regions",
            "3",
            "--days",
            "20",
            "--seed",
            "3",
            "--events",
            str(events),
            "--bad-release",
            "KB5099999",
            "--plot",
            str(plot),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines
    fields = {
        "time",
        "machine",
        "subscription",
        "environment",
        "region",
        "zone",
        "availabilitySet",
        "updateDomain",
        "timeZone",
        "release",
        "kind",
        "trigger",
        "event",
        "healthy",
    }
    assert all(set(line) == fields for line in lines)
    assert "KB5099999" in result.output and "restart" in result.output.lower()
    assert "Where the time went" in result.output
    assert plot.read_text().startswith("<svg")


@pytest.mark.parametrize("argument", [["--bad-release", "oops"], ["--start", "yesterday"]])
def test_the_command_refuses_bad_arguments(argument: list[str], tmp_path: Any) -> None:
    from pyhotpatch.cli import app

    result = CliRunner().invoke(app, ["simulate", "--events", str(tmp_path / "e"), *argument])
    assert result.exit_code == 2
