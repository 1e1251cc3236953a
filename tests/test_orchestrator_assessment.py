"""The automatic assessment cycle, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, insert, select

from pyhotpatch.server.orchestrator._assessment import run_cycle
from pyhotpatch.server.orchestrator._releases import Releases
from pyhotpatch.server.orchestrator._settings import Settings
from pyhotpatch.storage import open_database
from pyhotpatch.storage._tables import fleet_machines, machines, patch_history, presence

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def _machine(
    conn: Connection, name: str, installation: object, *, seen: datetime, model: bool = True
) -> None:
    key = f"/subscriptions/s1/resourcegroups/g/providers/microsoft.compute/virtualmachines/{name}"
    if model:
        conn.execute(
            insert(fleet_machines).values(
                id=key,
                subscription="s1",
                region="eastus",
                time_zone="UTC",
                environment="Production",
                os_type="Windows",
                patch_mode="AutomaticByPlatform",
                assessment_mode="AutomaticByPlatform",
                hotpatch=True,
                product="p",
                created=NOW,
            )
        )
    conn.execute(
        insert(machines).values(
            resource_id=key,
            subscription="s1",
            enrolled=NOW,
            health={"status": "Healthy"},
            reported={},
            installation=installation,
            next_assessment=NOW - timedelta(minutes=1),
        )
    )
    conn.execute(insert(presence).values(resource_id=key, last_seen=seen))


def test_a_cycle_assesses_running_machines_due_and_says_which_await_a_restart(
    database_url: str,
) -> None:
    engine = open_database(database_url)
    try:
        with engine.begin() as conn:
            _machine(conn, "waiting", {"rebootStatus": "Required"}, seen=NOW)
            _machine(conn, "restarted", {"rebootStatus": "Completed"}, seen=NOW)
            _machine(conn, "never-installed", None, seen=NOW)
            _machine(conn, "off", None, seen=NOW - timedelta(hours=2))
            _machine(conn, "deleted", None, seen=NOW, model=False)  # its model is gone
        with engine.begin() as conn:
            assert run_cycle(conn, NOW, Settings(), Releases.read(conn)) == 3
        with engine.connect() as conn:
            found = {
                row.resource_id.rsplit("/", 1)[-1]: row for row in conn.execute(select(machines))
            }
            history = conn.execute(select(patch_history)).all()
        pending = {
            name: row.assessment["rebootPending"] for name, row in found.items() if row.assessment
        }
        assert pending == {"waiting": True, "restarted": False, "never-installed": False}
        assert found["off"].assessment is None  # assessed at the first cycle after it is back
        assert found["waiting"].next_assessment == NOW + timedelta(hours=24)
        assert found["deleted"].assessment is None  # not assessed: looked at again in a day
        assert found["deleted"].next_assessment == NOW + timedelta(days=1)
        assert len(history) == 3
        for entry in history:  # the history holds what the machine shows, written at once
            shown = found[entry.machine.rsplit("/", 1)[-1]].assessment
            assert (entry.kind, entry.status, entry.operation) == ("assessment", "Succeeded", None)
            assert entry.started == entry.ended == NOW
            assert {**entry.result, "lastModifiedTime": shown["lastModifiedTime"]} == shown
        with engine.begin() as conn:  # nobody is due any more
            assert run_cycle(conn, NOW, Settings(), Releases.read(conn)) == 0
    finally:
        engine.dispose()
