"""The orchestrator: automatic assessment and availability-first rollouts, pass by pass.

``Orchestrator.tick`` is one pass over the world, on the injected clock; the server calls
it from a background thread, the simulator on a virtual clock. Each step is its own short
transaction that holds the ``orchestrator`` lock, re-reads what it decides on, and is
idempotent, so a killed server resumes where it stopped and two server processes never
dispatch the same work twice. The steps:

1. **settle**: installs and reverts whose agent work finished move on (succeeded, failed
   and retried in a later window, reverted); a batch whose installs all ended bakes;
2. **judge**: a batch that has baked meets the health gate; past its threshold the
   rollout halts, its release is marked halted, operators are told, and every hotpatch
   it installed is reverted;
3. **open**: a newly available Critical or Security release gets a rollout, its regions
   planned in phases (geo-pairs apart); older rollouts of its line are superseded;
4. **dispatch**: in each region of an open phase, with no batch in flight in the region
   and none of the rollout's in a paired region, the next batch is composed from machines
   that may install now (running, in their window, DevTest before Production after the
   soak) under the admission rules, and queued; rings and phases advance as they finish;
5. **upgrades** and **assessments** due are queued; history older than 30 days is pruned.

Every state change goes through ``_rules``; every install event goes to ``on_event``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)

from pyhotpatch.catalog._selection import kb_digits
from pyhotpatch.clock import Clock
from pyhotpatch.server import _queue
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._compute import machine_document, vm_by_id
from pyhotpatch.server.arm._operations import (
    HISTORY_KEPT,
    expire,
    upgrade_payload,
)
from pyhotpatch.server.orchestrator import _dispatch, _fleet
from pyhotpatch.server.orchestrator._assessment import run_cycle
from pyhotpatch.server.orchestrator._batches import Draft, compose
from pyhotpatch.server.orchestrator._fleet import Machine
from pyhotpatch.server.orchestrator._regions import plan_phases
from pyhotpatch.server.orchestrator._releases import HOTPATCH, RESTART, ReleaseLine, Releases
from pyhotpatch.server.orchestrator._rules import (
    ACTIVE,
    BAKING,
    BATCH,
    BATCH_OPEN,
    CANCELED,
    COMPLETED,
    DEVTEST,
    FAILED,
    HALTED,
    INSTALLING,
    PASSED,
    PAUSED,
    PRODUCTION,
    REVERTED,
    REVERTING,
    ROLLOUT,
    SUCCEEDED,
    SUPERSEDED,
    Facts,
    Transition,
    allowed,
    require,
)
from pyhotpatch.server.orchestrator._rules import (
    INSTALL as INSTALL_ENTITY,
)
from pyhotpatch.server.orchestrator._settings import Settings, load
from pyhotpatch.server.orchestrator._timing import StepTimes
from pyhotpatch.server.orchestrator._windows import Window, closes_at, next_opening, zone
from pyhotpatch.storage import serialized
from pyhotpatch.storage._tables import (
    fleet_machines,
    machines,
    notices,
    operations,
    patch_history,
    presence,
    releases,
    rollout_batches,
    rollout_installs,
    rollout_regions,
    rollouts,
    work_items,
)

log = logging.getLogger("pyhotpatch.orchestrator")

Event = dict[str, Any]
EventSink = Callable[[Event], None]

#: a failed install's state
REVERT_FAILED = "revert-failed"
#: the name of the lock every step holds
LOCK = "orchestrator"
#: machines examined per assessment page
ASSESS_PAGE = 2000
#: how long a pass may be put off when nothing is due sooner
IDLE = timedelta(minutes=15)
#: how long a region with nothing to do now is left alone at most (new machines in it,
#: changed environments, are found by then)
RECHECK = timedelta(hours=6)
#: how soon a region looks again at a switched-off machine whose window is open
OFF_RECHECK = timedelta(minutes=30)


# statements run once per install, built once
_INSTALL_CHANGE = update(rollout_installs).where(
    rollout_installs.c.rollout == bindparam("r"), rollout_installs.c.machine == bindparam("m")
)
_INSTALL_ENDED = _INSTALL_CHANGE.values(
    state=bindparam("to"),
    ended=bindparam("at"),
    error=bindparam("err"),
    retry_after=bindparam("retry"),
    healthy=bindparam("ok"),
)
_REVERT_ENDED = _INSTALL_CHANGE.values(
    state=bindparam("to"), ended=bindparam("at"), error=bindparam("err")
)
#: a rollout's installs that ended, by state
_INSTALLS_ENDED = (
    select(rollout_installs.c.state, func.count())
    .where(
        rollout_installs.c.rollout == bindparam("r"),
        rollout_installs.c.state.in_((SUCCEEDED, FAILED, REVERTING, REVERTED)),
    )
    .group_by(rollout_installs.c.state)
)
#: the machines whose install in a rollout failed
_FAILED_MACHINES = select(rollout_installs.c.machine).where(
    rollout_installs.c.rollout == bindparam("r"), rollout_installs.c.state == FAILED
)
_INSTALL_HEALTH = _INSTALL_CHANGE.values(healthy=bindparam("ok"))
_INSTALL_STARTED = insert(rollout_installs)
_INSTALL_RETRIED = _INSTALL_CHANGE.values(
    attempts=rollout_installs.c.attempts + 1,
    **{
        name: bindparam(f"v_{name}")
        for name in (
            "batch",
            "state",
            "kind",
            "work",
            "started",
            "ended",
            "retry_after",
            "error",
            "healthy",
        )
    },
)


def _prefixed(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{name}": value for name, value in values.items()}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Placed(Protocol):
    """Where a machine sits, as an install event names it."""

    @property
    def id(self) -> str: ...
    @property
    def subscription(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def zone(self) -> str | None: ...
    @property
    def availability_set(self) -> str | None: ...
    @property
    def update_domain(self) -> int | None: ...
    @property
    def time_zone(self) -> str: ...


def install_event(
    machine: Placed,
    release: str,
    kind: str,
    trigger: str,
    event: str,
    now: datetime,
    healthy: bool | None,
) -> Event:
    """One install event, as ``on_event`` receives it and ``hotpatch simulate`` writes it."""
    return {
        "time": _iso(now),
        "machine": machine.id,
        "subscription": machine.subscription,
        "environment": machine.environment,
        "region": machine.region,
        "zone": machine.zone,
        "availabilitySet": machine.availability_set,
        "updateDomain": machine.update_domain,
        "timeZone": machine.time_zone,
        "release": release,
        "kind": kind,
        "trigger": trigger,
        "event": event,
        "healthy": healthy,
    }


def _inserted(conn: Connection, statement: Any) -> int:
    """Run an ``INSERT`` and return the new row's integer key."""
    key = conn.execute(statement).inserted_primary_key
    assert key is not None
    return int(key[0])


