"""Resource groups on a real server, through the Azure SDK's ``ResourceManagementClient``."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.resources.models import ResourceGroup, ResourceGroupPatchable
from sqlalchemy import Engine, insert, select

from arm import OTHER_SUB, SUB, Arm, start_arm
from databases import postgres_database

VERSION = {"api-version": "2025-04-01"}


@pytest.fixture(scope="module")
def client(arm: Arm) -> Iterator[ResourceManagementClient]:
    with ResourceManagementClient(subscription_id=SUB, **arm.sdk()) as built:
        yield built
        gc.collect()  # an SDK error kept in a reference cycle holds its connection


@pytest.fixture(scope="module")
def database(arm: Arm) -> Iterator[Engine]:
    """The server's own database, to plant resources no route creates yet."""
    from pyhotpatch.storage import open_database

    engine = open_database(arm.db_url, migrate=False)
    yield engine
    engine.dispose()


@pytest.fixture
def sdk(arm: Arm) -> Iterator[Callable[..., Any]]:
    """Builds Azure SDK clients for the server and closes them after the test.

    An open keep-alive connection would hold up the server's orderly shutdown.
    """
    made: list[Any] = []

    def build(kind: Callable[..., Any], token: str | None = None, sub: str = SUB) -> Any:
        client = kind(subscription_id=sub, **arm.sdk(token))
        made.append(client)
        return client

    yield build
    gc.collect()  # an SDK error kept in a reference cycle holds its connection
    for client in made:
        client.close()


def _name() -> str:
    return f"rg-{uuid.uuid4().hex[:10]}"


def test_create_read_update_list_and_delete_with_the_sdk(client: ResourceManagementClient) -> None:
    name = "Hotpatch-" + uuid.uuid4().hex[:8]
    made = client.resource_groups.create_or_update(
        name, ResourceGroup(location="West Europe", tags={"team": "patching"})
    )
    assert made.id == f"/subscriptions/{SUB}/resourceGroups/{name}"
    assert (made.name, made.type, made.location) == (
        name,
        "Microsoft.Resources/resourceGroups",
        "westeurope",
    )
    assert made.tags == {"team": "patching"}
    assert made.properties is not None and made.properties.provisioning_state == "Succeeded"

    assert client.resource_groups.get(name.lower()).name == name  # names are case-insensitive
    assert client.resource_groups.check_existence(name) is True
    assert client.resource_groups.check_existence(name + "-missing") is False

    replaced = client.resource_groups.create_or_update(
        name.upper(), {"location": "westeurope", "tags": {"env": "prod"}}
    )
    assert (replaced.name, replaced.tags) == (name, {"env": "prod"})  # the creator's spelling stays

    patched = client.resource_groups.update(
        name, ResourceGroupPatchable(tags={"env": "test", "owner": "me"})
    )
    assert patched.tags == {"env": "test", "owner": "me"}
    assert patched.location == "westeurope"
    managed = client.resource_groups.update(name, {"managedBy": "/subscriptions/x/y"})
    assert managed.managed_by == "/subscriptions/x/y" and managed.tags == patched.tags

    assert name in [g.name for g in client.resource_groups.list()]
    client.resource_groups.begin_delete(name).result()
    assert client.resource_groups.check_existence(name) is False
    with pytest.raises(ResourceNotFoundError) as caught:
        client.resource_groups.get(name)
    assert caught.value.error is not None
    assert caught.value.error.code == "ResourceGroupNotFound"
    assert caught.value.error.message == f"Resource group '{name}' could not be found."


def test_put_answers_201_then_200_with_an_etag(arm: Arm) -> None:
    path = f"/subscriptions/{SUB}/resourcegroups/{_name()}"
    with arm.http() as raw:
        first = raw.put(path, params=VERSION, json={"location": "eastus"})
        assert first.status_code == 201, first.text
        etag = first.headers["etag"]
        again = raw.put(path, params=VERSION, json={"location": "East US", "tags": {"a": "1"}})
        assert again.status_code == 200
        assert again.headers["etag"] != etag
        got = raw.get(path, params=VERSION)
        assert got.headers["etag"] == again.headers["etag"]
        assert got.json() == again.json()
        stale = raw.put(
            path, params=VERSION, json={"location": "eastus"}, headers={"If-Match": etag}
        )
        assert stale.status_code == 412
        assert stale.json()["error"]["code"] == "PreconditionFailed"
        exists = raw.put(
            path, params=VERSION, json={"location": "eastus"}, headers={"If-None-Match": "*"}
        )
        assert exists.status_code == 412
        fresh = raw.patch(
            path,
            params=VERSION,
            json={"tags": {"b": "2"}},
            headers={"If-Match": got.headers["etag"]},
        )
        assert fresh.status_code == 200 and fresh.json()["tags"] == {"b": "2"}


