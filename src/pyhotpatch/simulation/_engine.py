"""The simulation: the real orchestrator, rules and storage, on a virtual clock.

``simulate`` opens a real control-plane database (SQLite in a scratch directory unless
told otherwise), writes a seeded fleet into it (``_world``) as virtual machines with
enrolled agents, publishes releases into the catalog's tables on their dates, and then
moves a ``ManualClock`` from one moment something happens to the next: the
orchestrator's own next pass, a simulated agent finishing its work, a release coming out.
A machine switched off or on is not such a moment: as in a real fleet, its agent stops or
resumes beating and the orchestrator finds out at its next pass. The agents are simulated
(``SimulatedAgents``): they lease the real work queue and answer through the same
``complete`` the agent API uses, with installs that take minutes, sometimes fail, and, for
a ``--bad-release``, leave the machine unhealthy. Nothing of the orchestrator is replaced
or shortened.

Every install event goes to ``sink`` as the JSON object the ``--events`` file holds.
"""

from __future__ import annotations

import heapq
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, event, insert, select, update

from pyhotpatch.catalog import Catalog
from pyhotpatch.catalog._products import DEFAULT_PRODUCTS
from pyhotpatch.catalog._selection import SELECTED
from pyhotpatch.catalog._selection import select as select_patches
from pyhotpatch.clock import ManualClock
from pyhotpatch.server import _queue
from pyhotpatch.server._auth import Principal
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._operations import ASSESS, INSTALL, REVERT, UPGRADE, complete, start
from pyhotpatch.server.arm._vm_model import RUNNING_WINDOW
from pyhotpatch.server.orchestrator._orchestrator import Orchestrator, install_event
from pyhotpatch.server.orchestrator._settings import Settings, save
from pyhotpatch.server.orchestrator._timing import StepTimes
from pyhotpatch.simulation._report import ReleaseFacts
from pyhotpatch.simulation._world import PRODUCT, SimMachine, SimRelease, fleet, releases
from pyhotpatch.storage._tables import (
    fleet_machines,
    machines,
    presence,
    resources,
    rollouts,
    subscriptions,
    work_items,
)
from pyhotpatch.storage._tables import (
    releases as release_table,
)

Sink = Callable[[dict[str, Any]], None]
#: the first day of a simulation unless told otherwise
DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: how long each kind of work takes a simulated agent, as (shortest, longest) minutes
DURATIONS = {
    ASSESS: (1.0, 3.0),
    INSTALL: (1.0, 3.0),
    "restart": (4.0, 12.0),
    REVERT: (0.5, 2.0),
    UPGRADE: (10.0, 25.0),
}
_IMAGES = {p.name: p.images[0].to_json() for p in DEFAULT_PRODUCTS}


@dataclass(frozen=True)
class Options:
    """What to simulate."""

    machines: int = 1000
    regions: int = 6
    days: int = 60
    seed: int = 1
    bad_releases: tuple[str, ...] = ()
    start: datetime = DEFAULT_START
    database: str | None = None
    #: the share of machines whose installs fail (each attempt)
    failure_rate: float = 0.01
    #: the share of machines an operator installs on demand each week
    on_demand_rate: float = 0.002
    settings: Settings = field(default_factory=Settings)


@dataclass
class Outcome:
    """What a simulation did, for the summary."""

    machines: int
    start: datetime
    end: datetime
    releases: list[ReleaseFacts]
    halted: list[tuple[str, str]]
    events: int
    passes: int
    wall_seconds: float
    rollouts: list[dict[str, Any]]
    world: list[SimMachine]
    #: each release's targets when it was published: the machines that should get it
    targets: dict[str, list[str]]
    #: where the wall time went: the orchestrator's steps, and the simulation's own
    orchestrator_times: StepTimes = field(default_factory=StepTimes)
    simulation_times: StepTimes = field(default_factory=StepTimes)


@dataclass
class _State:
    product: str
    baseline: str
    hotpatch: str | None
    previous: list[str | None]
    hotpatch_on: bool
    running: bool = True