@dataclass
class _WindowCache:
    """Off-peak windows of one pass: computed once per (zone, window), not per machine."""

    now: datetime
    fleet: Window
    found: dict[tuple[str, str | None], tuple[datetime | None, datetime]] = field(
        default_factory=dict
    )

    def lookup(self, machine: Machine) -> tuple[datetime | None, datetime]:
        """When the machine's open window closes (None: closed now) and when it next opens."""
        key = (machine.time_zone, machine.window)
        hit = self.found.get(key)
        if hit is None:
            window = machine.off_peak(self.fleet)
            tz = zone(machine.time_zone)
            closing = closes_at(window, tz, self.now)
            if closing is None:
                hit = (None, next_opening(window, tz, self.now))
            else:
                hit = (closing, next_opening(window, tz, closing))
            self.found[key] = hit
        return hit

    def left(self, machine: Machine) -> timedelta | None:
        """How long the machine's window stays open from now; None when it is closed."""
        closing, _ = self.lookup(machine)
        return None if closing is None else closing - self.now


@dataclass
class _Install:
    """A machine's earlier, failed install of a rollout's release."""

    state: str
    retry_after: datetime | None


class Orchestrator:
    """Runs automatic patching of the whole fleet, one ``tick`` at a time."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        on_event: EventSink | None = None,
        idle: timedelta = IDLE,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.on_event = on_event
        self.idle = idle
        #: (rollout, region) → when the region may next have something to do, and how many
        #: of its targets were outstanding then; cleared when one of its batches passes
        self._region_wake: dict[tuple[int, str], tuple[datetime, int]] = {}
        #: (rollout, region) → the switched-off machines in an open window it looks again
        #: for every ``OFF_RECHECK``, and when it has something else to do
        self._away: dict[tuple[int, str], tuple[frozenset[str], datetime]] = {}
        self._pruned: datetime | None = None
        self._assessed: datetime | None = None
        self._reopened: datetime | None = None
        #: (rollout, region) → its targets still without the release, when last counted
        self._remaining: dict[tuple[int, str], int] = {}
        #: product → machines per region, counted once per pass
        self._counts: dict[str, dict[str, int]] = {}
        #: rollout → when the fleet was last searched for regions its plan lacks
        self._regions_checked: dict[int, datetime] = {}
        #: enrolled machines per subscription, and the state of the fleet they were counted in
        self._sizes: tuple[tuple[Any, ...], dict[str, int]] | None = None
        #: seconds spent in each step of every pass so far, and what the steps did
        self.times = StepTimes()

    # --- the pass ----------------------------------------------------------------------------

    def tick(self) -> datetime:
        """Run one pass of every step; when the orchestrator next has something to do.

        The pass is one transaction under the ``orchestrator`` lock: it sees one state of
        the world and leaves the next one whole. ``times`` says where its time went.
        """
        now = self.clock()
        wake = [now + self.idle]
        self._counts.clear()
        times = self.times
        times.start()
        with self.engine.begin() as conn:
            serialized(conn, LOCK)
            settings = load(conn)
            found = Releases.read(conn)
            times.lap("read settings and releases")
            self._settle(conn, now, settings)
            times.lap("settle")
            wake.extend(self._judge(conn, now))
            times.lap("judge")
            self._open(conn, now, settings, found)
            self._revert(conn, now)
            times.lap("open and revert")
            wake.extend(self._rollouts(conn, now, found, settings))
            times.lap("dispatch")
            self._upgrades(conn, now, settings)
            times.lap("upgrades")
            wake.extend(self._assess(conn, now, settings, found))
            times.lap("assess")
            self._prune(conn, now)
            times.lap("prune")
        times.lap("commit")
        times.count("passes")
        return max(min(wake), now)

    def _emit(
        self,
        machine: Machine,
        release: str,
        kind: str,
        event: str,
        now: datetime,
        *,
        healthy: bool | None = None,
    ) -> None:
        if self.on_event is not None:
            self.on_event(install_event(machine, release, kind, "auto", event, now, healthy))

    def _notice(
        self,
        conn: Connection,
        now: datetime,
        level: str,
        subject: str,
        message: str,
        *,
        rollout: int | None = None,
        release: str | None = None,
    ) -> None:
        conn.execute(
            insert(notices).values(
                at=now,
                level=level,
                rollout=rollout,
                release=release,
                subject=subject,
                message=message,
            )
        )
        (log.warning if level == "warning" else log.info)("%s: %s", subject, message)

    # --- 1. settle ----------------------------------------------------------------------------

    def _settle(self, conn: Connection, now: datetime, settings: Settings) -> None:
        """Move installs and reverts whose work finished; let finished batches bake."""
        for stale in _stale(conn, now):
            expire(conn, stale, now)
        rows = conn.execute(
            select(
                rollout_installs,
                work_items.c.state.label("work_state"),
                work_items.c.result.label("outcome"),
                rollouts.c.release,
            )
            .join(work_items, work_items.c.id == rollout_installs.c.work)
            .join(rollouts, rollouts.c.id == rollout_installs.c.rollout)
            .where(
                rollout_installs.c.state.in_((INSTALLING, REVERTING)),
                work_items.c.state.in_((_queue.DONE, _queue.FAILED)),
            )
        ).all()
        if not rows:
            return
        found = {m.id: m for m in _fleet.enrolled(conn, ids=[r.machine for r in rows], health=True)}
        windows = _WindowCache(now, settings.fleet_window)
        batches: set[int] = set()
        # written together once every row is read: one statement per kind of change
        reverts_ended: list[dict[str, Any]] = []
        installs_ended: list[dict[str, Any]] = []
        for row in rows:
            machine = found.get(row.machine)
            outcome = row.outcome if isinstance(row.outcome, dict) else {}
            key = {"r": row.rollout, "m": row.machine}
            if row.state == REVERTING:
                ok = row.work_state == _queue.DONE and outcome.get("status") == "Succeeded"
                state = REVERTED if ok else REVERT_FAILED
                require(Transition(INSTALL_ENTITY, REVERTING, state, Facts(now=now)))
                reverts_ended.append(
                    {**key, "to": state, "at": now, "err": None if ok else outcome.get("error")}
                )
                if machine is not None and ok:
                    self._emit(
                        machine,
                        row.release,
                        row.kind,
                        "revert",
                        now,
                        healthy=machine.health != "Unhealthy",
                    )
                if not ok:
                    self._notice(
                        conn,
                        now,
                        "warning",
                        f"revert of {row.release} failed",
                        f"The hotpatch {row.release} could not be reverted on "
                        f"{row.machine}: {outcome.get('error')}",
                        rollout=row.rollout,
                        release=row.release,
                    )
                continue
            installed, restarted, error = _read_install(outcome, row.release)
            healthy = None if machine is None else machine.health != "Unhealthy"
            ended = SUCCEEDED if installed else FAILED
            require(Transition(INSTALL_ENTITY, INSTALLING, ended, Facts(now=now)))
            if installed:
                installs_ended.append(
                    {**key, "to": SUCCEEDED, "at": now, "err": None, "retry": None, "ok": healthy}
                )
                if machine is not None:
                    if restarted:
                        self._emit(machine, row.release, row.kind, "restart", now, healthy=healthy)
                    self._emit(machine, row.release, row.kind, "end", now, healthy=healthy)
            else:
                retry = now
                if machine is not None:
                    closing, _ = windows.lookup(machine)
                    retry = closing or now
                installs_ended.append(
                    {**key, "to": FAILED, "at": now, "err": error, "retry": retry, "ok": healthy}
                )
                if machine is not None:
                    self._emit(machine, row.release, row.kind, "fail", now, healthy=healthy)
            if row.batch is not None:
                batches.add(row.batch)
        if reverts_ended:
            conn.execute(_REVERT_ENDED, reverts_ended)
        if installs_ended:
            conn.execute(_INSTALL_ENDED, installs_ended)
        for batch in batches:
            self._maybe_bake(conn, batch, now)

    def _maybe_bake(self, conn: Connection, batch: int, now: datetime) -> None:
        counts = Counter(
            state
            for (state,) in conn.execute(
                select(rollout_installs.c.state).where(rollout_installs.c.batch == batch)
            )
        )
        facts = Facts(now=now, installs_open=counts[INSTALLING])
        if allowed(Transition(BATCH, INSTALLING, BAKING, facts)):
            conn.execute(
                update(rollout_batches)
                .where(rollout_batches.c.id == batch, rollout_batches.c.state == INSTALLING)
                .values(state=BAKING, installed=now, failed=counts[FAILED])
            )

    # --- 2. judge -----------------------------------------------------------------------------

    def _judge(self, conn: Connection, now: datetime) -> list[datetime]:
        """Judge batches that have baked; halt rollouts past the gate. Future bake ends."""
        wake: list[datetime] = []
        rows = conn.execute(
            select(
                rollout_batches,
                rollouts.c.settings,
                rollouts.c.release,
                rollouts.c.state.label("rollout_state"),
            )
            .join(rollouts, rollouts.c.id == rollout_batches.c.rollout)
            .where(rollout_batches.c.state == BAKING)
        ).all()
        for row in rows:
            settings = Settings.from_json(row.settings)
            bake_until = row.installed + settings.bake
            if now < bake_until:
                wake.append(bake_until)
                continue
            members = [
                r.machine
                for r in conn.execute(
                    select(rollout_installs.c.machine).where(
                        rollout_installs.c.batch == row.id,
                        rollout_installs.c.state.in_((SUCCEEDED, REVERTING, REVERTED)),
                    )
                )
            ]
            found = list(_fleet.enrolled(conn, ids=members, health=True)) if members else []
            sick = [m for m in found if not m.running(now) or m.health == "Unhealthy"]
            sick_ids = {m.id for m in sick}
            if found:
                conn.execute(
                    _INSTALL_HEALTH,
                    [{"r": row.rollout, "m": m.id, "ok": m.id not in sick_ids} for m in found],
                )
            size = row.size
            if row.number == 1:
                limit = settings.first_batch_unhealthy
            else:
                limit = math.floor(size * settings.unhealthy_percent / 100)
            ended = {
                str(state): int(count)
                for state, count in conn.execute(_INSTALLS_ENDED, {"r": row.rollout})
            }
            facts = Facts(
                now=now,
                bake_until=bake_until,
                unhealthy=len(sick),
                size=size,
                limit=limit,
                failed=ended.get(FAILED, 0),
                finished=sum(ended.values()),
                failed_installs=settings.failed_installs,
                failed_percent=settings.failed_percent,
            )
            if allowed(Transition(BATCH, BAKING, PASSED, facts)):
                conn.execute(
                    update(rollout_batches)
                    .where(rollout_batches.c.id == row.id)
                    .values(state=PASSED, judged=now, unhealthy=len(sick))
                )
                self._region_wake.pop((row.rollout, row.region), None)
                continue
            where = f"batch {row.number} in {row.region} ({row.ring}, zone {row.zone or 'none'})"
            if len(sick) > limit:
                names = [m.id for m in sick]
                reason = (
                    f"{where}: {len(sick)} of {size} machines unhealthy after installing "
                    f"{row.release} (at most {limit} tolerated): "
                )
            else:
                names = list(conn.execute(_FAILED_MACHINES, {"r": row.rollout}).scalars())
                reason = (
                    f"{where}: {facts.failed} of the {facts.finished} installs of {row.release} "
                    f"that ended failed (more than {settings.failed_percent:g} % tolerated "
                    f"once {settings.failed_installs} have): "
                )
            reason += ", ".join(sorted(n.rsplit("/", 1)[-1] for n in names)[:5])
            conn.execute(
                update(rollout_batches)
                .where(rollout_batches.c.id == row.id)
                .values(state=FAILED, judged=now, unhealthy=len(sick), reason=reason)
            )
            if row.rollout_state in (ACTIVE, PAUSED):
                self._halt(conn, row.rollout, row.rollout_state, row.release, reason, now)
        return wake

    def _halt(
        self, conn: Connection, rollout: int, state: str, release: str, reason: str, now: datetime
    ) -> None:
        require(
            Transition(ROLLOUT, state, HALTED, Facts(now=now, rollout_state=state, reason=reason))
        )
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout)
            .values(state=HALTED, reason=reason, updated=now)
        )
        conn.execute(
            update(releases).where(releases.c.kb == release).values(halted=now, halt_reason=reason)
        )
        self._notice(
            conn,
            now,
            "warning",
            f"rollout of {release} halted",
            f"The health gate halted the rollout of {release}: {reason}. Hotpatches it "
            "installed are being reverted.",
            rollout=rollout,
            release=release,
        )

    # --- 3. open ------------------------------------------------------------------------------

    def _open(self, conn: Connection, now: datetime, settings: Settings, found: Releases) -> None:
        """Open a rollout for every newly available automatic release; supersede older ones."""
        existing = {
            row.release: row
            for row in conn.execute(select(rollouts.c.id, rollouts.c.release, rollouts.c.state))
        }
        for row in existing.values():
            release = found.get(row.release)
            if (
                row.state in (ACTIVE, PAUSED, COMPLETED)
                and release is not None
                and release.superseded_by
            ):
                self._supersede(conn, row.id, row.state, release, now)
        for release in found.by_kb.values():
            if release.kb in existing or release.available > now:
                continue
            if release.kind not in (HOTPATCH, "planned-baseline", "unplanned-baseline"):
                continue
            facts = Facts(
                now=now,
                classifications=release.classifications,
                release_halted=release.halted is not None,
                superseded_by=release.superseded_by,
            )
            if not allowed(Transition(ROLLOUT, None, ACTIVE, facts)):
                continue
            counts = self._region_counts(conn, release.product)
            partners = settings.partners
            phases = plan_phases(counts, partners)
            rollout = _inserted(
                conn,
                insert(rollouts).values(
                    release=release.kb,
                    product=release.product,
                    state=ACTIVE,
                    phases=phases,
                    phase=0,
                    settings=settings.to_json(),
                    batches=0,
                    published=release.published,
                    deadline=release.published + settings.deadline,
                    created=now,
                    updated=now,
                    reason=None,
                ),
            )
            for number, regions in enumerate(phases):
                for region in regions:
                    _add_region(conn, rollout, region, number)
            log.info(
                "rollout %d of %s opened: %d phases over %d regions",
                rollout,
                release.kb,
                len(phases),
                sum(len(p) for p in phases),
            )

    def _subscription_sizes(self, conn: Connection) -> dict[str, int]:
        """Enrolled machines per subscription, counted again only when the fleet changed.

        Counting them is a join over the whole fleet (18 ms at 10,000 machines) and batches
        start far more often than machines come and go, so the count is kept with what it
        was taken from: how many machines and enrolled agents there are and the newest
        machine. A machine created, deleted or enrolled changes one of those.
        """
        version = tuple(
            conn.execute(
                select(
                    select(func.count()).select_from(fleet_machines).scalar_subquery(),
                    select(func.max(fleet_machines.c.created)).scalar_subquery(),
                    select(func.count()).select_from(machines).scalar_subquery(),
                )
            ).one()
        )
        if self._sizes is None or self._sizes[0] != version:
            self._sizes = (version, _fleet.subscription_sizes(conn))
        return self._sizes[1]

    def _region_counts(self, conn: Connection, product: str) -> dict[str, int]:
        found = self._counts.get(product)
        if found is None:
            found = self._counts[product] = _fleet.region_counts(conn, product)
        return found

    def _supersede(
        self, conn: Connection, rollout: int, state: str, release: ReleaseLine, now: datetime
    ) -> None:
        reason = f"superseded by {release.superseded_by}, which includes it"
        require(
            Transition(
                ROLLOUT, state, SUPERSEDED, Facts(now=now, rollout_state=state, reason=reason)
            )
        )
        conn.execute(
            update(rollouts)
            .where(rollouts.c.id == rollout)
            .values(state=SUPERSEDED, reason=reason, updated=now)
        )

    # --- operator actions ---------------------------------------------------------------------

    def change(self, rollout: int, to_state: str, *, reason: str | None = None) -> dict[str, Any]:
        """Pause, resume or cancel ``rollout`` for an operator; its new row.

        ``TransitionRefused`` says why it may not change; ``LookupError`` if it is unknown.
        """
        now = self.clock()
        with self.engine.begin() as conn:
            serialized(conn, LOCK)
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout)).first()
            if row is None:
                raise LookupError(f"there is no rollout {rollout}")
            halted = conn.execute(
                select(releases.c.halted).where(releases.c.kb == row.release)
            ).scalar()
            facts = Facts(
                now=now, rollout_state=row.state, reason=reason, release_halted=halted is not None
            )
            require(Transition(ROLLOUT, row.state, to_state, facts))
            conn.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout)
                .values(
                    state=to_state,
                    updated=now,
                    reason=reason if to_state == CANCELED else row.reason,
                )
            )
            if to_state == CANCELED:
                conn.execute(
                    update(rollout_batches)
                    .where(
                        rollout_batches.c.rollout == rollout,
                        rollout_batches.c.state.in_(BATCH_OPEN),
                    )
                    .values(state=CANCELED, judged=now, reason=reason)
                )
            self._region_wake = {k: v for k, v in self._region_wake.items() if k[0] != rollout}
            changed = conn.execute(select(rollouts).where(rollouts.c.id == rollout)).one()
            return dict(changed._mapping)

    # --- revert after a halt -------------------------------------------------------------------

    def _revert(self, conn: Connection, now: datetime) -> None:
        """Queue the revert of every hotpatch a halted rollout installed."""
        halted = list(
            conn.execute(select(rollouts.c.id).where(rollouts.c.state == HALTED)).scalars()
        )
        if not halted:
            return
        rows = conn.execute(
            select(
                rollout_installs.c.rollout, rollout_installs.c.machine, rollout_installs.c.kind
            ).where(
                rollout_installs.c.rollout.in_(halted),
                rollout_installs.c.state == SUCCEEDED,
                rollout_installs.c.kind.in_((HOTPATCH, RESTART)),
            )
        ).all()
        if not rows:
            return
        busy = _busy(conn)
        for row in rows:
            machine = _fleet.machine(conn, row.machine)
            if machine is None or not machine.running(now) or row.machine in busy:
                continue  # tried again next pass
            facts = Facts(now=now, kind=row.kind, rollout_state=HALTED)
            if not allowed(Transition(INSTALL_ENTITY, SUCCEEDED, REVERTING, facts)):
                continue
            work = _dispatch.queue_revert(conn, row.machine, now, rollout=row.rollout)
            busy.add(row.machine)
            conn.execute(
                update(rollout_installs)
                .where(
                    rollout_installs.c.rollout == row.rollout,
                    rollout_installs.c.machine == row.machine,
                )
                .values(state=REVERTING, work=work)
            )

    # --- 4. rollouts: rings, phases, dispatch --------------------------------------------------

    def _rollouts(
        self, conn: Connection, now: datetime, found: Releases, fleet_settings: Settings
    ) -> list[datetime]:
        wake: list[datetime] = []
        self._reopen(conn, now, found)
        active = conn.execute(
            select(rollouts).where(rollouts.c.state == ACTIVE).order_by(rollouts.c.id)
        ).all()
        if not active:
            return wake
        windows = _WindowCache(now, fleet_settings.fleet_window)
        flight = _InFlight.read(conn)
        for row in active:
            release = found.get(row.release)
            if release is None:
                continue
            settings = Settings.from_json(row.settings)
            wake.extend(self._rollout(conn, now, row, release, found, settings, windows, flight))
        return wake

    def _still_away(self, conn: Connection, key: tuple[int, str], now: datetime) -> bool:
        """Whether a region woken only to look for its switched-off machines may sleep on.

        When none of them is back and nothing else is due, the region is not read again:
        its wake moves ``OFF_RECHECK`` on, as reading it would have found.
        """
        found = self._away.get(key)
        if found is None or now >= found[1]:
            return False
        away, rest = found
        back = conn.execute(
            select(presence.c.resource_id)
            .where(presence.c.resource_id.in_(sorted(away)), _fleet.heard_from(now))
            .limit(1)
        ).first()
        if back is not None:
            return False
        self._region_wake[key] = (min(rest, now + OFF_RECHECK), self._region_wake[key][1])
        return True

    def _reopen(self, conn: Connection, now: datetime, found: Releases) -> None:
        """Reopen completed rollouts whose release machines enrolled since still lack.

        Looked at every ``RECHECK`` (and on the first pass): a machine enrolled after its
        release's rollout completed gets the release all the same.
        """
        if self._reopened is not None and now - self._reopened < RECHECK:
            return
        self._reopened = now
        for row in conn.execute(select(rollouts).where(rollouts.c.state == COMPLETED)).all():
            release = found.get(row.release)
            if release is None or release.superseded_by or release.halted:
                continue
            remaining = sum(
                1
                for machine in _fleet.enrolled(
                    conn, where=[*found.candidates(release), _unsettled(row.id)]
                )
                if found.needs(release, machine) is not None
            )
            facts = Facts(now=now, rollout_state=COMPLETED, remaining=remaining)
            if allowed(Transition(ROLLOUT, COMPLETED, ACTIVE, facts)):
                conn.execute(
                    update(rollouts)
                    .where(rollouts.c.id == row.id)
                    .values(state=ACTIVE, updated=now)
                )
                self._regions_checked.pop(row.id, None)
                log.info(
                    "rollout %d of %s reopened: %d machines lack it", row.id, row.release, remaining
                )

    def _rollout(
        self,
        conn: Connection,
        now: datetime,
        row: Any,
        release: ReleaseLine,
        found: Releases,
        settings: Settings,
        windows: _WindowCache,
        flight: _InFlight,
    ) -> list[datetime]:
        wake: list[datetime] = []
        regions = {
            r.region: r
            for r in conn.execute(
                select(rollout_regions).where(rollout_regions.c.rollout == row.id)
            )
        }
        phases: list[list[str]] = [list(p) for p in row.phases]
        newcomers: list[str] = []
        checked = self._regions_checked.get(row.id)
        if checked is None or now - checked >= self.idle:
            self._regions_checked[row.id] = now
            newcomers = sorted(set(self._region_counts(conn, release.product)) - set(regions))
        if newcomers:  # regions enrolled since the plan: a phase of their own, at the end
            partners = settings.partners
            for extra in plan_phases({r: 1 for r in newcomers}, partners):
                for added in extra:
                    _add_region(conn, row.id, added, len(phases))
                phases.append(extra)
            conn.execute(
                update(rollouts).where(rollouts.c.id == row.id).values(phases=phases, updated=now)
            )
            regions = {
                r.region: r
                for r in conn.execute(
                    select(rollout_regions).where(rollout_regions.c.rollout == row.id)
                )
            }
        phase = row.phase
        partners = settings.partners
        remaining = 0
        finished: set[str] = set()
        for region_name, region in sorted(regions.items(), key=lambda kv: (kv[1].phase, kv[0])):
            if region.phase > phase:
                remaining += 1  # not started: counted as outstanding
                continue
            key = (row.id, region_name)
            cached = self._region_wake.get(key)
            if cached is not None and now >= cached[0] and self._still_away(conn, key, now):
                cached = self._region_wake[key]
            if cached is not None and now < cached[0]:
                wake.append(cached[0])
                remaining += cached[1]
                continue
            known = self._remaining.get(key)
            if known is not None and _blocked(region_name, row.id, flight, partners):
                remaining += known  # woken when the batch in its way is judged
                continue
            self._region_wake.pop(key, None)
            self.times.count("region looks")
            outcome = self._region(
                conn, now, row, region, release, found, settings, windows, flight, partners
            )
            remaining += outcome.remaining
            self._remaining[key] = outcome.remaining
            if outcome.done:
                finished.add(region_name)
            if outcome.wake is not None:
                self._region_wake[key] = (outcome.wake, outcome.remaining)
                wake.append(outcome.wake)
            if outcome.away and outcome.rest is not None:
                self._away[key] = (outcome.away, outcome.rest)
            else:
                self._away.pop(key, None)
        # phases advance when every region of the current one is done
        while phase < len(phases):
            if not all(
                regions[r].done is not None or r in finished for r in phases[phase] if r in regions
            ):
                break
            phase += 1
        if phase != row.phase:
            conn.execute(
                update(rollouts).where(rollouts.c.id == row.id).values(phase=phase, updated=now)
            )
            wake.append(now)
        if phase >= len(phases):
            open_installs = conn.execute(
                select(func.count())
                .select_from(rollout_installs)
                .where(rollout_installs.c.rollout == row.id, rollout_installs.c.state == INSTALLING)
            ).scalar_one()
            facts = Facts(
                now=now, rollout_state=ACTIVE, remaining=remaining, installs_open=int(open_installs)
            )
            if allowed(Transition(ROLLOUT, ACTIVE, COMPLETED, facts)):
                conn.execute(
                    update(rollouts)
                    .where(rollouts.c.id == row.id)
                    .values(state=COMPLETED, updated=now)
                )
                log.info("rollout %d of %s completed", row.id, row.release)
        return wake

    def _region(
        self,
        conn: Connection,
        now: datetime,
        rollout: Any,
        region: Any,
        release: ReleaseLine,
        found: Releases,
        settings: Settings,
        windows: _WindowCache,
        flight: _InFlight,
        partners: Mapping[str, frozenset[str]],
    ) -> _RegionOutcome:
        """Advance one region's ring and dispatch its next batch, if it may have one."""
        # the machines that lack the release and have no install of it running or done
        pending: list[tuple[Machine, str]] = []
        for machine in _fleet.enrolled(
            conn, region=region.region, where=[*found.candidates(release), _unsettled(rollout.id)]
        ):
            kind = found.needs(release, machine)
            if kind is not None:
                pending.append((machine, kind))
        installs = (
            {
                r.machine: _Install(r.state, r.retry_after)
                for r in conn.execute(
                    select(
                        rollout_installs.c.machine,
                        rollout_installs.c.state,
                        rollout_installs.c.retry_after,
                    )
                    .join(fleet_machines, fleet_machines.c.id == rollout_installs.c.machine)
                    .where(
                        rollout_installs.c.rollout == rollout.id,
                        rollout_installs.c.state == FAILED,
                        fleet_machines.c.region == region.region,
                    )
                )
            }
            if pending
            else {}
        )
        ring, soak_until = region.ring, region.soak_until
        done = region.done is not None
        # the DevTest ring is over once every running DevTest target has had its try
        if ring == DEVTEST and rollout.id not in flight.rollouts_in(region.region):
            waiting = [
                m
                for m, _ in pending
                if m.environment == DEVTEST and m.running(now) and installs.get(m.id) is None
            ]
            if not waiting:
                tried = region.batches > 0
                ring = PRODUCTION
                soak_until = now + settings.soak if tried else now
                conn.execute(
                    update(rollout_regions)
                    .where(
                        rollout_regions.c.rollout == rollout.id,
                        rollout_regions.c.region == region.region,
                    )
                    .values(ring=ring, soak_until=soak_until)
                )
        if (
            ring == PRODUCTION
            and region.done is None
            and (rollout.id not in flight.rollouts_in(region.region))
        ):
            waiting = [m for m, _ in pending if m.running(now) and installs.get(m.id) is None]
            if not waiting and (soak_until is None or now >= soak_until):
                done = True
                conn.execute(
                    update(rollout_regions)
                    .where(
                        rollout_regions.c.rollout == rollout.id,
                        rollout_regions.c.region == region.region,
                    )
                    .values(done=now)
                )
        outcome = _RegionOutcome(remaining=len(pending), done=done)
        if not pending:
            soaking = soak_until is not None and soak_until > now and not done
            outcome.wake = soak_until if soaking else now + RECHECK
            return outcome
        if _blocked(region.region, rollout.id, flight, partners):
            return outcome  # woken when that batch ends
        eligible: list[Machine] = []
        kinds: dict[str, str] = {}
        later: list[datetime] = []
        away: list[str] = []
        min_window, phase_open = settings.min_window, region.phase <= rollout.phase
        for machine, kind in pending:
            current = installs.get(machine.id)
            facts = Facts(
                now=now,
                machine=machine,
                rollout_state=ACTIVE,
                window_left=windows.left(machine),
                min_window=min_window,
                retry_after=current.retry_after if current else None,
                ring=ring,
                soak_until=soak_until,
                phase_open=phase_open,
                busy=machine.id in flight.busy,
            )
            if allowed(
                Transition(INSTALL_ENTITY, current.state if current else None, INSTALLING, facts)
            ):
                eligible.append(machine)
                kinds[machine.id] = kind
                continue
            closing, opening = windows.lookup(machine)
            retry = current.retry_after if current is not None else None
            later.append(next_chance(machine, opening, retry, soak_until))
            if closing is not None and not machine.running(now):
                away.append(machine.id)  # back within its window: patch it then
        if not eligible:
            if not done and soak_until is not None:
                later.append(soak_until)  # the region may be done once the soak is over
            outcome.rest = min([t for t in later if t > now] + [now + RECHECK])
            outcome.wake = min(outcome.rest, now + OFF_RECHECK) if away else outcome.rest
            outcome.away = frozenset(away)
            return outcome
        draft = Draft(
            size_limit=2 ** min(region.batches, 20),
            set_percent=settings.set_percent,
            small_set=settings.small_set,
            subscription_percent=settings.subscription_percent,
            set_sizes=_fleet.set_sizes(
                conn, sorted({m.availability_set for m in eligible if m.availability_set})
            ),
            subscription_sizes=self._subscription_sizes(conn),
            set_domains=dict(flight.set_domains),
            set_busy=dict(flight.set_busy),
            subscription_busy=dict(flight.subscription_busy),
        )
        chosen = compose(eligible, draft)
        if not chosen:
            outcome.wake = now + timedelta(minutes=5)
            return outcome
        self._start_batch(
            conn, now, rollout, region, release, chosen, kinds, installs, windows, ring, flight
        )
        return outcome

    def _start_batch(
        self,
        conn: Connection,
        now: datetime,
        rollout: Any,
        region: Any,
        release: ReleaseLine,
        chosen: list[Machine],
        kinds: dict[str, str],
        installs: dict[str, _Install],
        windows: _WindowCache,
        ring: str,
        flight: _InFlight,
    ) -> None:
        number = (
            int(
                conn.execute(
                    select(rollouts.c.batches).where(rollouts.c.id == rollout.id)
                ).scalar_one()
            )
            + 1
        )
        batch = _inserted(
            conn,
            insert(rollout_batches).values(
                rollout=rollout.id,
                number=number,
                region=region.region,
                ring=ring,
                zone=chosen[0].zone,
                state=INSTALLING,
                size=len(chosen),
                failed=0,
                unhealthy=0,
                started=now,
                installed=None,
                judged=None,
                reason=None,
            ),
        )
        conn.execute(
            update(rollouts).where(rollouts.c.id == rollout.id).values(batches=number, updated=now)
        )
        conn.execute(
            update(rollout_regions)
            .where(
                rollout_regions.c.rollout == rollout.id, rollout_regions.c.region == region.region
            )
            .values(batches=rollout_regions.c.batches + 1)
        )
        durations = [
            (machine, min(windows.left(machine) or timedelta(minutes=30), timedelta(hours=4)))
            for machine in chosen
        ]
        works = _dispatch.queue_installs(conn, durations, release.kb, now, rollout=rollout.id)
        started, retried = [], []
        for machine, work in zip(chosen, works, strict=True):
            values = dict(
                batch=batch,
                state=INSTALLING,
                kind=kinds[machine.id],
                work=work,
                started=now,
                ended=None,
                retry_after=None,
                error=None,
                healthy=None,
            )
            if installs.get(machine.id) is None:
                started.append(
                    {"rollout": rollout.id, "machine": machine.id, "attempts": 1, **values}
                )
            else:
                retried.append({"r": rollout.id, "m": machine.id, **_prefixed(values)})
        if started:
            conn.execute(_INSTALL_STARTED, started)
        if retried:
            conn.execute(_INSTALL_RETRIED, retried)
        for machine in chosen:
            flight.take(machine, rollout.id)
            self._emit(
                machine,
                release.kb,
                kinds[machine.id],
                "start",
                now,
                healthy=machine.health != "Unhealthy",
            )
        flight.region_open[region.region] = batch
        self.times.count("batches started")
        self.times.count("installs started", len(chosen))

    # --- 5. upgrades, assessments, pruning -----------------------------------------------------

    def _upgrades(self, conn: Connection, now: datetime, settings: Settings) -> None:
        """Queue scheduled stack upgrades that are due, on running machines in their window."""
        rows = conn.execute(
            select(machines.c.resource_id).where(
                machines.c.upgrade_requested.is_not(None), machines.c.upgrade_requested <= now
            )
        ).all()
        if not rows:
            return
        windows = _WindowCache(now, settings.fleet_window)
        busy = _busy(conn)
        for machine in _fleet.enrolled(conn, ids=[row.resource_id for row in rows]):
            if not machine.running(now) or machine.id in busy:
                continue
            left = windows.left(machine)
            if left is None or left < settings.min_window:
                continue
            model = vm_by_id(conn, machine.id)
            if model is None:
                continue
            try:
                payload = upgrade_payload(machine_document(conn, model))
            except ApiError as exc:  # the machine can no longer be upgraded: say so once
                self._notice(
                    conn,
                    now,
                    "warning",
                    "upgrade not possible",
                    f"The scheduled upgrade of {machine.id} cannot run: {exc}",
                )
                conn.execute(
                    update(machines)
                    .where(machines.c.resource_id == machine.id)
                    .values(upgrade_requested=None)
                )
                continue
            _dispatch.queue_upgrade(conn, machine.id, payload, now)
            conn.execute(
                update(machines)
                .where(machines.c.resource_id == machine.id)
                .values(upgrade_requested=None)
            )

    def _assess(
        self, conn: Connection, now: datetime, settings: Settings, found: Releases
    ) -> list[datetime]:
        """Run an assessment cycle when one is due; when the next cycle is."""
        cycle = timedelta(minutes=settings.assess_cycle_minutes)
        if self._assessed is not None and now < self._assessed + cycle:
            return [self._assessed + cycle]
        self._assessed = now
        self.times.count("assessment cycles")
        self.times.count("machines assessed", run_cycle(conn, now, settings, found))
        return [now + cycle]

    def _prune(self, conn: Connection, now: datetime) -> None:
        """Drop history, finished work and operations older than what is kept (hourly)."""
        if self._pruned is not None and now - self._pruned < timedelta(hours=1):
            return
        self._pruned = now
        cutoff = now - HISTORY_KEPT
        conn.execute(delete(patch_history).where(patch_history.c.started < cutoff))
        conn.execute(
            delete(work_items)
            .where(
                work_items.c.state.in_((_queue.DONE, _queue.FAILED)),
                work_items.c.updated < cutoff,
            )
            .where(  # an install still to be settled reads its work's outcome
                work_items.c.id.not_in(
                    select(rollout_installs.c.work).where(
                        rollout_installs.c.work.is_not(None),
                        rollout_installs.c.state.in_((INSTALLING, REVERTING)),
                    )
                )
            )
        )
        conn.execute(
            delete(operations).where(operations.c.ended.is_not(None), operations.c.ended < cutoff)
        )