def test_bad_groups_are_refused(arm: Arm, client: ResourceManagementClient) -> None:
    name = _name()
    client.resource_groups.create_or_update(name, {"location": "northeurope"})
    with pytest.raises(HttpResponseError) as moved:
        client.resource_groups.create_or_update(name, {"location": "westus"})
    assert moved.value.status_code == 400
    assert moved.value.error is not None
    assert moved.value.error.code == "InvalidResourceGroupLocation"
    assert moved.value.error.message == (
        "Invalid resource group location 'westus'. "
        "The Resource group already exists in location 'northeurope'."
    )
    path = f"/subscriptions/{SUB}/resourcegroups"
    cases: list[tuple[str, Any, str]] = [
        (f"{path}/{_name()}", {"tags": {}}, "LocationRequired"),
        (f"{path}/{_name()}", {"location": "atlantis"}, "LocationNotAvailableForResourceGroup"),
        (f"{path}/bad!name", {"location": "eastus"}, "InvalidResourceName"),
        (f"{path}/{'x' * 91}", {"location": "eastus"}, "InvalidResourceName"),
        (f"{path}/ends-with-dot.", {"location": "eastus"}, "InvalidResourceName"),
        (f"{path}/{_name()}", {"location": "eastus", "tags": {"a": 1}}, "InvalidRequestContent"),
        (f"{path}/{_name()}", ["eastus"], "InvalidRequestContent"),
        (f"{path}/{_name()}", {"location": "eastus", "managedBy": 7}, "InvalidRequestContent"),
    ]
    with arm.http() as raw:
        for url, body, code in cases:
            reply = raw.put(url, params=VERSION, json=body)
            assert reply.status_code == 400, (url, reply.text)
            assert reply.json()["error"]["code"] == code, (url, reply.text)
        required = raw.put(f"{path}/{_name()}", params=VERSION, json={})
        assert required.json()["error"]["message"] == (
            "The location property is required for this definition."
        )
        broken = raw.put(
            f"{path}/{_name()}",
            params=VERSION,
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "InvalidRequestContent"
        missing = raw.patch(f"{path}/{_name()}", params=VERSION, json={"tags": {}})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "ResourceGroupNotFound"
        gone = raw.delete(f"{path}/{_name()}", params=VERSION)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "ResourceGroupNotFound"
        unversioned = raw.get(f"{path}/{name}")
        assert unversioned.json()["error"]["code"] == "MissingApiVersionParameter"
        wrong = raw.get(f"{path}/{name}", params={"api-version": "2021-07-02"})
        assert wrong.json()["error"]["code"] == "InvalidApiVersionParameter"
        malformed = raw.get(f"/subscriptions/abc/resourcegroups/{name}", params=VERSION)
        assert malformed.json()["error"]["code"] == "InvalidSubscriptionId"


def test_paths_are_case_insensitive(arm: Arm) -> None:
    name = "CaseGroup-" + uuid.uuid4().hex[:6]
    with arm.http() as raw:
        made = raw.put(
            f"/SUBSCRIPTIONS/{SUB.upper()}/RESOURCEGROUPS/{name}",
            params=VERSION,
            json={"location": "eastus"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["id"] == f"/subscriptions/{SUB}/resourceGroups/{name}"
        got = raw.get(f"/Subscriptions/{SUB}/ResourceGroups/{name.lower()}", params=VERSION)
        assert got.status_code == 200 and got.json()["name"] == name
        assert (
            raw.head(f"/subscriptions/{SUB}/resourceGroups/{name}", params=VERSION).status_code
            == 204
        )


def test_the_list_pages_and_filters_by_tag(
    arm: Arm, client: ResourceManagementClient, sdk: Callable[..., Any]
) -> None:
    sub = str(uuid.uuid4())
    token = arm.token("Owner", sub)
    own = sdk(ResourceManagementClient, token, sub)
    names = [f"g{i}" for i in range(5)]
    for i, name in enumerate(names):
        own.resource_groups.create_or_update(
            name, {"location": "eastus", "tags": {"tier": "web" if i % 2 else "db"}}
        )
    assert [g.name for g in own.resource_groups.list(top=2)] == names  # three pages
    web = own.resource_groups.list(filter="tagName eq 'tier' and tagValue eq 'web'")
    assert [g.name for g in web] == ["g1", "g3"]
    assert len(list(own.resource_groups.list(filter="tagName eq 'Tier'"))) == 5
    with arm.http(token) as raw:
        url: str | None = f"/subscriptions/{sub}/resourcegroups"
        params: dict[str, str] | None = {**VERSION, "$top": "2"}
        pages = 0
        while url:
            body = raw.get(url, params=params).json()
            url, params, pages = body.get("nextLink"), None, pages + 1
            assert url is None or url.startswith(arm.url)
        assert pages == 3
        odd = raw.get(
            f"/subscriptions/{sub}/resourcegroups", params={**VERSION, "$filter": "name eq 'g1'"}
        )
        assert odd.status_code == 400
        assert odd.json()["error"]["code"] == "InvalidFilterInQueryString"
    assert not {g.name for g in client.resource_groups.list()} & set(names)


def test_roles_and_subscriptions_are_enforced(
    arm: Arm, client: ResourceManagementClient, sdk: Callable[..., Any]
) -> None:
    name = _name()
    client.resource_groups.create_or_update(name, {"location": "eastus"})
    reader = sdk(ResourceManagementClient, arm.token("Reader"))
    assert reader.resource_groups.get(name).name == name
    for call in (
        lambda: reader.resource_groups.create_or_update(_name(), {"location": "eastus"}),
        lambda: reader.resource_groups.update(name, {"tags": {}}),
        lambda: reader.resource_groups.begin_delete(name).result(),
    ):
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert refused.value.status_code == 403
        assert refused.value.error is not None
        assert refused.value.error.code == "AuthorizationFailed"
    stranger = sdk(ResourceManagementClient, arm.token("Owner", OTHER_SUB))
    for call in (
        lambda: stranger.resource_groups.get(name),
        lambda: stranger.resource_groups.check_existence(name),
        lambda: list(stranger.resource_groups.list()),
        lambda: stranger.resource_groups.begin_delete(name).result(),
    ):
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert refused.value.status_code == 403
    # the same name in another subscription is another group
    other = sdk(ResourceManagementClient, arm.token("Owner", OTHER_SUB), OTHER_SUB)
    other.resource_groups.create_or_update(name, {"location": "westus"})
    other.resource_groups.begin_delete(name).result()
    assert client.resource_groups.get(name).location == "eastus"


def test_deleting_a_group_deletes_its_resources_and_machine_credentials(
    arm: Arm, client: ResourceManagementClient, database: Engine
) -> None:
    from pyhotpatch.storage._tables import resources

    name, keep = "Doomed-" + uuid.uuid4().hex[:6], _name()
    client.resource_groups.create_or_update(name, {"location": "eastus"})
    client.resource_groups.create_or_update(keep, {"location": "eastus"})
    vm = f"/subscriptions/{SUB}/resourceGroups/{name}/providers/Microsoft.Compute"
    vm += "/virtualMachines/vm1"
    kept_vm = vm.replace(name, keep)
    now = datetime.now(timezone.utc)
    with database.begin() as conn:
        for rid, group, kind in (
            (vm, name, "microsoft.compute/virtualmachines"),
            (
                vm.replace("virtualMachines/vm1", "availabilitySets/set1"),
                name,
                "microsoft.compute/availabilitysets",
            ),
            (kept_vm, keep, "microsoft.compute/virtualmachines"),
        ):
            conn.execute(
                insert(resources).values(
                    id=rid.lower(), subscription=SUB, resource_group=group.lower(), type=kind,
                    name=rid.rsplit("/", 1)[1], body={"id": rid}, etag='"x"',
                    created=now, updated=now,
                )
            )  # fmt: skip
    agent = arm.token("Agent", SUB, machine=vm)
    kept_agent = arm.token("Agent", SUB, machine=kept_vm)
    with arm.http(agent) as machine:
        assert machine.get("/hotpatch/whoami").status_code == 200

    client.resource_groups.begin_delete(name.lower()).result()

    with database.connect() as conn:
        left = {
            r.id
            for r in conn.execute(select(resources.c.id).where(resources.c.subscription == SUB))
        }
    assert not any(f"/resourcegroups/{name.lower()}" in rid for rid in left)
    assert kept_vm.lower() in left
    with arm.http(agent) as machine:
        assert machine.get("/hotpatch/whoami").status_code == 401
    with arm.http(kept_agent) as machine:
        assert machine.get("/hotpatch/whoami").status_code == 200
    assert client.resource_groups.get(keep).name == keep


def test_concurrent_writers_on_postgresql(tmp_path: Path) -> None:
    """Racing creations of one group make one 201 and 200s, never a 500 (PostgreSQL)."""
    with postgres_database() as url:
        server = start_arm(tmp_path, "--db", url)
        try:
            token = server.token("Owner")
            path = f"/subscriptions/{SUB}/resourcegroups/Raced"

            def put(i: int) -> int:
                with server.http(token) as raw:
                    reply = raw.put(
                        path, params=VERSION, json={"location": "eastus", "tags": {"i": str(i)}}
                    )
                    return reply.status_code

            with ThreadPoolExecutor(8) as pool:
                codes = sorted(pool.map(put, range(16)))
            assert codes == [200] * 15 + [201]
            with server.http(token) as raw:
                assert raw.delete(path, params=VERSION).status_code == 200
                assert raw.head(path, params=VERSION).status_code == 404
        finally:
            server.server.stop()
