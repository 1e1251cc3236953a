"""What a ``hotpatch simulate`` run did: its figures, a text summary and progress plots.

The simulator writes every install event as one JSON line (``read_events`` reads
them back); ``summarize`` folds the events and the facts of the published
releases into a ``Summary``; ``render_text`` and ``render_svg`` draw it.

Invariants:

- ``summarize`` makes one pass with O(1) work per event and keeps state
  proportional to machines x releases (plus one counter per release, region,
  zone and day), so a year of a large fleet streams through.
- Events are taken in the order written, which is virtual-clock order. A machine
  has a release from its ``end`` event until a ``revert`` of it; a release reaches
  100% at the first moment as many machines have it as it targets.
- Times are aware UTC; days are counted from a release's publish time, and day
  ``d`` of a curve is the state at ``published + (d + 1) days``.
- Rendering is pure and deterministic: the same summary gives the same text and
  bytes. The SVG is self-contained (no fonts, styles or scripts from elsewhere),
  and says in words what its colours and dashes show.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report stays free of the control plane
    from pyhotpatch.server.orchestrator._timing import StepTimes

DAY = timedelta(days=1)
KINDS = ("hotpatch", "planned-baseline", "unplanned-baseline")  # the order figures list them in

Cell = tuple[str, str | None]  # (region, zone)


@dataclass(frozen=True)
class ReleaseFacts:
    """What the simulation knows of one published release, to measure its rollout against.

    ``targets`` counts, per (region, zone), the machines that should get it; ``halted``
    is the reason its rollout was halted, if it was.
    """

    kb: str
    kind: str
    classifications: tuple[str, ...]
    published: datetime
    targets: Mapping[tuple[str, str | None], int]
    halted: str | None = None


@dataclass(frozen=True)
class Curve:
    """How many machines had a release at the end of each day since its publish, of how many should.

    ``have[d]`` counts the machines holding it at ``published + (d + 1) days``; it is never
    empty, so a curve always has a last point to report.
    """

    targets: int
    have: tuple[int, ...]

    def fraction(self, day: int) -> float:
        """The share (0..1) of the targets that had it at the end of ``day``; 1 when none are owed."""
        if self.targets <= 0:
            return 1.0
        return min(1.0, self.have[day] / self.targets)

    @property
    def last(self) -> int:
        """The machines that had it at the end of the curve."""
        return self.have[-1]


@dataclass(frozen=True)
class ZoneProgress:
    """One availability zone's progress on a release; ``zone`` is None for machines in none."""

    zone: str | None
    curve: Curve


@dataclass(frozen=True)
class RegionProgress:
    """One region's progress on a release (its zones summed), with each of its zones'."""

    region: str
    curve: Curve
    zones: tuple[ZoneProgress, ...]


@dataclass(frozen=True)
class ReleaseSummary:
    """How one release rolled out: reach, speed, failures, and its progress per region and zone.

    ``time_to_full`` is from publish to the install that completed its targets (None
    when that never happened); ``latest`` is from publish to the last install of it
    anywhere. The curves run until it reached 100%, or else until the simulation ended.
    """

    kb: str
    kind: str
    classifications: tuple[str, ...]
    published: datetime
    targets: int
    reached: int  # distinct machines that installed it
    installs: int  # its "end" events
    failures: int
    reverts: int
    restarts: int
    time_to_full: timedelta | None
    latest: timedelta | None
    halted: str | None
    regions: tuple[RegionProgress, ...]

    @property
    def days(self) -> int:
        """How many days its curves cover."""
        return len(self.regions[0].curve.have) if self.regions else 1