@dataclass
class _RegionOutcome:
    remaining: int
    done: bool = False
    wake: datetime | None = None
    #: switched-off machines whose window is open, and when the region has anything else
    away: frozenset[str] = frozenset()
    rest: datetime | None = None


@dataclass
class _InFlight:
    """What is being installed right now, across every rollout, for the admission rules."""

    busy: set[str]
    region_open: dict[str, int]
    rollout_regions: dict[int, set[str]]
    set_domains: dict[str, int]
    set_busy: dict[str, int]
    subscription_busy: dict[str, int]

    @classmethod
    def read(cls, conn: Connection) -> _InFlight:
        """The open batches and the installs in flight, as they are now."""
        region_open: dict[str, int] = {}
        rollout_regions_: dict[int, set[str]] = {}
        for row in conn.execute(
            select(rollout_batches.c.id, rollout_batches.c.rollout, rollout_batches.c.region).where(
                rollout_batches.c.state.in_(BATCH_OPEN)
            )
        ):
            region_open[row.region] = row.id
            rollout_regions_.setdefault(row.rollout, set()).add(row.region)
        flight = cls(
            busy=_busy(conn),
            region_open=region_open,
            rollout_regions=rollout_regions_,
            set_domains={},
            set_busy={},
            subscription_busy={},
        )
        for row in conn.execute(
            select(
                fleet_machines.c.subscription,
                fleet_machines.c.availability_set,
                fleet_machines.c.update_domain,
            )
            .join(rollout_installs, rollout_installs.c.machine == fleet_machines.c.id)
            .where(rollout_installs.c.state == INSTALLING)
        ):
            flight.subscription_busy[row.subscription] = (
                flight.subscription_busy.get(row.subscription, 0) + 1
            )
            if row.availability_set:
                flight.set_busy[row.availability_set] = (
                    flight.set_busy.get(row.availability_set, 0) + 1
                )
                flight.set_domains[row.availability_set] = row.update_domain or 0
        return flight

    def rollouts_in(self, region: str) -> set[int]:
        """The rollouts with a batch open in ``region``."""
        return {r for r, regions in self.rollout_regions.items() if region in regions}

    def take(self, machine: Machine, rollout: int) -> None:
        """Count ``machine`` as in flight for ``rollout``."""
        self.busy.add(machine.id)
        self.rollout_regions.setdefault(rollout, set()).add(machine.region)
        sub = machine.subscription
        self.subscription_busy[sub] = self.subscription_busy.get(sub, 0) + 1
        if machine.availability_set:
            key = machine.availability_set
            self.set_busy[key] = self.set_busy.get(key, 0) + 1
            self.set_domains[key] = machine.update_domain or 0


