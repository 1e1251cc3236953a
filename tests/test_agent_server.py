"""The control plane's side of the node agent: what an agent learns about its machine, the
work it does besides assessing and installing (revert a hotpatch, upgrade to a
hotpatch-capable stack), a machine's hotpatch status, and the release fields the agent
trusts because they are signed.

Most tests use a real server over HTTPS (``arm``, on SQLite and PostgreSQL) with agents
speaking the protocol; those that need time to pass (a stale agent, a deadline) run the
server in-process on a ``ManualClock``, on both databases too.
"""

from __future__ import annotations

import copy
import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from arm import OTHER_SUB, SUB, Arm
from catalog_fixtures import svc
from pyhotpatch.catalog.tufclient import ReleaseFeed
from pyhotpatch.clock import ManualClock
from servers import TOKEN, clocked_server
from sim_agent import SimulatedAgent, create_group, create_vm, register_compute, vm_body

GROUP = "agent-server-rg"
API = "2024-11-01"
LEGACY_IMAGE = {
    "publisher": "pyhotpatch",
    "offer": "python-service",
    "sku": "demo-legacy",
    "version": "latest",
}
DEMO = {"publisher": "pyhotpatch", "offer": "python-service", "sku": "demo-hotpatch"}
UNKNOWN_IMAGE = {
    "publisher": "Canonical",
    "offer": "ubuntu-24_04-lts",
    "sku": "server",
    "version": "latest",
}


@pytest.fixture(scope="module")
def world(arm: Arm) -> Arm:
    for sub in (SUB, OTHER_SUB):
        register_compute(arm, sub)
        create_group(arm, sub, GROUP)
    return arm


