"""The durable queue of work for node agents, over table ``agent_work``.

An item belongs to one machine (the lowercase id of its virtual machine) and moves
``queued`` → ``leased`` → ``done`` | ``failed``. A lease lasts ``LEASE`` unless the agent
renews it (its heartbeats do); an item whose lease lapsed goes back to ``queued`` once, and
fails the second time, so work held by an agent that died is retried exactly once.

Invariants:

- every function that reads or changes an item names the machine it is for, so an agent's
  credential reaches only its own machine's work;
- the functions take the caller's connection and never commit: the route owns the
  transaction, so an item and the operation it serves change together or not at all;
- an item's ``payload`` may carry ``deadline`` (ISO 8601): the time by which the work must
  be finished, after which its caller fails it (see ``overdue``).

``Notifier`` wakes this process's long-polling agents when work is queued for them; the
database stays the truth, so polls re-check it and work queued by another server process,
or before a restart, is found all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update

from pyhotpatch.storage._tables import work_items

#: how long a lease lasts before the item is handed out again
LEASE = timedelta(minutes=5)
#: how many times an item is leased before a lapsed lease fails it (the first, and one retry)
MAX_ATTEMPTS = 2
#: the most items one poll leases
BATCH = 10

QUEUED, LEASED, DONE, FAILED = "queued", "leased", "done", "failed"
ACTIVE = (QUEUED, LEASED)


@dataclass(frozen=True)
class WorkItem:
    """One row of the queue."""

    id: int
    machine: str
    operation: str | None
    kind: str
    payload: dict[str, Any]
    state: str
    lease_until: datetime | None
    attempts: int
    created: datetime
    result: dict[str, Any] | None
    updated: datetime
    #: who asked: ``auto`` (the orchestrator), ``on-demand`` (an operator), or None
    trigger: str | None = None

    @property
    def deadline(self) -> datetime | None:
        """When the work must be finished, if the payload says."""
        value = self.payload.get("deadline")
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    @property
    def finished(self) -> bool:
        """Whether the item is done or failed (and can no longer change)."""
        return self.state in (DONE, FAILED)

    def to_json(self) -> dict[str, Any]:
        """The agent protocol's representation of a leased item."""
        return {
            "id": self.id,
            "kind": self.kind,
            "operation": self.operation,
            "payload": self.payload,
            "leaseUntil": self.lease_until.isoformat() if self.lease_until else None,
        }

    def describe(self) -> dict[str, Any]:
        """The user-facing representation: what was asked, where it stands, how it ended."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "payload": self.payload,
            "result": self.result,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


def _item(row: Any) -> WorkItem:
    return WorkItem(
        id=row.id,
        machine=row.machine,
        operation=row.operation,
        kind=row.kind,
        payload=dict(row.payload),
        state=row.state,
        lease_until=row.lease_until,
        attempts=row.attempts,
        created=row.created,
        result=row.result,
        updated=row.updated,
        trigger=row.trigger,
    )


# statements run once per item, built once (a statement built per call costs more than it runs)
_INSERT = insert(work_items)
_INSERT_MANY = _INSERT.returning(work_items.c.id, sort_by_parameter_order=True)
_FINISH = (
    update(work_items)
    .where(work_items.c.id == bindparam("key"), work_items.c.state.in_(ACTIVE))
    .values(
        state=bindparam("to_state"),
        lease_until=None,
        updated=bindparam("at"),
        result=bindparam("outcome"),
    )
)


def enqueue(
    conn: Connection,
    machine: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    *,
    operation: str | None = None,
    trigger: str | None = None,
) -> int:
    """Queue work of ``kind`` for ``machine``; its id. ``trigger`` says who asked for it."""
    result = conn.execute(_INSERT, _queued(machine, kind, payload, now, operation, trigger))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def enqueue_many(
    conn: Connection,
    kind: str,
    items: Sequence[tuple[str, dict[str, Any], str | None]],
    now: datetime,
    *,
    trigger: str | None = None,
) -> list[int]:
    """Queue work of ``kind`` for each ``(machine, payload, operation)``; their ids, in order.

    One statement for them all: a batch of installs is queued as one write, not one per
    machine.
    """
    if not items:
        return []
    rows = [_queued(m, kind, payload, now, op, trigger) for m, payload, op in items]
    result = conn.execute(_INSERT_MANY, rows)
    return [int(key) for key in result.scalars()]


def _queued(
    machine: str,
    kind: str,
    payload: dict[str, Any],
    now: datetime,
    operation: str | None,
    trigger: str | None,
) -> dict[str, Any]:
    return {
        "machine": machine.lower(),
        "operation": operation,
        "kind": kind,
        "payload": payload,
        "state": QUEUED,
        "lease_until": None,
        "attempts": 0,
        "created": now,
        "updated": now,
        "result": None,
        "trigger": trigger,
    }


def get(
    conn: Connection, item_id: int, machine: str | None = None, *, for_update: bool = False
) -> WorkItem | None:
    """The item ``item_id``, if it exists (and belongs to ``machine`` when one is given)."""
    query = select(work_items).where(work_items.c.id == item_id)
    if machine is not None:
        query = query.where(work_items.c.machine == machine.lower())
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return _item(row) if row else None


def for_operation(conn: Connection, operation: str) -> WorkItem | None:
    """The item serving the ARM operation ``operation``, if any."""
    row = conn.execute(
        select(work_items).where(work_items.c.operation == operation).order_by(work_items.c.id)
    ).first()
    return _item(row) if row else None


def active(conn: Connection, machine: str) -> list[WorkItem]:
    """The machine's items that are queued or leased, oldest first."""
    rows = conn.execute(
        select(work_items)
        .where(work_items.c.machine == machine.lower(), work_items.c.state.in_(ACTIVE))
        .order_by(work_items.c.id)
    )
    return [_item(row) for row in rows]