class SimulatedAgents:
    """Every simulated machine's agent: leases its work and answers it after a while."""

    def __init__(
        self,
        engine: Engine,
        world: list[SimMachine],
        calendar: list[SimRelease],
        options: Options,
        sink: Sink,
    ) -> None:
        self.engine = engine
        self.world = {m.id: m for m in world}
        self.calendar = {r.kb: r for r in calendar}
        self.options = options
        self.sink = sink
        self.rng = random.Random(options.seed + 2)
        self.state: dict[str, _State] = {}
        self.published: list[SimRelease] = []
        self.due: list[tuple[datetime, int]] = []
        self.leased: dict[int, _queue.WorkItem] = {}
        self.on_demand: set[int] = set()
        self.events = 0
        self.beaten: datetime | None = None
        #: machines switched off, and on, since the last heartbeat of the fleet
        self.gone: set[str] = set()
        self.back: set[str] = set()

    # --- what a machine has and lacks ------------------------------------------------------

    def health(self, state: _State) -> str:
        """Unhealthy while a bad release is the active hotpatch."""
        release = self.calendar.get(state.hotpatch or "")
        return "Unhealthy" if release is not None and release.bad else "Healthy"

    def offers(self, state: _State) -> list[SimRelease]:
        """The newest baseline and hotpatch of the machine's line it lacks."""
        line = [r for r in self.published if r.product == state.product]
        newest_baseline = next((r for r in reversed(line) if r.is_baseline), None)
        found: list[SimRelease] = []
        if newest_baseline is not None and newest_baseline.kb != state.baseline:
            found.append(newest_baseline)
        current = self.calendar.get(state.hotpatch or "")
        level = current.sequence if current is not None else 0
        hotpatch = next(
            (
                r
                for r in reversed(line)
                if not r.is_baseline and r.baseline == state.baseline and r.sequence > level
            ),
            None,
        )
        if hotpatch is not None:
            found.append(hotpatch)
        return found

    @staticmethod
    def patch(release: SimRelease) -> dict[str, Any]:
        """A release as an agent lists it."""
        return {
            "kbId": release.kb,
            "name": f"{release.kind} {release.kb}",
            "classifications": ["Security"],
            "rebootBehavior": "NeverReboots" if not release.is_baseline else "AlwaysRequiresReboot",
            "publishedDate": release.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    # --- the loop's steps -----------------------------------------------------------------

    def beat(self, now: datetime, changed: list[str] | None = None) -> None:
        """Heartbeats of every running machine; reports of those whose state ``changed``.

        Agents beat about every minute, and the orchestrator only asks whether a machine
        beat within its running window when a pass runs, which is right after this, at the
        same ``now``. So the fleet is written only when its last write would no longer
        count as running at this pass; a machine switched back on beats at once.
        """
        previous = self.beaten
        due = previous is None or now - previous > RUNNING_WINDOW
        if not (due or changed or self.back):
            return
        with self.engine.begin() as conn:
            if due:  # every agent that has beaten since the last time and is still on
                everyone = update(presence).values(last_seen=now)
                if previous is not None:
                    everyone = everyone.where(presence.c.last_seen >= previous)
                if self.gone:
                    everyone = everyone.where(presence.c.resource_id.not_in(sorted(self.gone)))
                conn.execute(everyone)
                self.beaten = now
                self.gone.clear()
            if self.back:
                conn.execute(
                    update(presence)
                    .where(presence.c.resource_id.in_(sorted(self.back)))
                    .values(last_seen=now)
                )
                self.back.clear()
            if changed:
                conn.execute(
                    update(machines)
                    .where(machines.c.resource_id == bindparam("key"))
                    .values(
                        baseline=bindparam("b"),
                        hotpatch=bindparam("h"),
                        health=bindparam("health"),
                        reported=bindparam("reported"),
                    ),
                    [self._report(key) for key in changed],
                )

    def _report(self, key: str) -> dict[str, Any]:
        state = self.state[key]
        return {
            "key": key,
            "b": state.baseline,
            "h": state.hotpatch,
            "health": {"status": self.health(state)},
            "reported": {"baseline": state.baseline, "activeHotpatch": state.hotpatch},
        }

    def lease(self, now: datetime) -> None:
        """Lease every queued item of a running machine; it finishes a few minutes later."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(work_items).where(work_items.c.state == _queue.QUEUED)).all()
            mine = [r for r in rows if r.machine in self.state and self.state[r.machine].running]
            if not mine:
                return
            conn.execute(
                update(work_items)
                .where(work_items.c.id.in_([r.id for r in mine]))
                .values(
                    state=_queue.LEASED,
                    lease_until=now + timedelta(hours=1),
                    attempts=work_items.c.attempts + 1,
                    updated=now,
                )
            )
        for row in mine:
            item = _queue.WorkItem(
                id=row.id,
                machine=row.machine,
                operation=row.operation,
                kind=row.kind,
                payload=dict(row.payload),
                state=_queue.LEASED,
                lease_until=now + timedelta(hours=1),
                attempts=row.attempts + 1,
                created=row.created,
                result=None,
                updated=now,
                trigger=row.trigger,
            )
            kind = item.kind
            if kind == INSTALL and any(
                r.is_baseline or not self._hotpatch_on(item.machine)
                for r in self.offers(self.state[item.machine])
            ):
                kind = "restart"
            low, high = DURATIONS[kind]
            heapq.heappush(
                self.due, (_step(now + timedelta(minutes=self.rng.uniform(low, high))), item.id)
            )
            self.leased[item.id] = item

    def switch(self, key: str, on: bool) -> None:
        """Switch the machine ``key`` on or off: its agent beats only while it is on."""
        self.state[key].running = on
        (self.gone.discard if on else self.back.discard)(key)
        (self.back.add if on else self.gone.add)(key)

    def _hotpatch_on(self, key: str) -> bool:
        return self.state[key].hotpatch_on

    def next_due(self) -> datetime | None:
        """When the next piece of work finishes."""
        return self.due[0][0] if self.due else None

    def finish(self, now: datetime) -> None:
        """Answer every item due by ``now`` through the control plane's ``complete``."""
        items = []
        while self.due and self.due[0][0] <= now:
            _, key = heapq.heappop(self.due)
            item = self.leased.pop(key, None)
            if item is not None:
                items.append(item)
        if not items:
            return
        changed: list[str] = []
        outputs = []
        for item in items:
            state = self.state[item.machine]
            if not state.running:  # switched off mid-work: no answer, the lease runs out
                continue
            outputs.append((item, self._answer(item, state, now)))
            changed.append(item.machine)
        self.beat(now, changed)
        with self.engine.begin() as conn:
            for item, (status, output) in outputs:
                try:
                    complete(conn, item, status, output, None, now)
                except ApiError:
                    continue  # settled meanwhile (its deadline passed)
        for item, (status, output) in outputs:
            if item.id in self.on_demand:
                self.on_demand.discard(item.id)
                self._on_demand_events(item, status, output, now)

    def _answer(self, item: _queue.WorkItem, state: _State, now: datetime) -> tuple[str, Any]:
        started = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if item.kind == ASSESS:
            return "Succeeded", {
                "availablePatches": [self.patch(r) for r in self.offers(state)],
                "startDateTime": started,
            }
        if item.kind == REVERT:
            reverted = state.hotpatch
            state.hotpatch = state.previous.pop() if state.previous else None
            return "Succeeded", {"reverted": reverted, "activeHotpatch": state.hotpatch}
        if item.kind == UPGRADE:
            target = next(
                (r for r in reversed(self.published) if r.product == PRODUCT and r.is_baseline),
                None,
            )
            if target is None:
                return "Failed", None
            state.product, state.baseline, state.hotpatch = PRODUCT, target.kb, None
            state.previous.clear()
            state.hotpatch_on = True  # a scheduled upgrade enrols the machine in hotpatch
            return "Succeeded", {
                "image": _IMAGES[PRODUCT],
                "baseline": target.kb,
                "startDateTime": started,
            }
        parameters = item.payload.get("parameters") or {}
        rules = parameters.get("windowsParameters") or parameters.get("linuxParameters") or {}
        offered = self.offers(state)
        chosen = select_patches([self.patch(r) for r in offered], rules)
        patches = []
        restarted = False
        for release, choice in zip(offered, chosen, strict=True):
            entry = {**self.patch(release), "installationState": choice}
            if choice == SELECTED:
                if self.rng.random() < self.options.failure_rate:
                    entry["installationState"] = "Failed"
                else:
                    entry["installationState"] = "Installed"
                    if release.is_baseline:
                        state.baseline, state.hotpatch = release.kb, None
                        state.previous.clear()
                        restarted = True
                    else:
                        state.previous.append(state.hotpatch)
                        state.hotpatch = release.kb
                        restarted |= not self._hotpatch_on(item.machine)
            patches.append(entry)
        return "Succeeded", {
            "patches": patches,
            "rebootStatus": "Completed" if restarted else "NotNeeded",
            "startDateTime": started,
        }

    def _on_demand_events(
        self, item: _queue.WorkItem, status: str, output: Any, now: datetime
    ) -> None:
        for patch in (output or {}).get("patches") or []:
            if patch.get("installationState") not in ("Installed", "Failed"):
                continue
            release = self.calendar[patch["kbId"]]
            kind = (
                "baseline"
                if release.is_baseline
                else ("hotpatch" if self._hotpatch_on(item.machine) else "restart")
            )
            ok = patch["installationState"] == "Installed"
            if ok and kind != "hotpatch":
                self.emit(item.machine, release.kb, kind, "restart", now, "on-demand")
            self.emit(item.machine, release.kb, kind, "end" if ok else "fail", now, "on-demand")

    def emit(self, key: str, kb: str, kind: str, what: str, now: datetime, trigger: str) -> None:
        """Write one install event of a simulated operator's request."""
        healthy = self.health(self.state[key]) == "Healthy"
        self.sink(install_event(self.world[key], kb, kind, trigger, what, now, healthy))
        self.events += 1

    def install_now(self, now: datetime) -> None:
        """An operator's Install now on a few machines that lack a release."""
        lacking = [k for k, s in self.state.items() if s.running and self.offers(s)]
        if not lacking:
            return
        count = min(len(lacking), max(1, math.ceil(len(self.state) * self.options.on_demand_rate)))
        operator = Principal("simulated-operator", "operator", "Administrator")
        parameters = {
            "maximumDuration": "PT2H",
            "rebootSetting": "IfRequired",
            "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
            "linuxParameters": {},
        }
        for key in self.rng.sample(lacking, count):
            with self.engine.begin() as conn:
                model = dict(
                    conn.execute(select(resources.c.body).where(resources.c.id == key)).scalar_one()
                )
                try:
                    operation, _ = start(
                        conn,
                        subscription=self.world[key].subscription,
                        vm=model,
                        machine=key,
                        kind=INSTALL,
                        parameters=parameters,
                        timeout=timedelta(hours=2, minutes=15),
                        principal=operator,
                        now=now,
                    )
                except ApiError:
                    continue  # busy with other work
                item = _queue.for_operation(conn, operation)
            if item is not None:
                self.on_demand.add(item.id)
                offered = self.offers(self.state[key])
                given = item.payload.get("parameters") or {}
                rules = given.get("windowsParameters") or given.get("linuxParameters") or {}
                chosen = select_patches([self.patch(r) for r in offered], rules)
                for release, choice in zip(offered, chosen, strict=True):
                    if choice != SELECTED:
                        continue  # left out, as a halted release is
                    kind = (
                        "baseline"
                        if release.is_baseline
                        else ("hotpatch" if self._hotpatch_on(key) else "restart")
                    )
                    self.emit(key, release.kb, kind, "start", now, "on-demand")


#: agents' answers arrive on this grid, so that one pass handles many
STEP = timedelta(minutes=5)


def _step(moment: datetime) -> datetime:
    """``moment`` rounded up to the next multiple of ``STEP`` (in UTC)."""
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    steps = -(-(moment - epoch) // STEP)
    return epoch + steps * STEP


def _scratch_sqlite(engine: Engine) -> None:
    """Trade the scratch database's crash safety for speed: it is thrown away at the end.

    The simulation is its only user, through one connection at a time, so it needs no
    write-ahead log for concurrent readers, and nothing in it must survive a crash: the
    rollback journal stays in memory and nothing is synced. Commits then write each page
    once, not into the log and again at checkpoints. A database named with ``--db`` keeps
    the control plane's own settings.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    engine.dispose()


def _vm_model(machine: SimMachine) -> dict[str, Any]:
    tags = {"hotpatch-environment": machine.environment}
    if machine.window:
        tags["hotpatch-maintenance-window"] = machine.window
    properties: dict[str, Any] = {
        "storageProfile": {"imageReference": {**_IMAGES[machine.product], "version": "latest"}},
        "osProfile": {
            "computerName": machine.id.rsplit("/", 1)[-1],
            "windowsConfiguration": {
                "provisionVMAgent": True,
                "timeZone": machine.time_zone,
                "patchSettings": {
                    "patchMode": machine.patch_mode,
                    "assessmentMode": machine.assessment_mode,
                    "enableHotpatching": machine.hotpatch,
                },
            },
        },
        "provisioningState": "Succeeded",
    }
    if machine.availability_set:
        properties["availabilitySet"] = {"id": machine.availability_set}
    model: dict[str, Any] = {
        "id": machine.id,
        "name": machine.id.rsplit("/", 1)[-1],
        "type": "Microsoft.Compute/virtualMachines",
        "location": machine.region,
        "tags": tags,
        "properties": properties,
    }
    if machine.zone:
        model["zones"] = [machine.zone]
    return model


def _publish(engine: Engine, release: SimRelease, now: datetime) -> None:
    """Publish ``release`` in the catalog's table, superseding what it replaces, as the catalog does."""
    with engine.begin() as conn:
        conn.execute(
            insert(release_table).values(
                kb=release.kb,
                product=release.product,
                kind=release.kind,
                title=f"{release.kind} {release.kb}",
                classifications=["Security"],
                severity="Important",
                cves=[],
                published=release.published,
                available=release.published,
                baseline=release.baseline if not release.is_baseline else release.kb,
                sequence=release.sequence,
                reboot_behavior="AlwaysRequiresReboot" if release.is_baseline else "NeverReboots",
                replaces=None,
                superseded_by=None,
                notes=[],
                created=now,
            )
        )
        older = update(release_table).where(
            release_table.c.product == release.product,
            release_table.c.kb != release.kb,
            release_table.c.superseded_by.is_(None),
        )
        if not release.is_baseline:
            older = older.where(
                release_table.c.kind == "hotpatch", release_table.c.baseline == release.baseline
            )
        conn.execute(older.values(superseded_by=release.kb))


def simulate(
    options: Options, sink: Sink, *, progress: Callable[[datetime], None] | None = None
) -> Outcome:
    """Run the simulation ``options`` describe; every install event goes to ``sink``."""
    began = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="hotpatch-simulation-")
    try:
        return _run(options, sink, Path(scratch.name), began, progress)
    finally:
        scratch.cleanup()


def _run(
    options: Options,
    sink: Sink,
    root: Path,
    began: float,
    progress: Callable[[datetime], None] | None,
) -> Outcome:
    times = StepTimes()
    start = options.start
    end = start + timedelta(days=options.days)
    clock = ManualClock(start - timedelta(days=100))
    catalog = Catalog.open(root, url=options.database, clock=clock)
    engine = catalog.engine
    if options.database is None:
        _scratch_sqlite(engine)
    world = fleet(options.machines, options.regions, options.seed, start, options.days)
    calendar = releases(start, options.days, options.seed, options.bad_releases)
    counted = 0

    def count(item: dict[str, Any]) -> None:
        nonlocal counted
        counted += 1
        sink(item)

    agents = SimulatedAgents(engine, world, calendar, options, count)
    past = [r for r in calendar if r.published < start]
    for release in past:
        _publish(engine, release, release.published)
        agents.published.append(release)
    with engine.begin() as conn:
        save(conn, options.settings)
        subs = sorted({m.subscription for m in world})
        conn.execute(
            insert(subscriptions),
            [
                {
                    "id": s,
                    "display_name": f"simulated {s[:8]}",
                    "state": "Enabled",
                    "created": start,
                }
                for s in subs
            ],
        )
        rows, fleet_rows, agent_rows = [], [], []
        spread = random.Random(options.seed + 3)
        for m in world:
            model = _vm_model(m)
            rows.append(
                {
                    "id": m.id,
                    "subscription": m.subscription,
                    "resource_group": m.id.split("/")[4],
                    "type": "microsoft.compute/virtualmachines",
                    "name": model["name"],
                    "body": model,
                    "etag": "0",
                    "created": start,
                    "updated": start,
                }
            )
            fleet_rows.append(
                {
                    "id": m.id,
                    "subscription": m.subscription,
                    "region": m.region,
                    "zone": m.zone,
                    "availability_set": m.availability_set,
                    "update_domain": m.update_domain,
                    "time_zone": m.time_zone,
                    "window": m.window,
                    "environment": m.environment,
                    "os_type": "Windows",
                    "patch_mode": m.patch_mode,
                    "assessment_mode": m.assessment_mode,
                    "hotpatch": m.hotpatch,
                    "product": m.product,
                    "created": start,
                }
            )
            line = [r for r in past if r.product == m.product]
            baseline = next(r for r in reversed(line) if r.is_baseline)
            hotpatch = next(
                (r.kb for r in reversed(line) if not r.is_baseline and r.baseline == baseline.kb),
                None,
            )
            agents.state[m.id] = _State(m.product, baseline.kb, hotpatch, [], m.hotpatch)
            every = options.settings.assess_every(m.assessment_mode)
            agent_rows.append(
                {
                    "resource_id": m.id,
                    "subscription": m.subscription,
                    "enrolled": start,
                    "agent_version": "simulated",
                    "health": {"status": "Healthy"},
                    "reported": {"baseline": baseline.kb, "activeHotpatch": hotpatch},
                    "assessment": None,
                    "installation": None,
                    "baseline": baseline.kb,
                    "hotpatch": hotpatch,
                    "rejoin_after": None,
                    "next_assessment": start + every * spread.random(),
                    "upgrade_requested": start + timedelta(days=2) if m.upgrade else None,
                }
            )
        conn.execute(insert(resources), rows)
        conn.execute(insert(fleet_machines), fleet_rows)
        conn.execute(insert(machines), agent_rows)
        conn.execute(insert(presence), [{"resource_id": m.id, "last_seen": start} for m in world])
    clock.set(start)
    orchestrator = Orchestrator(engine, clock, on_event=count, idle=timedelta(hours=1))
    upcoming = [r for r in calendar if r.published >= start]
    facts: dict[str, ReleaseFacts] = {}
    targets: dict[str, list[str]] = {}
    switches = sorted(
        [(a, m.id, False) for m in world for a, _ in m.off]
        + [(b, m.id, True) for m in world for _, b in m.off],
        reverse=True,
    )
    next_operator = start + timedelta(days=7)
    passes = 0
    last_progress = start
    times.lap("setting up the database and fleet")
    while clock() < end:
        now = clock()
        times.start()
        while upcoming and upcoming[0].published <= now:
            release = upcoming.pop(0)
            _publish(engine, release, now)
            agents.published.append(release)
            facts[release.kb], targets[release.kb] = _targets(agents, world, release)
        while switches and switches[-1][0] <= now:
            _, key, on = switches.pop()
            agents.switch(key, on)
        times.lap("publishing releases")
        agents.beat(now)
        times.lap("agents' heartbeats")
        agents.finish(now)
        times.lap("agents' answers")
        wake = orchestrator.tick()
        passes += 1
        times.start()
        agents.lease(now)
        times.lap("agents' leases")
        if now >= next_operator:
            agents.install_now(now)
            next_operator = now + timedelta(days=7)
            times.lap("operators' installs")
        moments = [wake, next_operator, end]
        if upcoming:
            moments.append(upcoming[0].published)
        due = agents.next_due()
        if due is not None:
            moments.append(due)
        clock.set(max(min(moments), now + timedelta(minutes=1)))
        if progress is not None and clock() - last_progress >= timedelta(days=1):
            last_progress = clock()
            progress(clock())
    with engine.connect() as conn:
        halted_rows = conn.execute(
            select(rollouts.c.release, rollouts.c.reason).where(rollouts.c.state == "halted")
        ).all()
        summary = [
            {
                "id": r.id,
                "release": r.release,
                "state": r.state,
                "batches": r.batches,
                "reason": r.reason,
            }
            for r in conn.execute(select(rollouts).order_by(rollouts.c.id))
        ]
    halted = [(r.release, r.reason or "") for r in halted_rows]
    reasons = dict(halted)
    catalog.close()
    return Outcome(
        machines=len(world),
        start=start,
        end=end,
        releases=[
            ReleaseFacts(
                f.kb, f.kind, f.classifications, f.published, f.targets, halted=reasons.get(f.kb)
            )
            for f in facts.values()
        ],
        halted=halted,
        events=counted,
        passes=passes,
        wall_seconds=time.perf_counter() - began,
        rollouts=summary,
        world=world,
        targets=targets,
        orchestrator_times=orchestrator.times,
        simulation_times=times,
    )


def _targets(
    agents: SimulatedAgents, world: list[SimMachine], release: SimRelease
) -> tuple[ReleaseFacts, list[str]]:
    """The machines that should get ``release``: automatic ones of its line lacking it."""
    places: dict[tuple[str, str | None], int] = {}
    chosen: list[str] = []
    for machine in world:
        state = agents.state[machine.id]
        if machine.patch_mode != "AutomaticByPlatform" or state.product != release.product:
            continue
        if release.kb not in {r.kb for r in agents.offers(state)}:
            continue
        key = (machine.region, machine.zone)
        places[key] = places.get(key, 0) + 1
        chosen.append(machine.id)
    facts = ReleaseFacts(release.kb, release.kind, ("Security",), release.published, places)
    return facts, chosen