@dataclass(frozen=True)
class Summary:
    """A simulation run in figures: the fleet, the restarts hotpatching saved, each release's rollout."""

    machines: int
    start: datetime
    end: datetime
    installs: int  # "end" events
    failures: int
    reverts: int
    restarts: int  # "restart" events
    releases: tuple[ReleaseSummary, ...]

    @property
    def days(self) -> float:
        """The simulated span in days."""
        return (self.end - self.start) / DAY

    @property
    def published_by_kind(self) -> dict[str, int]:
        """Releases published per kind, the known kinds first (each listed even when zero)."""
        counts = dict.fromkeys(KINDS, 0)
        for release in self.releases:
            counts[release.kind] = counts.get(release.kind, 0) + 1
        return counts

    @property
    def restart_based(self) -> int:
        """The restarts restart-based patching would have taken: one for every finished install."""
        return self.installs

    @property
    def restarts_avoided(self) -> int:
        """The restarts hotpatching saved against restart-based patching."""
        return self.restart_based - self.restarts

    @property
    def restart_ratio(self) -> float | None:
        """Restarts taken per restart restart-based patching would take; None with no installs."""
        return self.restarts / self.restart_based if self.restart_based else None

    @property
    def time_to_compliance(self) -> timedelta | None:
        """The longest time to 100% among rollouts that were not halted; None if one never got there.

        With no such rollout the fleet was compliant throughout: zero.
        """
        longest = timedelta(0)
        for release in self.releases:
            if release.halted is None:
                if release.time_to_full is None:
                    return None
                longest = max(longest, release.time_to_full)
        return longest

    @property
    def halted(self) -> tuple[tuple[str, str], ...]:
        """The halted rollouts as (kb, reason)."""
        return tuple((r.kb, r.halted) for r in self.releases if r.halted is not None)


