"""The node agents' protocol: enrolment, heartbeats, long-polled work, results, history.

Most tests use a real server over HTTPS and simulated agents. Those that need time to pass
(a stale agent, deadlines, lapsed leases, history windows) run the server in-process on a
``ManualClock``. The queue and the heartbeat backoff are also tested directly, the queue
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from sqlalchemy import insert, select

from arm import OTHER_SUB, SUB, Arm
from pyhotpatch.clock import ManualClock
from pyhotpatch.server import _queue
from pyhotpatch.server._agent_routes import Backoff, HeartbeatWriter
from pyhotpatch.storage import open_database
from pyhotpatch.storage._tables import audit, machines, presence
from servers import clocked_server
from sim_agent import (
    SimulatedAgent,
    create_group,
    create_vm,
    finish,
    patch,
    register_compute,
    vm_body,
)

GROUP = "agents-rg"
API = "2024-11-01"


def _patches() -> list[dict[str, Any]]:
    return [
        patch("KB5041160", classifications=("Security",)),
        patch("KB890830", classifications=("UpdateRollUp",)),
    ]


@pytest.fixture(scope="module")
def world(arm: Arm) -> Arm:
    for sub in (SUB, OTHER_SUB):
        register_compute(arm, sub)
        create_group(arm, sub, GROUP)
    return arm


def _vm(arm: Arm, subscription: str = SUB) -> tuple[str, str]:
    name = f"vm-{uuid.uuid4().hex[:8]}"
    return name, create_vm(arm, subscription, GROUP, name)


def _vm_path(name: str, subscription: str = SUB) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines/{name}"


def _assess(client: httpx.Client, name: str) -> httpx.Response:
    return client.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})


# --- enrolment ----------------------------------------------------------------------------------


def test_enrolment_needs_a_writer_of_the_machine_s_subscription(world: Arm) -> None:
    name, vm_id = _vm(world)
    body = {"machine": vm_id, "agentVersion": "1.0", "reported": {"image": "demo"}}
    with world.http(world.token("Reader")) as reader:
        refused = reader.post("/agent/enroll", json=body)
        assert (
            refused.status_code == 403 and refused.json()["error"]["code"] == "AuthorizationFailed"
        )
    with world.http(world.token("Owner", OTHER_SUB)) as stranger:
        assert stranger.post("/agent/enroll", json=body).status_code == 403
    with world.http(world.token("Contributor")) as contributor:
        missing = contributor.post(
            "/agent/enroll", json={**body, "machine": vm_id.replace(name, "nope")}
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"
        bad = contributor.post("/agent/enroll", json={**body, "machine": "/not/a/vm"})
        assert bad.status_code == 400 and bad.json()["error"]["target"] == "machine"
        assert contributor.post("/agent/enroll", json=[]).status_code == 400
        made = contributor.post("/agent/enroll", json={**body, "machine": vm_id.upper()})
        assert made.status_code == 201, made.text
    answer = made.json()
    assert answer["machine"]["id"] == vm_id  # the canonical id, whatever the spelling asked
    assert answer["token"].startswith("hp_") and 54 <= answer["nextHeartbeatSeconds"] <= 66
    with world.http(answer["token"]) as agent:
        who = agent.get("/hotpatch/whoami").json()
        assert who["role"] == "Agent" and who["machine"] == vm_id.lower()
        # an agent's credential reaches no ARM resource and no token management
        assert agent.get(_vm_path(name), params={"api-version": API}).status_code == 403
        assert agent.post("/hotpatch/tokens", json={"role": "Reader"}).status_code == 403
        assert agent.post("/agent/enroll", json=body).status_code == 403
    # enrolling again replaces the machine's credential
    with world.http(world.token("Owner")) as owner:
        again = owner.post("/agent/enroll", json=body)
    assert again.status_code == 201
    with world.http(answer["token"]) as old:
        assert old.post("/agent/heartbeat", json={}).status_code == 401
    with world.http(again.json()["token"]) as new:
        assert new.post("/agent/heartbeat", json={}).status_code == 200


def test_heartbeats_record_health_and_say_when_to_come_back(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    agent.enroll()
    beat = agent.heartbeat("Unhealthy")
    assert set(beat) == {"nextHeartbeatSeconds", "work"}
    assert 54 <= beat["nextHeartbeatSeconds"] <= 66 and beat["work"] == 0
    compute = ComputeManagementClient(subscription_id=SUB, **world.sdk())
    view = compute.virtual_machines.instance_view(GROUP, name)
    compute.close()
    assert view.os_name == "Simulated OS"  # what the agent reported
    with world.http() as client:
        assert _assess(client, name).status_code == 202
    assert agent.heartbeat()["work"] == 1
    with world.http(agent.token or "") as machine:
        bad = machine.post("/agent/heartbeat", json={"health": {"status": "Fine"}})
        assert bad.status_code == 400 and bad.json()["error"]["target"] == "health.status"
        huge = machine.post("/agent/heartbeat", json={"reported": {"x": "y" * 70_000}})
        assert huge.status_code == 400
        assert machine.post("/agent/heartbeat", content=b"{not json").status_code == 400
    with world.http(world.token("Owner")) as user:
        assert user.post("/agent/heartbeat", json={}).status_code == 403
        assert user.get("/agent/jobs").status_code == 403


# --- work -------------------------------------------------------------------------------------


def test_a_work_poll_waits_then_answers_204_or_returns_when_work_arrives(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    agent.enroll()
    agent.heartbeat()
    began = time.monotonic()
    assert agent.poll(wait=1.5) == []
    assert 1.4 <= time.monotonic() - began < 5
    assert agent.poll() == []  # wait=0: at once

    found: list[dict[str, Any]] = []
    waited: list[float] = []

    def poll() -> None:
        began = time.monotonic()
        found.extend(agent.poll(wait=20))
        waited.append(time.monotonic() - began)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    queued_at = time.monotonic()
    with world.http() as client:
        assert _assess(client, name).status_code == 202
    poller.join(25)
    assert [item["kind"] for item in found] == ["assessPatches"]
    assert waited[0] < 5 and time.monotonic() - queued_at < 3, waited
    item = found[0]
    assert set(item) == {"id", "kind", "operation", "payload", "leaseUntil"}
    assert item["payload"]["osType"] == "Windows" and "deadline" in item["payload"]
    with world.http(agent.token or "") as machine:
        assert machine.get("/agent/jobs", params={"wait": 31}).status_code == 400
        assert machine.get("/agent/jobs", params={"wait": -1}).status_code == 400


def test_an_agent_reaches_only_its_own_machine_s_work(world: Arm) -> None:
    name_a, vm_a = _vm(world)
    _name_b, vm_b = _vm(world)
    first = SimulatedAgent(world, vm_a, world.token("Owner"), patches=_patches())
    second = SimulatedAgent(world, vm_b, world.token("Owner"), patches=_patches())
    for agent in (first, second):
        agent.enroll()
        agent.heartbeat()
    with world.http() as client:
        started = _assess(client, name_a)
    assert second.poll(wait=0.5) == []  # not its work
    (item,) = first.poll()
    stolen = second.report(item, {"status": "Succeeded", "output": first.assessment()})
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "WorkItemNotFound"
    with world.http(second.token or "") as machine:
        history = machine.get(f"/hotpatch/machines/{quote(vm_a, safe='')}/history")
        assert history.status_code == 403
    assert first.answer(item).status_code == 200
    with world.http() as client:
        assert client.get(started.headers["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


def test_results_are_checked_and_idempotent(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    agent.enroll()
    agent.heartbeat()
    with world.http() as client:
        started = _assess(client, name)
    (item,) = agent.poll()
    missing = agent.report(item, {"status": "Succeeded", "output": {"status": "Succeeded"}})
    assert missing.status_code == 400
    assert missing.json()["error"]["target"] == "output.availablePatches"
    nameless = agent.report(
        item, {"status": "Succeeded", "output": {"availablePatches": [{"kbId": "KB1"}]}}
    )
    assert nameless.json()["error"]["target"] == "output.availablePatches[0].name"
    wrong = agent.report(
        item,
        {
            "status": "Succeeded",
            "output": {"availablePatches": [{"name": "x", "rebootBehavior": "Sometimes"}]},
        },
    )
    assert wrong.json()["error"]["target"] == "output.availablePatches[0].rebootBehavior"
    assert agent.report(item, {"status": "Done"}).status_code == 400
    assert agent.report(item, {"status": "Succeeded"}).status_code == 400  # needs output
    # the item is still the agent's to finish
    first = agent.answer(item)
    assert first.status_code == 200 and first.json()["state"] == "done"
    again = agent.report(item, {"status": "Failed", "error": {"code": "X", "message": "late"}})
    assert again.status_code == 200 and again.json() == first.json()
    with world.http() as client:
        status = client.get(started.headers["Azure-AsyncOperation"]).json()
    assert status["status"] == "Succeeded"
    assert status["properties"]["output"] == first.json()["outcome"]["output"]
    with world.http(agent.token or "") as machine:
        history = machine.get("/agent/history").json()["value"]
        assert [h["kind"] for h in history] == ["assessment"]  # recorded once
        assert (
            machine.post("/agent/jobs/999999999/result", json={"status": "Failed"}).status_code
            == 404
        )
        assert machine.post("/agent/jobs/0/result", json={"status": "Failed"}).status_code == 400


def test_an_operation_the_agent_could_not_run_fails(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    agent.enroll()
    agent.heartbeat()
    compute = ComputeManagementClient(subscription_id=SUB, **world.sdk())
    poller = compute.virtual_machines.begin_assess_patches(GROUP, name)
    (item,) = agent.poll()
    reply = agent.report(
        item,
        {
            "status": "Failed",
            "error": {"code": "PatchServiceUnavailable", "message": "The package index is down."},
        },
    )
    assert reply.status_code == 200 and reply.json()["state"] == "failed"
    with pytest.raises(HttpResponseError) as failed:
        finish(poller)
    assert "PatchServiceUnavailable" in str(failed.value)
    assert "The package index is down." in str(failed.value)
    summary = compute.virtual_machines.instance_view(GROUP, name).patch_status
    compute.close()
    assert summary.available_patch_summary.status == "Failed"
    assert summary.available_patch_summary.error.code == "PatchServiceUnavailable"
    operation = (
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/"
        f"{item['operation']}"
    )
    with world.http() as client:
        status = client.get(operation, params={"api-version": API}).json()
        monitor = client.get(operation, params={"api-version": API, "monitor": "true"})
    assert status["status"] == "Failed"
    assert status["error"] == {
        "code": "PatchServiceUnavailable",
        "message": "The package index is down.",
    }
    assert monitor.status_code == 409
    assert monitor.json()["error"]["code"] == "PatchServiceUnavailable"


def test_history_is_read_by_the_machine_and_by_its_subscription(world: Arm) -> None:
    name, vm_id = _vm(world)
    with SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches()) as agent:
        compute = ComputeManagementClient(subscription_id=SUB, **world.sdk())
        finish(compute.virtual_machines.begin_assess_patches(GROUP, name))
        compute.close()
    with world.http(agent.token or "") as machine:
        own = machine.get("/agent/history", params={"days": 30}).json()["value"]
        assert machine.get("/agent/history", params={"days": 0}).status_code == 400
    assert [(h["kind"], h["status"]) for h in own] == [("assessment", "Succeeded")]
    assert own[0]["result"]["criticalAndSecurityPatchCount"] == 1
    encoded = quote(vm_id, safe="")
    with world.http(world.token("Reader")) as reader:
        theirs = reader.get(f"/hotpatch/machines/{encoded}/history").json()["value"]
        plain = reader.get(f"/hotpatch/machines{vm_id}/history").json()["value"]
        assert (
            reader.get(
                f"/hotpatch/machines/{quote(vm_id.replace(name, 'x'), safe='')}/history"
            ).status_code
            == 404
        )
    assert theirs == own == plain
    with world.http(world.token("Owner", OTHER_SUB)) as stranger:
        assert stranger.get(f"/hotpatch/machines/{encoded}/history").status_code == 403


# --- time: a control plane in-process on a ManualClock ------------------------------------------


@dataclass
class Local:
    """An in-process server on a manual clock, with an Owner token and a VM."""

    url: str
    clock: ManualClock
    owner: str
    vm: str
    vm_id: str

    def http(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.owner}"},
            timeout=30,
        )

    def enroll(self) -> str:
        with self.http() as client:
            reply = client.post("/agent/enroll", json={"machine": self.vm_id})
        assert reply.status_code == 201, reply.text
        token: str = reply.json()["token"]
        return token

    def start(self, kind: str = "assessPatches", body: Any = None) -> str:
        with self.http() as client:
            reply = client.post(
                f"{_vm_path(self.vm)}/{kind}", params={"api-version": API}, json=body
            )
        assert reply.status_code == 202, reply.text
        return reply.headers["Azure-AsyncOperation"]

    def get(self, url: str, token: str | None = None) -> dict[str, Any]:
        with self.http(token) as client:
            reply = client.get(url)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def patch_status(self) -> dict[str, Any]:
        view = self.get(f"{_vm_path(self.vm)}/instanceView?api-version={API}")
        status: dict[str, Any] = view["patchStatus"]
        return status


ADMIN = "a" * 32


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    with clocked_server(tmp_path / "data", ADMIN, SUB, GROUP) as (url, clock, owner):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            created = admin.put(
                _vm_path("clocked"), params={"api-version": API}, json=vm_body("clocked")
            )
            assert created.status_code == 201, created.text
        yield Local(url, clock, owner, "clocked", created.json()["id"])


def _lease(local: Local, token: str) -> list[dict[str, Any]]:
    with local.http(token) as client:
        reply = client.get("/agent/jobs")
    if reply.status_code == 204:
        return []
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


def test_an_agent_not_seen_for_ten_minutes_counts_as_stopped(local: Local) -> None:
    local.enroll()
    local.clock.advance(timedelta(minutes=9))
    url = local.start()
    local.clock.advance(timedelta(minutes=11))
    with local.http() as client:
        refused = client.post(
            f"{_vm_path(local.vm)}/installPatches",
            params={"api-version": API},
            json={"rebootSetting": "Never"},
        )
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert (
        "since the VM is not running: no agent has reported for it since 2026-11-10T12:00:00"
        in message
    )
    assert local.get(url)["status"] in ("InProgress", "Failed")


def test_an_assessment_nobody_answers_times_out(local: Local) -> None:
    token = local.enroll()
    url = local.start()
    (item,) = _lease(local, token)
    local.clock.advance(timedelta(minutes=9))
    assert local.get(url)["status"] == "InProgress"
    local.clock.advance(timedelta(minutes=2))
    failed = local.get(url)
    assert failed["status"] == "Failed"
    assert failed["error"]["code"] == "OperationTimedOut"
    assert "endTime" in failed and "properties" not in failed
    summary = local.patch_status()["availablePatchSummary"]
    assert summary["status"] == "Failed" and summary["error"]["code"] == "OperationTimedOut"
    with local.http(token) as client:
        late = client.post(
            f"/agent/jobs/{item['id']}/result",
            json={"status": "Succeeded", "output": {"availablePatches": []}},
        )
    assert late.status_code == 409 and late.json()["error"]["code"] == "WorkItemExpired"
    assert local.get(url)["status"] == "Failed"


def test_a_lapsed_lease_is_handed_out_once_more_then_fails(local: Local) -> None:
    token = local.enroll()
    url = local.start("installPatches", {"rebootSetting": "IfRequired", "maximumDuration": "PT2H"})
    (first,) = _lease(local, token)
    assert _lease(local, token) == []  # leased: not handed out twice
    local.clock.advance(timedelta(minutes=6))
    (second,) = _lease(local, token)
    assert second["id"] == first["id"] and second["leaseUntil"] > first["leaseUntil"]
    assert local.get(url)["status"] == "InProgress"
    local.clock.advance(timedelta(minutes=6))
    failed = local.get(url)
    assert failed["status"] == "Failed"
    assert failed["error"]["code"] == "VMAgentStatusCommunicationError"
    last = local.patch_status()["lastPatchInstallationSummary"]
    assert last["status"] == "Failed"


def test_heartbeats_keep_a_long_installation_s_lease(local: Local) -> None:
    token = local.enroll()
    url = local.start("installPatches", {"rebootSetting": "Never", "maximumDuration": "PT1H"})
    (item,) = _lease(local, token)
    with local.http(token) as client:
        for _ in range(10):  # 40 minutes of work, a heartbeat every 4
            local.clock.advance(timedelta(minutes=4))
            beat = client.post("/agent/heartbeat", json={"health": {"status": "Healthy"}}).json()
            assert beat["nextHeartbeatSeconds"] <= 100  # holding work: come back before it lapses
        assert local.get(url)["status"] == "InProgress"
        done = client.post(
            f"/agent/jobs/{item['id']}/result",
            json={"status": "Succeeded", "output": {"rebootStatus": "NotNeeded", "patches": []}},
        )
    assert done.status_code == 200, done.text
    assert local.get(url)["status"] == "Succeeded"


def test_an_installation_past_its_window_fails(local: Local) -> None:
    token = local.enroll()
    url = local.start("installPatches", {"rebootSetting": "Never", "maximumDuration": "PT1H"})
    with local.http(token) as client:
        for _ in range(19):  # alive, but never takes the work
            local.clock.advance(timedelta(minutes=4))
            client.post("/agent/heartbeat", json={}).raise_for_status()
    failed = local.get(url)
    assert failed["status"] == "Failed"
    assert failed["error"]["code"] == "MaintenanceWindowExceeded"
    assert "PT1H" in failed["error"]["message"]
    last = local.patch_status()["lastPatchInstallationSummary"]
    assert last["maintenanceWindowExceeded"] is True and last["status"] == "Failed"
    assert _lease(local, token) == []  # the expired work is not handed out


def test_history_keeps_the_last_thirty_days(local: Local) -> None:
    token = local.enroll()
    url = local.start()
    (item,) = _lease(local, token)
    with local.http(token) as client:
        client.post(
            f"/agent/jobs/{item['id']}/result",
            json={"status": "Succeeded", "output": {"availablePatches": []}},
        ).raise_for_status()
        assert local.get(url)["status"] == "Succeeded"
        assert len(client.get("/agent/history").json()["value"]) == 1
        local.clock.advance(timedelta(days=31))
        assert client.get("/agent/history").json()["value"] == []
        assert len(client.get("/agent/history", params={"days": 60}).json()["value"]) == 1


# --- the pieces on their own --------------------------------------------------------------------


def test_heartbeat_intervals_grow_with_load() -> None:
    now = [0.0]
    backoff = Backoff(
        base=60, ceiling=300, comfortable=10, window=10, now=lambda: now[0], rng=random.Random(1)
    )
    quiet = []
    for _ in range(50):  # 5 per second
        now[0] += 0.2
        quiet.append(backoff.next())
    assert all(54 <= s <= 66 for s in quiet)
    busy = []
    for _ in range(400):  # 40 per second: four times what is comfortable
        now[0] += 0.025
        busy.append(backoff.next())
    assert 216 <= busy[-1] <= 264
    for _ in range(2000):  # 200 per second: capped
        now[0] += 0.005
        last = backoff.next()
    assert last == 300


def test_work_queued_together_gets_its_ids_in_the_order_given(database_url: str) -> None:
    engine = open_database(database_url)
    now = datetime(2026, 11, 10, tzinfo=timezone.utc)
    names = [f"m{n:02d}" for n in (7, 3, 11, 1, 5)]  # not in any order the table keeps
    try:
        with engine.begin() as conn:
            _queue.enqueue(conn, "earlier", "assessPatches", {}, now)
            ids = _queue.enqueue_many(
                conn,
                "installPatches",
                [(name, {"n": name}, f"op-{name}") for name in names],
                now,
                trigger="auto",
            )
            assert _queue.enqueue_many(conn, "installPatches", [], now) == []
        with engine.connect() as conn:
            items = [_queue.get(conn, key) for key in ids]
        assert [(i.machine, i.payload, i.operation, i.trigger) for i in items if i] == [
            (name, {"n": name}, f"op-{name}", "auto") for name in names
        ]
    finally:
        engine.dispose()


def test_the_queue_leases_renews_lapses_and_finishes(database_url: str) -> None:
    engine = open_database(database_url)
    now = datetime(2026, 11, 10, tzinfo=timezone.utc)
    mine, theirs = (
        "/subscriptions/s/resourcegroups/g/providers/microsoft.compute/virtualmachines/a",
        "other",
    )
    try:
        with engine.begin() as conn:
            first = _queue.enqueue(conn, mine, "assessPatches", {"n": 1}, now)
            second = _queue.enqueue(conn, mine.upper(), "assessPatches", {"n": 2}, now)
            _queue.enqueue(conn, theirs, "assessPatches", {}, now)
        with engine.begin() as conn:
            assert _queue.counts(conn, mine) == {"queued": 2, "leased": 0}
            assert _queue.ready(conn, mine, now)
            leased = _queue.lease(conn, mine, now, limit=1)
            assert [i.id for i in leased] == [first] and leased[0].attempts == 1
            assert [i.id for i in _queue.lease(conn, mine, now)] == [second]
            assert not _queue.ready(conn, mine, now)
            assert _queue.get(conn, first, theirs) is None  # another machine's view
        later = now + _queue.LEASE - timedelta(seconds=1)
        with engine.begin() as conn:
            assert _queue.renew(conn, mine, later) == 2
        lapsed = later + _queue.LEASE + timedelta(seconds=1)
        with engine.begin() as conn:
            assert _queue.ready(conn, mine, lapsed)
            assert _queue.lapse(conn, lapsed, mine) == []  # first lapse: queued again
            again = _queue.lease(conn, mine, lapsed)
            assert [i.attempts for i in again] == [2, 2]
            item = _queue.get(conn, first, mine)
            assert item is not None
            assert _queue.finish(conn, item, _queue.DONE, {"ok": True}, lapsed)
            assert not _queue.finish(conn, item, _queue.FAILED, {}, lapsed)  # finished stays
        final = lapsed + _queue.LEASE + timedelta(seconds=1)
        with engine.begin() as conn:
            (failed,) = _queue.lapse(conn, final, mine)  # second lapse: failed
            assert failed.id == second
            gone = _queue.get(conn, second)
            assert gone is not None and gone.state == "failed" and gone.result
            assert gone.result["expired"] is True
            assert _queue.counts(conn, mine) == {"queued": 0, "leased": 0}
            assert _queue.counts(conn, theirs) == {"queued": 1, "leased": 0}
    finally:
        engine.dispose()


def test_heartbeats_are_written_in_shared_transactions(database_url: str) -> None:
    engine = open_database(database_url)
    clock = ManualClock(datetime(2026, 11, 10, tzinfo=timezone.utc))
    try:
        with engine.begin() as conn:
            for n in range(20):
                conn.execute(
                    insert(machines).values(
                        resource_id=f"m{n}",
                        subscription=SUB,
                        enrolled=clock(),
                        agent_version=None,
                        health={},
                        reported={},
                    )
                )
            _queue.enqueue(conn, "m3", "assessPatches", {}, clock())
            _queue.enqueue(conn, "m4", "assessPatches", {}, clock())
            _queue.lease(conn, "m4", clock())
        writer = HeartbeatWriter(engine, clock, batch=7, idle=0.2)
        futures = []

        def beat(n: int) -> None:
            values: dict[str, Any] = {"health": {"status": "Healthy"}}
            if n % 2:
                values["reported"] = {"baseline": f"KB{n:05d}"}
            futures.append((n, writer.submit(f"M{n}", values)))

        threads = [threading.Thread(target=beat, args=(n,)) for n in range(25)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers = {n: future.result(timeout=30) for n, future in futures}
        assert all(answers[n] is None for n in range(20, 25))  # not enrolled
        assert answers[3] == {"queued": 1, "leased": 0}
        assert answers[4] == {"queued": 0, "leased": 1}
        assert answers[5] == {"queued": 0, "leased": 0}
        with engine.connect() as conn:
            rows = {r.resource_id: r for r in conn.execute(select(machines))}
            seen = dict(conn.execute(select(presence.c.resource_id, presence.c.last_seen)).all())
        assert seen == {f"m{n}": clock() for n in range(20)}  # never heard from before: added
        assert rows["m7"].reported == {"baseline": "KB00007"} and rows["m8"].reported == {}
        time.sleep(0.5)  # idle: the writer thread ends, and the next heartbeat starts another
        clock.advance(timedelta(minutes=1))
        assert writer.submit("m1", {}).result(timeout=30) is not None  # presence alone
        with engine.connect() as conn:
            assert (
                conn.execute(
                    select(presence.c.last_seen).where(presence.c.resource_id == "m1")
                ).scalar_one()
                == clock()
            )
        # a batch mixing machines heard from before, one never heard from, and a stranger
        with engine.begin() as conn:
            conn.execute(
                insert(machines).values(
                    resource_id="m30",
                    subscription=SUB,
                    enrolled=clock(),
                    agent_version=None,
                    health={},
                    reported={},
                )
            )
        clock.advance(timedelta(minutes=1))
        mixed = {key: writer.submit(key, {}) for key in ("m1", "m2", "m30", "m31")}
        answered = {key: future.result(timeout=30) for key, future in mixed.items()}
        assert answered["m31"] is None and all(answered[k] is not None for k in ("m1", "m2", "m30"))
        with engine.connect() as conn:
            seen = dict(conn.execute(select(presence.c.resource_id, presence.c.last_seen)).all())
        assert {key: seen.get(key) for key in ("m1", "m2", "m30", "m31")} == {
            "m1": clock(),
            "m2": clock(),
            "m30": clock(),
            "m31": None,
        }
    finally:
        engine.dispose()


# --- the hot path: audit, authentication cache, lean route ---------------------------------------


def test_heartbeats_are_not_audited_but_enrolments_are(world: Arm) -> None:
    _, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    enrolled = agent.enroll()
    for _ in range(3):
        agent.heartbeat()
    with world.http(agent.token or "") as machine:
        beat = machine.post("/agent/heartbeat", json={})
    assert beat.headers["x-ms-request-id"]  # the middleware still answers request ids
    engine = open_database(world.db_url, migrate=False)
    try:
        deadline = time.monotonic() + 5
        while True:  # the audit row is written as the answer leaves
            with engine.connect() as conn:
                rows = conn.execute(
                    select(audit.c.method, audit.c.path, audit.c.principal_name).where(
                        audit.c.path.like("/agent/%")
                    )
                ).all()
            if ("POST", "/agent/enroll", "test Owner") in rows or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        engine.dispose()
    assert ("POST", "/agent/enroll", "test Owner") in rows, rows
    assert not [row for row in rows if row.path == "/agent/heartbeat"], rows
    assert enrolled["token"]


def test_a_heartbeat_s_errors_keep_the_arm_shape(world: Arm) -> None:
    with world.http("hp_not-a-token") as stranger:
        refused = stranger.post("/agent/heartbeat", json={})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert refused.headers["www-authenticate"] == "Bearer"
    with world.http() as client:
        missing = client.post("/agent/heartbeat", json={}, headers={"Authorization": "Basic x"})
        assert missing.json()["error"]["code"] == "AuthenticationFailed"
        assert client.post("/agent/heartbeat", json={}).status_code == 403  # the administrator
        assert "/agent/heartbeat" in client.get("/openapi.json").json()["paths"]


def test_the_token_cache_revokes_at_once_here_and_within_its_ttl_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyhotpatch.server import _auth

    clock = ManualClock(datetime(2026, 11, 10, 12, 0, tzinfo=timezone.utc))
    engine = open_database(f"sqlite:///{tmp_path / 'tokens.db'}")
    try:
        here, elsewhere = _auth.TokenStore(engine, clock), _auth.TokenStore(engine, clock)
        assert _auth.CACHE_SECONDS == 60.0
        monkeypatch.setattr(_auth, "CACHE_SECONDS", 0.5)
        agent, secret = here.create("agent", "Agent", subscription=SUB, machine="/vm/a")
        assert here.lookup(secret) == agent and elsewhere.lookup(secret) == agent
        assert elsewhere.cached(secret) == (True, agent)
        here.revoke(agent.id)
        assert here.lookup(secret) is None  # at once in the process that revoked
        assert elsewhere.lookup(secret) == agent  # another process: still cached ...
        time.sleep(0.6)
        assert elsewhere.lookup(secret) is None  # ... until its cached answer expires
        # an expiry is checked on every use, cached or not
        brief, short = here.create(
            "brief", "Reader", subscription=SUB, expires=clock() + timedelta(minutes=1)
        )
        assert here.lookup(short) == brief
        clock.advance(timedelta(minutes=2))
        assert here.cached(short) == (True, None) and here.lookup(short) is None
        assert here.cached("hp_unknown") == (False, None)
    finally:
        engine.dispose()