def _blocked(
    region: str, rollout: int, flight: _InFlight, partners: Mapping[str, frozenset[str]]
) -> bool:
    """Whether a batch is in flight in ``region`` (any rollout's) or in a paired region."""
    if region in flight.region_open:
        return True
    busy = flight.rollout_regions.get(rollout, set())
    return any(partner in busy for partner in partners.get(region, ()))


def next_chance(
    machine: Machine, opening: datetime, retry_after: datetime | None, soak_until: datetime | None
) -> datetime:
    """When a machine the install rules refused may next be admitted.

    Its window's next ``opening``, but no earlier than the retry of a failed install
    (``retry_after``) and, for Production, than the end of its region's soak: a look
    before then would find it refused again.
    """
    chance = opening
    if retry_after is not None:
        chance = max(chance, retry_after)
    if machine.environment == PRODUCTION and soak_until is not None:
        chance = max(chance, soak_until)
    return chance


def _unsettled(rollout: int) -> ColumnElement[bool]:
    """Machines with no install of ``rollout`` running or done (a failed one may retry).

    A correlated ``NOT EXISTS`` is one primary-key probe per machine read, where ``NOT IN``
    would collect every install of the rollout, across all regions, on every look.
    """
    return ~exists().where(
        rollout_installs.c.rollout == rollout,
        rollout_installs.c.machine == fleet_machines.c.id,
        rollout_installs.c.state != FAILED,
    )