def counts(conn: Connection, machine: str) -> dict[str, int]:
    """How many of the machine's items are queued and how many leased."""
    found = {QUEUED: 0, LEASED: 0}
    rows = conn.execute(
        select(work_items.c.state, func.count())
        .where(work_items.c.machine == machine.lower(), work_items.c.state.in_(ACTIVE))
        .group_by(work_items.c.state)
    )
    for state, number in rows:
        found[state] = int(number)
    return found


def ready(conn: Connection, machine: str, now: datetime) -> bool:
    """Whether a poll by ``machine`` would find something: queued work or a lapsed lease.

    A read only, so that idle long-polls cost one indexed query and no write.
    """
    row = conn.execute(
        select(work_items.c.id)
        .where(
            work_items.c.machine == machine.lower(),
            or_(
                work_items.c.state == QUEUED,
                and_(work_items.c.state == LEASED, work_items.c.lease_until < now),
            ),
        )
        .limit(1)
    ).first()
    return row is not None


def lease(
    conn: Connection,
    machine: str,
    now: datetime,
    *,
    limit: int = BATCH,
    lease_for: timedelta = LEASE,
) -> list[WorkItem]:
    """Lease the machine's queued items, oldest first, until ``now + lease_for``.

    Call ``lapse`` first so that items whose lease ran out are queued again (or failed).
    """
    query = (
        select(work_items.c.id)
        .where(work_items.c.machine == machine.lower(), work_items.c.state == QUEUED)
        .order_by(work_items.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = [row.id for row in conn.execute(query)]
    if not ids:
        return []
    conn.execute(
        update(work_items)
        .where(work_items.c.id.in_(ids))
        .values(
            state=LEASED,
            lease_until=now + lease_for,
            attempts=work_items.c.attempts + 1,
            updated=now,
        )
    )
    rows = conn.execute(select(work_items).where(work_items.c.id.in_(ids)).order_by("id"))
    return [_item(row) for row in rows]


def renew(conn: Connection, machine: str, now: datetime, *, lease_for: timedelta = LEASE) -> int:
    """Extend every live lease of the machine (its agent is alive); how many."""
    done = conn.execute(
        update(work_items)
        .where(
            work_items.c.machine == machine.lower(),
            work_items.c.state == LEASED,
            work_items.c.lease_until >= now,
        )
        .values(lease_until=now + lease_for, updated=now)
    )
    return int(done.rowcount)


def lapse(conn: Connection, now: datetime, machine: str | None = None) -> list[WorkItem]:
    """Requeue items whose lease ran out; fail those already retried. The failed ones.

    The caller fails whatever the returned items served (their operations).
    """
    where = [work_items.c.state == LEASED, work_items.c.lease_until < now]
    if machine is not None:
        where.append(work_items.c.machine == machine.lower())
    rows = conn.execute(select(work_items).where(*where).order_by(work_items.c.id)).all()
    exhausted = []
    for row in rows:
        if row.attempts < MAX_ATTEMPTS:
            conn.execute(
                update(work_items)
                .where(work_items.c.id == row.id, work_items.c.state == LEASED)
                .values(state=QUEUED, lease_until=None, updated=now)
            )
        else:
            result = {
                "status": "Failed",
                "error": {
                    "code": "LeaseExpired",
                    "message": f"The agent leased this work {row.attempts} times "
                    "and did not report a result.",
                },
                "expired": True,
            }
            changed = conn.execute(
                update(work_items)
                .where(work_items.c.id == row.id, work_items.c.state == LEASED)
                .values(state=FAILED, lease_until=None, updated=now, result=result)
            )
            if changed.rowcount:  # else its result came in meanwhile
                exhausted.append(_item(row))
    return exhausted


def overdue(conn: Connection, now: datetime, machine: str) -> list[WorkItem]:
    """The machine's unfinished items whose deadline has passed."""
    return [item for item in active(conn, machine) if item.deadline and item.deadline < now]


def finish(
    conn: Connection, item: WorkItem, state: str, result: dict[str, Any], now: datetime
) -> bool:
    """Mark an unfinished item ``done`` or ``failed`` with its result; False if it had finished."""
    if state not in (DONE, FAILED):
        raise ValueError(f"an item finishes done or failed, not {state!r}")
    changed = conn.execute(
        _FINISH, {"key": item.id, "to_state": state, "at": now, "outcome": result}
    )
    return bool(changed.rowcount)


class Notifier:
    """Wakes the long-polls of a machine, in this process, when work is queued for it.

    ``notify`` may be called from any thread (routes doing database work run in a pool);
    ``wait`` runs on the event loop.
    """

    def __init__(self) -> None:
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()

    async def wait(self, machine: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification; whether one came."""
        key = machine.lower()
        event = asyncio.Event()
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.setdefault(key, set()).add(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiters[key]

    def notify(self, machine: str) -> None:
        """Wake every poll of ``machine`` waiting now."""
        with self._lock:
            waiting = list(self._waiters.get(machine.lower(), ()))
        for loop, event in waiting:
            # a closed loop raises RuntimeError: nobody is waiting there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def waiting(self) -> int:
        """How many polls are waiting (for load estimates and tests)."""
        with self._lock:
            return sum(len(v) for v in self._waiters.values())
