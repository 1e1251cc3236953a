"""What the orchestrator prunes after 30 days, and what it keeps, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, insert, select

from pyhotpatch.clock import ManualClock
from pyhotpatch.server import _queue
from pyhotpatch.server.orchestrator._orchestrator import Orchestrator
from pyhotpatch.storage import open_database
from pyhotpatch.storage._tables import patch_history, rollout_installs, work_items

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=31)


def _work(conn: Connection, machine: str, state: str, updated: datetime) -> int:
    key = conn.execute(
        insert(work_items).values(
            machine=machine,
            kind="installPatches",
            payload={},
            state=state,
            attempts=1,
            created=updated,
            updated=updated,
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def _install(conn: Connection, machine: str, state: str, work: int) -> None:
    conn.execute(
        insert(rollout_installs).values(
            rollout=1,
            machine=machine,
            state=state,
            kind="hotpatch",
            attempts=1,
            work=work,
            started=OLD,
        )
    )


def test_finished_work_and_history_go_after_30_days_unless_an_install_awaits_them(
    database_url: str,
) -> None:
    engine = open_database(database_url)
    try:
        with engine.begin() as conn:
            settled = _work(conn, "m1", _queue.DONE, OLD)
            _install(conn, "m1", "succeeded", settled)
            awaited = _work(conn, "m2", _queue.DONE, OLD)
            _install(conn, "m2", "installing", awaited)  # the orchestrator was away: settle it
            recent = _work(conn, "m3", _queue.DONE, NOW - timedelta(days=29))
            running = _work(conn, "m4", _queue.LEASED, OLD)
            for started in (OLD, NOW - timedelta(days=1)):
                conn.execute(
                    insert(patch_history).values(
                        machine="m1",
                        kind="assessment",
                        started=started,
                        status="Succeeded",
                        result={},
                    )
                )
        with engine.begin() as conn:
            Orchestrator(engine, ManualClock(NOW))._prune(conn, NOW)
        with engine.connect() as conn:
            kept = set(conn.execute(select(work_items.c.id)).scalars())
            history = conn.execute(select(patch_history.c.started)).scalars().all()
        assert kept == {awaited, recent, running}
        assert history == [NOW - timedelta(days=1)]
    finally:
        engine.dispose()