def _stale(conn: Connection, now: datetime) -> set[str]:
    """Machines with queued or leased work past its deadline or lease: it must be settled."""
    found = set()
    for row in conn.execute(
        select(
            work_items.c.machine, work_items.c.state, work_items.c.lease_until, work_items.c.payload
        ).where(work_items.c.state.in_(_queue.ACTIVE))
    ):
        lapsed = (
            row.state == _queue.LEASED and row.lease_until is not None and (row.lease_until < now)
        )
        deadline = (row.payload or {}).get("deadline")
        late = False
        if isinstance(deadline, str):
            try:
                late = datetime.fromisoformat(deadline.replace("Z", "+00:00")) < now
            except ValueError:
                late = False
        if lapsed or late:
            found.add(row.machine)
    return found


def _busy(conn: Connection, *, kind: str | None = None) -> set[str]:
    """Machines with agent work queued or running (of ``kind``, or any)."""
    query = select(work_items.c.machine).where(work_items.c.state.in_(_queue.ACTIVE))
    if kind is not None:
        query = query.where(work_items.c.kind == kind)
    return {row.machine for row in conn.execute(query)}


def _add_region(conn: Connection, rollout: int, region: str, phase: int) -> None:
    conn.execute(
        insert(rollout_regions).values(
            rollout=rollout,
            region=region,
            phase=phase,
            ring=DEVTEST,
            soak_until=None,
            done=None,
            batches=0,
        )
    )


def _read_install(outcome: dict[str, Any], kb: str) -> tuple[bool, bool, Any]:
    """Whether an install's outcome installed ``kb``, whether it restarted, and its error.

    Only a patch the agent lists as ``Installed`` counts; a machine that had the release
    already is found out by the next pass, which no longer counts it as a target.
    """
    output = outcome.get("output") if isinstance(outcome.get("output"), dict) else None
    if outcome.get("status") != "Succeeded" or output is None:
        return False, False, outcome.get("error")
    wanted = kb_digits(kb)
    patches = [p for p in output.get("patches") or [] if isinstance(p, dict)]
    mine = [p for p in patches if kb_digits(str(p.get("kbId", ""))) == wanted]
    restarted = output.get("rebootStatus") == "Completed"
    if mine and all(p.get("installationState") == "Installed" for p in mine):
        return True, restarted, None
    error = output.get("error") or {
        "code": "NotInstalled",
        "message": f"{kb} was not installed"
        + (": the maintenance window ran out" if output.get("maintenanceWindowExceeded") else ""),
    }
    return False, restarted, error