class _Tally:
    """The running state of one release while the events stream past."""

    __slots__ = (
        "cells",
        "facts",
        "failures",
        "full",
        "holding",
        "installs",
        "latest",
        "machines",
        "restarts",
        "reverts",
        "total",
    )

    def __init__(self, facts: ReleaseFacts) -> None:
        self.facts = facts
        self.total = sum(facts.targets.values())
        self.machines: dict[str, bool] = {}  # machine -> holds it now
        self.holding = 0
        self.cells: dict[Cell, list[int]] = {}  # per day since publish: change in holders
        self.installs = self.failures = self.reverts = self.restarts = 0
        self.latest: datetime | None = None
        self.full: datetime | None = facts.published if self.total <= 0 else None

    def _shift(self, cell: Cell, when: datetime, step: int) -> None:
        day = max(0, (when - self.facts.published) // DAY)
        deltas = self.cells.setdefault(cell, [])
        if len(deltas) <= day:
            deltas.extend([0] * (day + 1 - len(deltas)))
        deltas[day] += step

    def install(self, machine: str, cell: Cell, when: datetime) -> None:
        self.installs += 1
        if self.latest is None or when > self.latest:
            self.latest = when
        if self.machines.get(machine):
            return
        self.machines[machine] = True
        self.holding += 1
        self._shift(cell, when, 1)
        if self.full is None and self.holding >= self.total:
            self.full = self.latest

    def revert(self, machine: str, cell: Cell, when: datetime) -> None:
        self.reverts += 1
        if self.machines.get(machine):
            self.machines[machine] = False
            self.holding -= 1
            self._shift(cell, when, -1)

    def summary(self, end: datetime) -> ReleaseSummary:
        facts = self.facts
        published = facts.published
        if self.full is not None:
            time_to_full: timedelta | None = max(self.full - published, timedelta(0))
            days = max(0, (self.full - published) // DAY) + 1
        else:
            time_to_full = None
            days = max(1, math.ceil((end - published) / DAY))
        cells = set(facts.targets) | set(self.cells)
        by_region: dict[str, list[ZoneProgress]] = {}
        for region, zone in sorted(cells, key=lambda c: (c[0], c[1] is None, c[1] or "")):
            curve = _curve(
                self.cells.get((region, zone), []), days, facts.targets.get((region, zone), 0)
            )
            by_region.setdefault(region, []).append(ZoneProgress(zone, curve))
        regions = tuple(
            RegionProgress(
                region,
                Curve(
                    sum(z.curve.targets for z in zones),
                    tuple(map(sum, zip(*(z.curve.have for z in zones), strict=True))),
                ),
                tuple(zones),
            )
            for region, zones in by_region.items()
        )
        return ReleaseSummary(
            kb=facts.kb,
            kind=facts.kind,
            classifications=facts.classifications,
            published=published,
            targets=self.total,
            reached=len(self.machines),
            installs=self.installs,
            failures=self.failures,
            reverts=self.reverts,
            restarts=self.restarts,
            time_to_full=time_to_full,
            latest=None if self.latest is None else self.latest - published,
            halted=facts.halted,
            regions=regions,
        )


def _curve(deltas: list[int], days: int, targets: int) -> Curve:
    have = list(accumulate(deltas[:days]))
    have += [have[-1] if have else 0] * (days - len(have))
    return Curve(targets, tuple(have))


def _time(value: object) -> datetime:
    """An event's time as aware UTC; naive times are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    else:
        raise ValueError(f"time {value!r} is not an ISO 8601 string")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def summarize(
    events: Iterable[Mapping[str, Any]],
    releases: Sequence[ReleaseFacts],
    *,
    machines: int,
    start: datetime,
    end: datetime,
) -> Summary:
    """Fold a run's install events, in the order written, into its figures.

    ``releases`` are the releases published during the run, in the order to report
    them; events of other releases count in the fleet totals only. Raises
    ``ValueError`` naming the event (1-based) that lacks a field or has a bad time.
    """
    tallies = {facts.kb: _Tally(facts) for facts in releases}
    installs = failures = reverts = restarts = 0
    for number, event in enumerate(events, 1):
        try:
            what = event["event"]
            if what == "start":
                continue
            tally = tallies.get(event["release"])
            if what == "end":
                installs += 1
                if tally is not None:
                    tally.install(event["machine"], _cell(event), _time(event["time"]))
            elif what == "restart":
                restarts += 1
                if tally is not None:
                    tally.restarts += 1
            elif what == "fail":
                failures += 1
                if tally is not None:
                    tally.failures += 1
            elif what == "revert":
                reverts += 1
                if tally is not None:
                    tally.revert(event["machine"], _cell(event), _time(event["time"]))
        except KeyError as missing:
            raise ValueError(f"event {number} has no {missing} field") from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"event {number}: {error}") from error
    return Summary(
        machines=machines,
        start=start,
        end=end,
        installs=installs,
        failures=failures,
        reverts=reverts,
        restarts=restarts,
        releases=tuple(tallies[facts.kb].summary(end) for facts in releases),
    )


def _cell(event: Mapping[str, Any]) -> Cell:
    zone = event.get("zone")
    return event["region"], None if zone is None else str(zone)


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a ``--events`` JSON-lines file, one object a line, lazily.

    Blank lines are skipped; a line that is not a JSON object raises ``ValueError``
    naming the file and line number, so a truncated or hand-edited file is easy to fix.
    """
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON: {error.msg}") from None
            if not isinstance(event, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            yield event


# ---------------------------------------------------------------------------- text

_BARS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"  # ▁▂▃▄▅▆▇█


def _days(span: timedelta | None) -> str:
    return "not reached" if span is None else f"{span / DAY:.1f} days"


def _percent(fraction: float) -> str:
    """Rounded down, so that 100% is only ever said of a complete rollout."""
    return f"{math.floor(fraction * 100 + 1e-9)}%"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "\u2026"


def _bar(fraction: float) -> str:
    """▁ for nothing, █ only for complete, ▂..▇ in between."""
    if fraction >= 1.0:
        return _BARS[-1]
    if fraction <= 0.0:
        return _BARS[0]
    return _BARS[1 + min(5, int(fraction * 6))]


def _sparkline(curve: Curve, columns: int) -> str:
    """The curve in at most ``columns`` characters, each showing the last day it covers."""
    days = len(curve.have)
    columns = max(1, min(days, columns))
    return "".join(_bar(curve.fraction((i + 1) * days // columns - 1)) for i in range(columns))


def _table(rows: Sequence[Sequence[str]], right: set[int], width: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append(_clip("  ".join(cells).rstrip(), width))
    return out


def _status(release: ReleaseSummary) -> str:
    if release.halted is not None:
        return "halted"
    if release.time_to_full is None:
        return "100% not reached"
    return f"100% in {_days(release.time_to_full)}"


def _zone_label(zone: str | None) -> str:
    return "no zone" if zone is None else f"zone {zone}"


def render_text(summary: Summary, *, width: int = 100) -> str:
    """The run in plain text: fleet figures, restarts saved, a line per release, sparklines.

    No line is wider than ``width``; progress is one sparkline column per day since
    publish (fewer, each the last day it covers, when the days do not fit).
    """
    ratio = summary.restart_ratio
    kinds = ", ".join(f"{count} {kind}" for kind, count in summary.published_by_kind.items())
    lines = [
        f"Simulated {summary.machines} machines for {summary.days:.1f} days "
        f"({_stamp(summary.start)} to {_stamp(summary.end)})",
        f"Releases published: {len(summary.releases)} ({kinds})",
        f"Installs ended: {summary.installs}, failures: {summary.failures}, "
        f"reverts: {summary.reverts}",
        f"Restarts taken: {summary.restarts} of {summary.restart_based} that restart-based "
        f"patching would take ({'n/a' if ratio is None else f'{ratio:.0%}'}); "
        f"{summary.restarts_avoided} avoided",
        f"Time to 100% compliance: {_days(summary.time_to_compliance)}",
    ]
    halted = summary.halted
    lines.append(f"Halted rollouts: {len(halted) or 'none'}")
    lines += [f"  {kb}: {reason}" for kb, reason in halted]
    lines = [_clip(line, width) for line in lines]
    if not summary.releases:
        return "\n".join(lines) + "\n"

    header = ["KB", "kind", "published", "reached", "to 100%", "latest", "fails", "reverts"]
    rows = [[*header, "halted"]]
    rows += [
        [
            r.kb,
            r.kind,
            r.published.astimezone(timezone.utc).strftime("%Y-%m-%d"),
            f"{r.reached}/{r.targets}",
            _days(r.time_to_full),
            "-" if r.latest is None else _days(r.latest),
            str(r.failures),
            str(r.reverts),
            r.halted or "",
        ]
        for r in summary.releases
    ]
    lines += ["", *_table(rows, {3, 4, 5, 6, 7}, width)]

    labels = [
        (indent, text)
        for r in summary.releases
        for region in r.regions
        for indent, text in [
            (2, region.region),
            *((4, _zone_label(z.zone)) for z in region.zones),
        ]
    ]
    label_width = min(max((i + len(t) for i, t in labels), default=8), max(8, width // 3))
    suffix_width = max(
        (
            len(f"{c.last}/{c.targets}")
            for r in summary.releases
            for region in r.regions
            for c in (region.curve, *(z.curve for z in region.zones))
        ),
        default=3,
    )
    columns = max(1, width - label_width - suffix_width - 9)
    lines += [
        "",
        "Progress: share of targets that have each release, a column per day since publish",
    ]
    for r in summary.releases:
        lines.append(_clip(f"{r.kb} ({r.kind}): {_status(r)}, over {r.days} days", width))
        for region in r.regions:
            rows_ = [(2, region.region, region.curve)]
            rows_ += [(4, _zone_label(z.zone), z.curve) for z in region.zones]
            for indent, label, curve in rows_:
                name = _clip(" " * indent + label, label_width).ljust(label_width)
                counts = f"{curve.last}/{curve.targets}".rjust(suffix_width)
                share = _percent(curve.fraction(len(curve.have) - 1)).rjust(4)
                lines.append(f"{name}  {_sparkline(curve, columns)}  {counts} {share}")
    return "\n".join(_clip(line, width) for line in lines) + "\n"


def time_parts(orchestrator: StepTimes, simulation: StepTimes) -> list[tuple[str, float]]:
    """Each part of a run and its wall seconds, biggest first.

    The simulated agents' own parts are named as such: they stand in for a fleet's agents
    and would not run on a control plane.
    """
    parts = [("orchestrator: " + step, spent) for step, spent in orchestrator.seconds.items()]
    parts += [("simulation: " + step, spent) for step, spent in simulation.seconds.items()]
    return sorted(parts, key=lambda part: -part[1])


def render_times(
    orchestrator: StepTimes, simulation: StepTimes, wall_seconds: float, *, width: int = 100
) -> str:
    """Where a run's wall time went (``time_parts``), and what the orchestrator did."""
    rows = [
        [name, f"{spent:,.1f} s", _percent(spent / wall_seconds if wall_seconds else 0.0)]
        for name, spent in time_parts(orchestrator, simulation)
    ]
    lines = [f"Where the time went ({wall_seconds:,.1f} s in all):"]
    if rows:
        lines += ["  " + line for line in _table(rows, {1, 2}, width - 2)]
    did = orchestrator.counts
    if did:
        counted = ", ".join(f"{did[name]:,} {name}" for name in sorted(did, key=lambda n: -did[n]))
        lines += textwrap.wrap(
            f"The orchestrator counted {counted}.",
            width,
            initial_indent="  ",
            subsequent_indent="  ",
        )
    return "\n".join(_clip(line, width) for line in lines) + "\n"


# ---------------------------------------------------------------------------- SVG

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_TEXT = "#1b1f24"
_MUTED = "#4b5563"  # 7.5:1 on white
_GRID = "#d8dde3"
# line colours, each 3:1 or more against white; dashes tell lines apart beyond colour
_PALETTE = (
    "#0072b2",
    "#d55e00",
    "#009e73",
    "#cc79a7",
    "#8c510a",
    "#1b1f24",
    "#b8860b",
    "#6a3d9a",
)
_DASHES = ("", "7 4", "2 3", "9 3 2 3", "1 5")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_NARROW = " .,:;'!|il\u00b7"

WIDTH_MIN = 640
MARGIN = 24
GAP = 16
COLUMNS = 4  # panels a row at most
PANEL_W = 300
PANEL_H = 214
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 50, 14, 54, 42
PLOT_W = PANEL_W - PLOT_LEFT - PLOT_RIGHT
PLOT_H = PANEL_H - PLOT_TOP - PLOT_BOTTOM


def _esc(text: str) -> str:
    """``text`` safe inside XML character data and double-quoted attributes."""
    text = _NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _text_width(text: str, size: float, bold: bool = False) -> int:
    """A generous estimate of rendered width, enough to place text without knowing the font."""
    ems = sum(
        0.68 if char.isupper() or char.isdigit() else 0.32 if char in _NARROW else 0.62
        for char in text
    )
    return round(ems * size * (1.1 if bold else 1.0))


def _fit(text: str, size: float, room: int, bold: bool = False) -> str:
    while len(text) > 1 and _text_width(text, size, bold) > room:
        text = text[:-2] + "\u2026"
    return text


def _dash(pattern: str) -> str:
    return f' stroke-dasharray="{pattern}"' if pattern else ""


def _step(days: int) -> int:
    """A day step that puts at most six ticks on the x axis."""
    for step in (1, 2, 5, 7, 14, 30, 60, 90, 180):
        if days / step <= 6:
            return step
    return 365


def _line_title(name: str, curve: Curve) -> str:
    return (
        f"{name}: {curve.last} of {curve.targets} "
        f"({_percent(curve.fraction(len(curve.have) - 1))}) after {len(curve.have)} days"
    )


def _panel(
    release: ReleaseSummary,
    x: int,
    y: int,
    by_zone: bool,
    colours: Mapping[str, tuple[str, str]],
    zone_dashes: Mapping[str | None, str],
) -> list[str]:
    days = release.days
    view = "region and zone" if by_zone else "region"
    status = _status(release)
    heading = f"{release.kb} \u00b7 {release.kind}"
    subheading = f"by {view} \u00b7 {status}"
    if release.halted is not None:
        subheading += f": {release.halted}"
    summary = f"{release.kb} ({release.kind}) by {view}: {release.reached} of {release.targets} machines, {status}"
    if release.halted is not None:
        summary += f" ({release.halted})"
    left, top = x + PLOT_LEFT, y + PLOT_TOP
    bottom = top + PLOT_H
    out = [
        f'<g data-release="{_esc(release.kb)}" data-view="{"zone" if by_zone else "region"}">',
        f"<title>{_esc(summary)}</title>",
        f'<rect x="{x}" y="{y}" width="{PANEL_W}" height="{PANEL_H}" rx="8" fill="#ffffff" '
        f'stroke="{_GRID}" stroke-width="1"/>',
        f'<text x="{x + 12}" y="{y + 22}" font-size="14" font-weight="700" fill="{_TEXT}">'
        f"{_esc(_fit(heading, 14, PANEL_W - 24, True))}</text>",
        f'<text x="{x + 12}" y="{y + 40}" font-size="12" fill="{_MUTED}">'
        f"{_esc(_fit(subheading, 12, PANEL_W - 24))}</text>",
    ]
    for share in (0, 50, 100):
        gy = bottom - PLOT_H * share / 100
        out += [
            f'<line x1="{left}" y1="{gy:.1f}" x2="{left + PLOT_W}" y2="{gy:.1f}" '
            f'stroke="{_GRID}" stroke-width="1"/>',
            f'<text x="{left - 6}" y="{gy + 4:.1f}" font-size="11" fill="{_MUTED}" '
            f'text-anchor="end">{share}%</text>',
        ]
    step = _step(days)
    for day in range(0, days + 1, step):
        tx = left + PLOT_W * day / days
        out += [
            f'<line x1="{tx:.1f}" y1="{bottom}" x2="{tx:.1f}" y2="{bottom + 4}" '
            f'stroke="{_MUTED}" stroke-width="1"/>',
            f'<text x="{tx:.1f}" y="{bottom + 16}" font-size="11" fill="{_MUTED}" '
            f'text-anchor="middle">{day}</text>',
        ]
    out += [
        f'<line x1="{left}" y1="{bottom}" x2="{left + PLOT_W}" y2="{bottom}" '
        f'stroke="{_MUTED}" stroke-width="1"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" '
        f'stroke="{_MUTED}" stroke-width="1"/>',
        f'<text x="{left + PLOT_W / 2:.1f}" y="{y + PANEL_H - 8}" font-size="11" '
        f'fill="{_MUTED}" text-anchor="middle">days since publish</text>',
        f'<text x="{x + 14}" y="{top + PLOT_H / 2:.1f}" font-size="11" fill="{_MUTED}" '
        f'text-anchor="middle" transform="rotate(-90 {x + 14} {top + PLOT_H / 2:.1f})">'
        "% of targets</text>",
    ]
    lines: list[tuple[str, Curve, str, str]] = []
    for region in release.regions:
        colour, dash = colours[region.region]
        if by_zone:
            lines += [
                (
                    f"{region.region} {_zone_label(z.zone)}",
                    z.curve,
                    colour,
                    zone_dashes[z.zone],
                )
                for z in region.zones
            ]
        else:
            lines.append((region.region, region.curve, colour, dash))
    for name, curve, colour, dash in lines:
        points = [f"{left},{bottom}"] + [
            f"{left + PLOT_W * (day + 1) / days:.1f},{bottom - PLOT_H * curve.fraction(day):.1f}"
            for day in range(days)
        ]
        out += [
            "<g>",
            f"<title>{_esc(_line_title(name, curve))}</title>",
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" stroke-linejoin="round"{_dash(dash)}/>',
            "</g>",
        ]
    out.append("</g>")
    return out


def _legend(
    y: int,
    width: int,
    colours: Mapping[str, tuple[str, str]],
    zone_dashes: Mapping[str | None, str],
) -> tuple[list[str], int]:
    """Regions by colour, then zones by dash; wraps at ``width``. Returns the rows' bottom."""
    out = ['<g aria-hidden="true">']
    rows: list[list[tuple[str, str, str]]] = [
        [(region, colour, dash) for region, (colour, dash) in colours.items()],
        [
            (f"{_zone_label(zone)} (by-zone panels)", _MUTED, dash)
            for zone, dash in zone_dashes.items()
        ],
    ]
    for items in rows:
        x = MARGIN
        for label, colour, dash in items:
            room = 34 + _text_width(label, 12) + 22
            if x > MARGIN and x + room > width - MARGIN:
                x, y = MARGIN, y + 20
            out += [
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 26}" y2="{y - 4}" stroke="{colour}" '
                f'stroke-width="2.5"{_dash(dash)}/>',
                f'<text x="{x + 34}" y="{y}" font-size="12" fill="{_TEXT}">{_esc(label)}</text>',
            ]
            x += room
        y += 22
    out.append("</g>")
    return out, y


def _describe(summary: Summary) -> str:
    """The ``<desc>``: the figures in words, for readers who cannot see the picture."""
    ratio = summary.restart_ratio
    parts = [
        f"{summary.machines} machines simulated over {summary.days:.1f} days; "
        f"{len(summary.releases)} releases; {summary.installs} installs, "
        f"{summary.failures} failures, {summary.reverts} reverts; "
        f"{summary.restarts} restarts taken of {summary.restart_based} that restart-based "
        f"patching would take ({'n/a' if ratio is None else f'{ratio:.0%}'}), "
        f"{summary.restarts_avoided} avoided; "
        f"time to 100% compliance {_days(summary.time_to_compliance)}."
    ]
    for r in summary.releases:
        text = (
            f"{r.kb} ({r.kind}) reached {r.reached} of {r.targets} machines, "
            f"100% {'in ' + _days(r.time_to_full) if r.time_to_full is not None else 'not reached'}"
        )
        if r.halted is not None:
            text += f", halted: {r.halted}"
        parts.append(text + ".")
    return " ".join(parts)


def render_svg(summary: Summary) -> str:
    """A standalone SVG of each release's rollout over the days since its publish.

    Per release, one panel with a line per region (share of its targets that have
    the release) and, below it, one with a line per region and zone (zones by dash,
    in their region's colour). UTF-8 text starting with ``<svg``.
    """
    regions = sorted({region.region for r in summary.releases for region in r.regions})
    colours = {
        region: (_PALETTE[i % len(_PALETTE)], _DASHES[(i // len(_PALETTE)) % len(_DASHES)])
        for i, region in enumerate(regions)
    }
    zones = sorted(
        {z.zone for r in summary.releases for region in r.regions for z in region.zones},
        key=lambda zone: (zone is None, zone or ""),
    )
    zone_dashes = {zone: _DASHES[i % len(_DASHES)] for i, zone in enumerate(zones)}
    columns = max(1, min(COLUMNS, len(summary.releases)))
    width = max(WIDTH_MIN, 2 * MARGIN + columns * PANEL_W + (columns - 1) * GAP)
    legend, top = _legend(112, width, colours, zone_dashes)
    top += 6
    blocks = math.ceil(len(summary.releases) / columns)
    height = top + blocks * (2 * PANEL_H + GAP) + max(0, blocks - 1) * 2 * GAP + MARGIN
    ident = "hotpatch-simulation"
    heading = f"Rollout progress: {summary.machines} machines over {summary.days:.1f} days"
    caption = (
        f"Restarts taken {summary.restarts} of {summary.restart_based} "
        f"({summary.restarts_avoided} avoided) \u00b7 time to 100% compliance "
        f"{_days(summary.time_to_compliance)}"
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{ident}-title {ident}-desc" font-family="{FONT}">',
        f'<title id="{ident}-title">{_esc(heading)}</title>',
        f'<desc id="{ident}-desc">{_esc(_describe(summary))}</desc>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="42" font-size="22" font-weight="700" fill="{_TEXT}">'
        f"{_esc(heading)}</text>",
        f'<text x="{MARGIN}" y="66" font-size="13" fill="{_MUTED}">{_esc(caption)}</text>',
        f'<text x="{MARGIN}" y="88" font-size="13" fill="{_MUTED}">'
        "Share of each region's targets that have the release, by day since it was published"
        "</text>",
        *legend,
    ]
    if not summary.releases:
        out.append(
            f'<text x="{MARGIN}" y="{top + 20}" font-size="14" fill="{_TEXT}">'
            "No releases were published.</text>"
        )
    for index, release in enumerate(summary.releases):
        block, column = divmod(index, columns)
        x = MARGIN + column * (PANEL_W + GAP)
        y = top + block * (2 * PANEL_H + 3 * GAP)
        out += _panel(release, x, y, False, colours, zone_dashes)
        out += _panel(release, x, y + PANEL_H + GAP, True, colours, zone_dashes)
    out.append("</svg>")
    return "\n".join(out) + "\n"