def _vm_path(name: str, subscription: str = SUB) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{GROUP}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def _windows_vm(
    name: str, image: dict[str, str], *, hotpatch: bool = False, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    body = copy.deepcopy(vm_body(name))
    body["properties"]["storageProfile"]["imageReference"] = dict(image)
    settings = body["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]
    settings["enableHotpatching"] = hotpatch
    if tags:
        body["tags"] = tags
    return body


def _put_vm(arm: Arm, name: str, body: dict[str, Any]) -> httpx.Response:
    with arm.http(arm.token("Owner")) as client:
        return client.put(_vm_path(name), params={"api-version": API}, json=body)


def _new_vm(arm: Arm, image: dict[str, str], **kwargs: Any) -> tuple[str, str]:
    """A Windows VM from ``image``, made with a raw PUT; its name and id."""
    name = f"vm-{uuid.uuid4().hex[:8]}"
    made = _put_vm(arm, name, _windows_vm(name, image, **kwargs))
    assert made.status_code == 201, made.text
    return name, str(made.json()["id"])


def _agent(arm: Arm, vm_id: str) -> SimulatedAgent:
    """An enrolled agent that has sent one heartbeat."""
    agent = SimulatedAgent(arm, vm_id, arm.token("Owner"))
    agent.enroll()
    agent.heartbeat()
    return agent


def _post(arm: Arm, token: str, path: str, body: Any = None) -> httpx.Response:
    with arm.http(token) as client:
        return client.post(path, json=body) if body is not None else client.post(path)


def _get(arm: Arm, token: str, path: str, **params: Any) -> httpx.Response:
    with arm.http(token) as client:
        return client.get(path, params=params)


def _refused(reply: httpx.Response, status: int, code: str) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


# --- what an agent learns about its machine ---------------------------------------------------


def test_an_agent_learns_its_machine_at_enrolment_and_on_request(world: Arm) -> None:
    name = f"vm-{uuid.uuid4().hex[:8]}"
    vm_id = create_vm(world, SUB, GROUP, name)  # the Windows hotpatch image, via the Azure SDK
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    enrolled = agent.enroll()
    document = enrolled["machine"]
    assert document == {
        "id": vm_id,
        "name": name,
        "location": "westus",
        "zones": [],
        "osType": "Windows",
        "image": {
            "publisher": "MicrosoftWindowsServer",
            "offer": "WindowsServer",
            "sku": "2022-datacenter-azure-edition-hotpatch",
        },
        "product": "windows-server-2022-azure-edition",
        "hotpatchCapable": True,
        "upgradeTo": None,
        "upgradeImage": None,
        "patchMode": "AutomaticByPlatform",
        "enableHotpatching": True,
        "hotpatchEnrolment": "Enabled",
        "environment": "Production",
    }
    asked = _get(world, agent.token or "", "/agent/machine")
    assert asked.status_code == 200 and asked.json() == document
    # users, administrators included, are not agents
    for token in (world.token("Owner"), TOKEN):
        _refused(_get(world, token, "/agent/machine"), 403, "AuthorizationFailed")


def test_the_image_an_agent_reports_wins_over_the_model(world: Arm) -> None:
    _, vm_id = _new_vm(world, LEGACY_IMAGE, tags={"hotpatch-environment": "DevTest"})
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    document = agent.enroll()["machine"]
    assert document["image"] == {k: LEGACY_IMAGE[k] for k in ("publisher", "offer", "sku")}
    assert document["product"] == "pyhotpatch-demo-legacy"
    assert document["hotpatchCapable"] is False and document["enableHotpatching"] is False
    assert document["upgradeTo"] == "pyhotpatch-demo"
    assert document["upgradeImage"] == DEMO  # the first image of the upgrade product
    assert document["environment"] == "DevTest"
    with world.http(agent.token or "") as machine:
        beat = machine.post("/agent/heartbeat", json={"reported": {"image": DEMO}})
        assert beat.status_code == 200, beat.text
        now = machine.get("/agent/machine").json()
        assert now["image"] == DEMO and now["product"] == "pyhotpatch-demo"
        assert now["hotpatchCapable"] is True and now["upgradeTo"] is None
        # a malformed report is not believed: the model's image answers
        machine.post("/agent/heartbeat", json={"reported": {"image": {"sku": 3}}})
        assert machine.get("/agent/machine").json()["product"] == "pyhotpatch-demo-legacy"


def test_one_agent_reads_only_its_own_machine(world: Arm) -> None:
    name_a, vm_a = _new_vm(world, LEGACY_IMAGE)
    name_b, vm_b = _new_vm(world, UNKNOWN_IMAGE)
    first, second = _agent(world, vm_a), _agent(world, vm_b)
    mine = _get(world, first.token or "", "/agent/machine").json()
    theirs = _get(world, second.token or "", "/agent/machine").json()
    assert (mine["id"], mine["name"]) == (vm_a, name_a)
    assert (theirs["id"], theirs["name"]) == (vm_b, name_b)
    assert theirs["product"] is None and theirs["hotpatchCapable"] is False
    # an agent's credential reaches no user route of any machine, its own included
    for path in (f"/hotpatch/machines{vm_a}/hotpatchStatus", f"/hotpatch/machines{vm_b}/jobs/1"):
        _refused(_get(world, second.token or "", path), 403, "AuthorizationFailed")
    _refused(
        _post(world, second.token or "", f"/hotpatch/machines{vm_b}/revertHotpatch"),
        403,
        "AuthorizationFailed",
    )


# --- reverting the active hotpatch --------------------------------------------------------------


def test_a_revert_is_queued_for_the_machine_s_running_agent(world: Arm) -> None:
    name, vm_id = _new_vm(world, DEMO | {"version": "latest"}, hotpatch=True)
    revert = f"/hotpatch/machines{vm_id}/revertHotpatch"
    contributor = world.token("Contributor")
    message = _refused(_post(world, contributor, revert), 409, "OperationNotAllowed")
    assert f"'revertHotpatch' is not allowed on VM '{name}'" in message
    assert "no agent has enrolled it" in message
    agent = _agent(world, vm_id)

    for token in (world.token("Reader"), world.token("Owner", OTHER_SUB)):
        _refused(_post(world, token, revert, {"kbId": "KB5041160"}), 403, "AuthorizationFailed")
    for body, target in (
        ({"kbId": "5041160"}, "kbId"),
        ({"kbId": 5041160}, "kbId"),
        ({"kbId": "KB5041160", "force": True}, "force"),
        ({"to": "yesterday"}, "to"),
    ):
        reply = _post(world, contributor, revert, body)
        assert (
            _refused(reply, 400, "InvalidParameter") and reply.json()["error"]["target"] == target
        )
    _refused(_post(world, contributor, revert, ["KB5041160"]), 400, "InvalidRequestContent")
    missing = f"/hotpatch/machines{vm_id.replace(name, 'nope')}/revertHotpatch"
    _refused(_post(world, contributor, missing), 404, "ResourceNotFound")
    _refused(
        _post(world, contributor, "/hotpatch/machines/not/a/vm/revertHotpatch"),
        400,
        "InvalidParameter",
    )

    queued = _post(world, contributor, revert, {"kbId": "kb5041160", "to": "Baseline"})
    assert queued.status_code == 202, queued.text
    answer = queued.json()
    assert answer == {"workItem": answer["workItem"], "kind": "revertHotpatch", "machine": vm_id}
    assert queued.headers["Location"].endswith(
        f"/hotpatch/machines{vm_id}/jobs/{answer['workItem']}"
    )
    busy = _refused(_post(world, world.token("Owner"), revert), 409, "OperationNotAllowed")
    assert f"has not yet finished 'revertHotpatch' (work item {answer['workItem']})" in busy

    (item,) = agent.poll()
    assert item["id"] == answer["workItem"] and item["kind"] == "revertHotpatch"
    assert item["operation"] is None and item["payload"]["kbId"] == "KB5041160"
    assert item["payload"]["to"] == "baseline"
    assert "deadline" in item["payload"]
    work = f"/hotpatch/machines{vm_id}/jobs/{item['id']}"
    reader = world.token("Reader")
    leased = _get(world, reader, work).json()
    assert set(leased) == {"id", "kind", "state", "payload", "result", "created", "updated"}
    assert (leased["kind"], leased["state"], leased["result"]) == ("revertHotpatch", "leased", None)

    done = agent.report(item, {"status": "Succeeded", "output": {"reverted": "KB5041160"}})
    assert done.status_code == 200 and done.json()["state"] == "done", done.text
    finished = _get(world, reader, work).json()
    assert finished["state"] == "done"
    assert finished["result"] == {
        "status": "Succeeded",
        "output": {"reverted": "KB5041160"},
        "error": None,
    }
    # finished: another revert may be queued
    again = _post(world, contributor, revert)
    assert again.status_code == 202 and again.json()["workItem"] != item["id"]
    (second,) = agent.poll()
    assert set(second["payload"]) == {"deadline"}  # no body: whatever hotpatch is active

    # the work of one machine is not found under another's path, nor elsewhere
    _, other_vm = _new_vm(world, DEMO | {"version": "latest"}, hotpatch=True)
    _refused(
        _get(world, reader, f"/hotpatch/machines{other_vm}/jobs/{item['id']}"),
        404,
        "WorkItemNotFound",
    )
    _refused(
        _get(world, reader, f"/hotpatch/machines{vm_id}/jobs/999999999"), 404, "WorkItemNotFound"
    )
    assert _get(world, reader, f"/hotpatch/machines{vm_id}/jobs/0").status_code == 400
    _refused(_get(world, world.token("Owner", OTHER_SUB), work), 403, "AuthorizationFailed")

    # the request is in the audit log, as every change is
    deadline = time.monotonic() + 10
    while True:
        # filed under the machine's subscription, so its owners read it
        owner = world.token("Owner", SUB)
        rows = _get(world, owner, "/hotpatch/audit", subscription=SUB, top=1000).json()["value"]
        found = [
            r
            for r in rows
            if r["method"] == "POST"
            and vm_id in r["path"]
            and r["path"].endswith("/revertHotpatch")
        ]
        if sum(r["status"] == 202 for r in found) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    outcomes = {(r["status"], r["principal"]) for r in found}
    assert {(202, "test Contributor"), (409, "test Owner"), (403, "test Reader")} <= outcomes, found


# --- upgrading a machine to a hotpatch-capable stack ---------------------------------------------


def test_a_stack_upgrade_moves_the_model_to_the_new_image(world: Arm) -> None:
    name, vm_id = _new_vm(world, LEGACY_IMAGE)
    upgrade = f"/hotpatch/machines{vm_id}/upgradeStack"
    owner = world.token("Owner")
    enable = _windows_vm(name, LEGACY_IMAGE, hotpatch=True)
    del enable["properties"]["storageProfile"]  # kept from the model
    refused = _put_vm(world, name, enable)
    assert _refused(refused, 400, "InvalidParameter")
    assert refused.json()["error"]["target"].endswith("enableHotpatching")

    assert "no agent has enrolled it" in _refused(
        _post(world, owner, upgrade), 409, "OperationNotAllowed"
    )
    agent = _agent(world, vm_id)
    _refused(_post(world, world.token("Reader"), upgrade), 403, "AuthorizationFailed")
    _refused(_post(world, world.token("Owner", OTHER_SUB), upgrade), 403, "AuthorizationFailed")

    # a failed upgrade changes nothing
    first = _post(world, owner, upgrade)
    assert first.status_code == 202, first.text
    assert first.json()["kind"] == "upgradeStack" and first.json()["machine"] == vm_id
    (item,) = agent.poll()
    assert item["payload"]["product"] == "pyhotpatch-demo"
    assert item["payload"]["image"] == DEMO
    assert item["payload"]["from"] == "pyhotpatch-demo-legacy"
    failed = agent.report(
        item, {"status": "Failed", "error": {"code": "NoSpace", "message": "disk full"}}
    )
    assert failed.status_code == 200 and failed.json()["state"] == "failed"
    with world.http(owner) as client:
        model = client.get(_vm_path(name), params={"api-version": API}).json()
    assert model["properties"]["storageProfile"]["imageReference"]["sku"] == "demo-legacy"

    second = _post(world, owner, upgrade)
    assert second.status_code == 202, second.text
    (item,) = agent.poll()
    # the output must name an image of the product the upgrade was for
    for output, target in (
        ({"baseline": "KB5000001"}, "output.image"),
        ({"image": {"publisher": "pyhotpatch"}}, "output.image"),
        (
            {
                "image": {
                    "publisher": "MicrosoftWindowsServer",
                    "offer": "WindowsServer",
                    "sku": "2022-datacenter-azure-edition-hotpatch",
                }
            },
            "output.image",
        ),
        ({"image": DEMO, "baseline": "January"}, "output.baseline"),
    ):
        bad = agent.report(item, {"status": "Succeeded", "output": output})
        assert _refused(bad, 400, "InvalidParameter") and bad.json()["error"]["target"] == target
    shouted = {"publisher": "PYHOTPATCH", "offer": "Python-Service", "sku": "DEMO-HOTPATCH"}
    done = agent.report(
        item, {"status": "Succeeded", "output": {"image": shouted, "baseline": "kb5000001"}}
    )
    assert done.status_code == 200 and done.json()["state"] == "done", done.text
    assert done.json()["outcome"]["output"]["image"] == DEMO  # in the catalog's spelling

    with world.http(owner) as client:
        model = client.get(_vm_path(name), params={"api-version": API})
    reference = model.json()["properties"]["storageProfile"]["imageReference"]
    assert reference == {**DEMO, "version": "latest", "exactVersion": "KB5000001"}
    assert model.headers["ETag"] == model.json()["etag"]
    enabled = _put_vm(world, name, enable)
    assert enabled.status_code == 200, enabled.text
    settings = enabled.json()["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]
    assert settings["enableHotpatching"] is True
    document = _get(world, agent.token or "", "/agent/machine").json()
    assert document["product"] == "pyhotpatch-demo" and document["enableHotpatching"] is True
    # now there is nothing to upgrade
    message = _refused(_post(world, owner, upgrade), 409, "OperationNotAllowed")
    assert "its product 'pyhotpatch-demo' is already hotpatch-capable" in message


def test_only_machines_on_an_upgradable_product_are_upgraded(world: Arm) -> None:
    owner = world.token("Owner")
    _, unknown = _new_vm(world, UNKNOWN_IMAGE)
    _agent(world, unknown)
    message = _refused(
        _post(world, owner, f"/hotpatch/machines{unknown}/upgradeStack"), 409, "OperationNotAllowed"
    )
    assert (
        "its image 'Canonical:ubuntu-24_04-lts:server' is not a product of the catalog" in message
    )
    _, capable = _new_vm(world, DEMO | {"version": "latest"}, hotpatch=True)
    _agent(world, capable)
    message = _refused(
        _post(world, owner, f"/hotpatch/machines{capable}/upgradeStack"), 409, "OperationNotAllowed"
    )
    assert "already hotpatch-capable" in message
    missing = f"/hotpatch/machines{_vm_path('no-such-vm')}/upgradeStack"
    _refused(_post(world, owner, missing), 404, "ResourceNotFound")


# --- a machine's hotpatch status ------------------------------------------------------------------


def test_hotpatch_status_comes_from_the_agent_s_reports_and_the_model(world: Arm) -> None:
    name, vm_id = _new_vm(world, DEMO | {"version": "latest"}, hotpatch=True)
    status = f"/hotpatch/machines{vm_id}/hotpatchStatus"
    reader = world.token("Reader")
    before = _get(world, reader, status).json()
    assert before == {
        "machine": vm_id,
        "enrolled": False,
        "running": False,
        "lastSeen": None,
        "health": None,
        "image": DEMO,
        "product": "pyhotpatch-demo",
        "baseline": None,
        "activeHotpatch": None,
        "transition": None,
        "hotpatchEnabled": True,
        "enrolment": "Enabled",
        "agentVersion": None,
        "workers": None,
    }
    agent = SimulatedAgent(world, vm_id, world.token("Owner"))
    agent.enroll()
    reported = {
        "image": DEMO,
        "product": "pyhotpatch-demo",
        "baseline": "KB5000001",
        "activeHotpatch": "KB5000002",
        "transition": {"complete": False, "pending": [{"pid": 41, "frames": 2}]},
        "hotpatchEnabled": True,
        "agentVersion": "0.9.0",
        "workers": [{"pid": 41, "state": "running"}],
    }
    with world.http(agent.token or "") as machine:
        beat = machine.post(
            "/agent/heartbeat",
            json={
                "health": {"status": "Healthy", "probe": "200 OK"},
                "reported": reported,
                "agentVersion": "1.2.3",
            },
        )
        assert beat.status_code == 200, beat.text
    after = _get(world, reader, status).json()
    assert after["enrolled"] is True and after["running"] is True
    assert datetime.fromisoformat(after["lastSeen"]).tzinfo is not None
    assert after["health"] == {"status": "Healthy", "probe": "200 OK"}
    for key in ("image", "product", "baseline", "activeHotpatch", "transition", "workers"):
        assert after[key] == reported[key], key
    assert after["hotpatchEnabled"] is True and after["enrolment"] == "Enabled"
    assert after["agentVersion"] == "1.2.3"  # what the heartbeat said it runs
    # the same answer for the path without its leading slash, URL-encoded
    encoded = _get(world, reader, f"/hotpatch/machines/{quote(vm_id, safe='')}/hotpatchStatus")
    assert encoded.json()["activeHotpatch"] == "KB5000002"
    _refused(_get(world, world.token("Owner", OTHER_SUB), status), 403, "AuthorizationFailed")
    _refused(_get(world, reader, status.replace(name, "nope")), 404, "ResourceNotFound")
    assert _get(world, reader, "/hotpatch/machines/nothing/hotpatchStatus").status_code == 400


def test_the_new_routes_are_in_the_openapi_document(world: Arm) -> None:
    paths = _get(world, TOKEN, "/openapi.json").json()["paths"]
    for path, method in (
        ("/agent/machine", "get"),
        ("/hotpatch/machines/{machine}/revertHotpatch", "post"),
        ("/hotpatch/machines/{machine}/upgradeStack", "post"),
        ("/hotpatch/machines/{machine}/jobs/{item_id}", "get"),
        ("/hotpatch/machines/{machine}/hotpatchStatus", "get"),
    ):
        assert method in paths[path], path


# --- signed release fields -----------------------------------------------------------------------


def test_an_agent_assesses_from_signed_release_fields(
    world: Arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = svc(tmp_path, "1.0.0")
    lock = tmp_path / "KB5000001.lock"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lock.write_text(f"svc==1.0.0 --hash=sha256:{digest}\n")
    with world.http(TOKEN) as admin:
        refs = []
        for path, role in ((lock, "lock"), (wheel, "wheel")):
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            assert admin.put(f"/hotpatch/artifacts/{sha}", content=data).status_code in (200, 201)
            refs.append({"name": path.name, "role": role, "sha256": sha})
        published = admin.post(
            "/hotpatch/releases",
            json={
                "product": "pyhotpatch-demo",
                "kind": "planned-baseline",
                "kbId": "KB5000001",
                "name": "January baseline",
                "classifications": ["UpdateRollUp"],
                "publishedDate": "2026-01-13T00:00:00Z",
                "artifacts": refs,
            },
        )
        assert published.status_code == 201, published.text
        release = published.json()
        root = admin.get("/hotpatch/tuf/metadata/root.json").content
    # the agent's TUF client over HTTPS, trusting the server's development CA
    monkeypatch.setenv("SSL_CERT_FILE", str(world.ca))
    feed = ReleaseFeed(world.url, tmp_path / "agent", trusted_root=root)
    feed.refresh()
    target = feed.targets()[f"pyhotpatch-demo/KB5000001/{lock.name}"]
    assert target.custom["title"] == "January baseline"
    assert target.custom["publishedDate"] == "2026-01-13T00:00:00Z" == release["publishedDate"]
    assert target.custom["availableDate"] == release["availableDate"]
    assert target.custom["kbId"] == "KB5000001" and target.custom["role"] == "lock"


# --- time: an in-process server on a manual clock --------------------------------------------------


@dataclass
class Local:
    """An in-process server on a manual clock, an administrator token and one legacy VM."""

    url: str
    clock: ManualClock
    vm_id: str

    def http(self, token: str = TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


@pytest.fixture
def local(tmp_path: Path, database_url: str) -> Iterator[Local]:
    with clocked_server(tmp_path / "data", TOKEN, SUB, GROUP, database_url) as (url, clock, _):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
            created = admin.put(
                _vm_path("clocked"),
                params={"api-version": API},
                json=_windows_vm("clocked", LEGACY_IMAGE),
            )
            assert created.status_code == 201, created.text
        yield Local(url, clock, created.json()["id"])


def test_work_for_an_agent_not_seen_for_ten_minutes_is_refused(local: Local) -> None:
    with local.http() as admin:
        assert admin.post("/agent/enroll", json={"machine": local.vm_id}).status_code == 201
        local.clock.advance(timedelta(minutes=9))
        queued = admin.post(f"/hotpatch/machines{local.vm_id}/upgradeStack")
        assert queued.status_code == 202, queued.text
        local.clock.advance(timedelta(minutes=2))
        for kind in ("revertHotpatch", "upgradeStack"):
            refused = admin.post(f"/hotpatch/machines{local.vm_id}/{kind}")
            message = _refused(refused, 409, "OperationNotAllowed")
            assert "no agent has reported for it since 2026-11-10T12:00:00" in message
        status = admin.get(f"/hotpatch/machines{local.vm_id}/hotpatchStatus").json()
        assert status["running"] is False and status["lastSeen"].startswith("2026-11-10T12:00:00")


def test_a_revert_nobody_reports_fails_at_its_deadline(local: Local) -> None:
    with local.http() as admin:
        token = admin.post("/agent/enroll", json={"machine": local.vm_id}).json()["token"]
        queued = admin.post(f"/hotpatch/machines{local.vm_id}/revertHotpatch").json()
        work = f"/hotpatch/machines{local.vm_id}/jobs/{queued['workItem']}"
        with local.http(token) as agent:
            (item,) = agent.get("/agent/jobs").json()["items"]
            for _ in range(9):  # alive and holding the work for 36 minutes, never reporting
                local.clock.advance(timedelta(minutes=4))
                agent.post("/agent/heartbeat", json={}).raise_for_status()
            failed = admin.get(work).json()
            assert failed["state"] == "failed"
            assert failed["result"]["error"]["code"] == "OperationTimedOut"
            late = agent.post(
                f"/agent/jobs/{item['id']}/result", json={"status": "Succeeded", "output": {}}
            )
            assert _refused(late, 409, "WorkItemExpired")
        # the machine is free for new work
        assert admin.post(f"/hotpatch/machines{local.vm_id}/revertHotpatch").status_code == 202
