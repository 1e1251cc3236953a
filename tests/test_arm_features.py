"""Microsoft.Features and resource-provider registration on a real server, through the Azure SDK."""

from __future__ import annotations

import gc
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest
from azure.mgmt.core.policies import ARMAutoResourceProviderRegistrationPolicy
from azure.mgmt.resource.features import FeatureClient
from azure.mgmt.resource.resources import ResourceManagementClient

from arm import OTHER_SUB, SUB, Arm, start_arm
from servers import TOKEN

FEATURES = "2021-07-01"
NS = "Microsoft.Compute"
HOTPATCH = "InGuestHotPatchVMPreview"
ALL = {"InGuestHotPatchVMPreview", "InGuestAutoPatchVMPreview", "InGuestPatchVMPreview"}


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


def _feature_path(sub: str, name: str, action: str = "") -> str:
    path = f"/subscriptions/{sub}/providers/Microsoft.Features/providers/{NS}/features/{name}"
    return f"{path}/{action}" if action else path


def _wait(read: Any, state: str, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = read()
        if found == state or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _fresh(arm: Arm) -> tuple[str, str]:
    """A new subscription (a random GUID) and its Owner token."""
    sub = str(uuid.uuid4())
    return sub, arm.token("Owner", sub)


# --- Microsoft.Features ----------------------------------------------------------------------


def test_register_and_unregister_a_feature_with_the_sdk(arm: Arm, sdk: Callable[..., Any]) -> None:
    sub, token = _fresh(arm)
    client = sdk(FeatureClient, token, sub)
    before = client.features.get(NS, HOTPATCH)
    assert before.name == f"{NS}/{HOTPATCH}"
    assert before.properties.state == "NotRegistered"
    assert before.type == "Microsoft.Features/providers/features"
    assert before.id == (
        f"/subscriptions/{sub}/providers/Microsoft.Features/providers/{NS}/features/{HOTPATCH}"
    )

    started = client.features.register(NS, HOTPATCH)
    assert started.properties.state == "Registering"
    again = client.features.register(NS, HOTPATCH)  # registering twice changes nothing
    assert again.properties.state == "Registering"
    assert _wait(lambda: client.features.get(NS, HOTPATCH).properties.state, "Registered") == (
        "Registered"
    )
    assert client.features.register(NS, HOTPATCH).properties.state == "Registered"

    listed = {f.name: f.properties.state for f in client.features.list(NS)}
    assert listed == {
        f"{NS}/InGuestHotPatchVMPreview": "Registered",
        f"{NS}/InGuestAutoPatchVMPreview": "NotRegistered",
        f"{NS}/InGuestPatchVMPreview": "NotRegistered",
    }
    every = {f.name: f.properties.state for f in client.features.list_all()}
    assert every == listed
    assert list(client.features.list("Microsoft.Storage")) == []

    stopping = client.features.unregister(NS, HOTPATCH)
    assert stopping.properties.state == "Unregistering"
    assert _wait(lambda: client.features.get(NS, HOTPATCH).properties.state, "Unregistered") == (
        "Unregistered"
    )
    never = client.features.unregister(NS, "InGuestPatchVMPreview")
    assert never.properties.state == "NotRegistered"


def test_feature_names_are_case_insensitive_and_canonical(arm: Arm) -> None:
    sub, token = _fresh(arm)
    with arm.http(token) as client:
        reply = client.post(
            f"/SUBSCRIPTIONS/{sub}/PROVIDERS/microsoft.FEATURES/Providers/microsoft.compute"
            "/Features/inguestautopatchvmpreview/REGISTER",
            params={"api-version": "2015-12-01"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "id": f"/subscriptions/{sub}/providers/Microsoft.Features/providers/{NS}"
            "/features/InGuestAutoPatchVMPreview",
            "name": f"{NS}/InGuestAutoPatchVMPreview",
            "properties": {"state": "Registering"},
            "type": "Microsoft.Features/providers/features",
        }


def test_unknown_feature_is_not_found(arm: Arm, sdk: Callable[..., Any]) -> None:
    client = sdk(FeatureClient)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.features.register(NS, "NoSuchFeature")
    assert caught.value.error is not None and caught.value.error.code == "FeatureNotFound"
    assert caught.value.error.message == "The feature 'NoSuchFeature' could not be found."
    with pytest.raises(ResourceNotFoundError):
        client.features.get("Microsoft.Storage", HOTPATCH)


def test_feature_operations_are_listed_without_a_subscription(
    arm: Arm, sdk: Callable[..., Any]
) -> None:
    client = sdk(FeatureClient, arm.token("Reader"))
    names = [op.name for op in client.list_operations()]
    assert "Microsoft.Features/providers/features/register/action" in names
    with arm.http("not-a-token-of-this-server") as anonymous:
        refused = anonymous.get(
            "/providers/Microsoft.Features/operations", params={"api-version": FEATURES}
        )
        assert refused.status_code == 401


def test_feature_lists_page_with_absolute_next_links(arm: Arm) -> None:
    with arm.http() as client:
        url: str | None = f"/subscriptions/{SUB}/providers/Microsoft.Features/features"
        params: dict[str, str] | None = {"api-version": FEATURES, "$top": "1"}
        seen: list[str] = []
        pages = 0
        while url:
            reply = client.get(url, params=params)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            seen += [f["name"].split("/")[1] for f in body["value"]]
            url = body.get("nextLink")
            params = None
            pages += 1
            if url:
                assert url.startswith(arm.url + "/subscriptions/")
                assert "api-version=2021-07-01" in url and "%24top=1" in url
        assert pages == 3 and set(seen) == ALL and len(seen) == 3


def test_features_refuse_bad_requests(arm: Arm) -> None:
    path = _feature_path(SUB, HOTPATCH)
    with arm.http() as client:
        missing = client.get(path)
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "MissingApiVersionParameter"
        old = client.get(path, params={"api-version": "2025-04-01"})  # a resources version
        assert old.status_code == 400
        assert old.json()["error"]["code"] == "InvalidApiVersionParameter"
        assert "'2015-12-01, 2021-07-01'" in old.json()["error"]["message"]
        bad = client.get(
            _feature_path("not-a-subscription", HOTPATCH), params={"api-version": FEATURES}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "InvalidSubscriptionId"
        gone = client.get(
            _feature_path(str(uuid.uuid4()), HOTPATCH), params={"api-version": FEATURES}
        )
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "SubscriptionNotFound"


def test_feature_registration_needs_write_on_the_subscription(
    arm: Arm, sdk: Callable[..., Any]
) -> None:
    reader = sdk(FeatureClient, arm.token("Reader"))
    assert reader.features.get(NS, HOTPATCH).properties.state in {"NotRegistered", "Registered"}
    with pytest.raises(HttpResponseError) as caught:
        reader.features.register(NS, HOTPATCH)
    assert caught.value.status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Features/providers/features/register/action" in caught.value.message

    stranger = sdk(FeatureClient, arm.token("Owner", OTHER_SUB))
    for call in (
        lambda: stranger.features.get(NS, HOTPATCH),
        lambda: stranger.features.unregister(NS, HOTPATCH),
        lambda: list(stranger.features.list_all()),
    ):
        with pytest.raises(HttpResponseError) as refused:
            call()
        assert refused.value.status_code == 403


def test_subscription_feature_registrations_with_the_sdk(arm: Arm, sdk: Callable[..., Any]) -> None:
    sub, token = _fresh(arm)
    client = sdk(FeatureClient, token, sub)
    registrations = client.subscription_feature_registrations
    assert list(registrations.list_all_by_subscription()) == []
    never = registrations.get(NS, "InGuestPatchVMPreview")
    assert never.properties.state == "NotRegistered"
    made = registrations.create_or_update(NS, "inguestpatchvmpreview")
    assert made.name == "InGuestPatchVMPreview"
    assert made.type == "Microsoft.Features/featureProviders/subscriptionFeatureRegistrations"
    assert made.id == (
        f"/subscriptions/{sub}/providers/Microsoft.Features/featureProviders/{NS}"
        "/subscriptionFeatureRegistrations/InGuestPatchVMPreview"
    )
    assert made.properties.state == "Registering"
    assert made.properties.provider_namespace == NS
    assert made.properties.subscription_id == sub
    assert made.properties.registration_date is not None
    assert _wait(
        lambda: registrations.get(NS, "InGuestPatchVMPreview").properties.state, "Registered"
    ) == ("Registered")
    # one state behind both views
    assert client.features.get(NS, "InGuestPatchVMPreview").properties.state == "Registered"
    assert [r.name for r in registrations.list_by_subscription(NS)] == ["InGuestPatchVMPreview"]
    assert [r.name for r in registrations.list_all_by_subscription()] == ["InGuestPatchVMPreview"]
    assert list(registrations.list_by_subscription("Microsoft.Storage")) == []
    registrations.delete(NS, "InGuestPatchVMPreview")
    assert client.features.get(NS, "InGuestPatchVMPreview").properties.state == "NotRegistered"
    with arm.http(token) as raw:
        path = (
            f"/subscriptions/{sub}/providers/Microsoft.Features/featureProviders/{NS}"
            "/subscriptionFeatureRegistrations/InGuestPatchVMPreview"
        )
        assert raw.delete(path, params={"api-version": FEATURES}).status_code == 204
        old = raw.get(path, params={"api-version": "2015-12-01"})  # not in that version
        assert old.status_code == 400
        assert old.json()["error"]["code"] == "NoRegisteredProviderFound"
        unknown = raw.put(path.replace("InGuestPatch", "Nothing"), params={"api-version": FEATURES})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "FeatureNotFound"
        bad = raw.put(path, params={"api-version": FEATURES}, json=["x"])
        assert bad.status_code == 400
    with arm.http(arm.token("Reader", sub)) as reader:
        refused = reader.put(path, params={"api-version": FEATURES}, json={})
        assert refused.status_code == 403


def test_a_registering_feature_settles_after_a_restart(tmp_path: Path) -> None:
    first = start_arm(tmp_path)
    try:
        sub, token = _fresh(first)
        with first.http(token) as client:
            started = client.post(
                _feature_path(sub, HOTPATCH, "register"), params={"api-version": FEATURES}
            )
            assert started.json()["properties"]["state"] == "Registering"
    finally:
        first.server.proc.kill()  # no orderly shutdown
        first.server.proc.wait()
        first.server.stop()
    # a much longer delay now: the due time recorded before the crash still holds
    second = start_arm(tmp_path, "--feature-delay", "600")
    try:
        with second.http(TOKEN) as client:

            def state() -> str:
                reply = client.get(_feature_path(sub, HOTPATCH), params={"api-version": FEATURES})
                assert reply.status_code == 200, reply.text
                found: str = reply.json()["properties"]["state"]
                return found

            assert _wait(state, "Registered") == "Registered"
    finally:
        second.server.stop()


# --- resource providers -------------------------------------------------------------------------


def test_register_a_provider_with_the_sdk(arm: Arm, sdk: Callable[..., Any]) -> None:
    sub, token = _fresh(arm)
    client = sdk(ResourceManagementClient, token, sub)
    compute = client.providers.get(NS)
    assert compute.namespace == NS
    assert compute.id == f"/subscriptions/{sub}/providers/{NS}"
    assert compute.registration_state == "NotRegistered"
    assert compute.registration_policy == "RegistrationRequired"
    kinds = {t.resource_type: t for t in compute.resource_types or []}
    assert {"virtualMachines", "availabilitySets", "locations/operations"} <= set(kinds)
    assert "2026-04-01" in (kinds["virtualMachines"].api_versions or [])
    assert "East US" in (kinds["virtualMachines"].locations or [])

    assert client.providers.register("microsoft.compute").registration_state == "Registering"
    assert _wait(lambda: client.providers.get(NS).registration_state, "Registered") == (
        "Registered"
    )
    listed = {p.namespace: p.registration_state for p in client.providers.list()}
    assert listed == {
        "Microsoft.Compute": "Registered",
        "Microsoft.Features": "Registered",
        "Microsoft.Resources": "Registered",
    }
    assert client.providers.unregister(NS).registration_state == "Unregistering"
    assert _wait(lambda: client.providers.get(NS).registration_state, "Unregistered") == (
        "Unregistered"
    )
    free = client.providers.unregister("Microsoft.Resources")
    assert (free.registration_state, free.registration_policy) == ("Registered", "RegistrationFree")


def test_unknown_namespace_is_invalid(arm: Arm, sdk: Callable[..., Any]) -> None:
    client = sdk(ResourceManagementClient)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.providers.register("Microsoft.Nothing")
    assert caught.value.error is not None
    assert caught.value.error.code == "InvalidResourceNamespace"
    assert caught.value.error.message == "The resource namespace 'Microsoft.Nothing' is invalid."
    with arm.http() as raw:
        reply = raw.get(
            f"/subscriptions/{SUB}/providers/Contoso.Widgets", params={"api-version": "2016-02-01"}
        )
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "InvalidResourceNamespace"


def test_provider_routes_do_not_shadow_the_features_routes(arm: Arm) -> None:
    with arm.http() as client:
        provider = client.get(
            f"/subscriptions/{SUB}/providers/Microsoft.Features",
            params={"api-version": "2016-02-01"},
        )
        assert provider.json()["namespace"] == "Microsoft.Features"
        features = client.get(
            f"/subscriptions/{SUB}/providers/Microsoft.Features/features",
            params={"api-version": FEATURES},
        )
        assert features.status_code == 200 and "value" in features.json()
        one = client.get(_feature_path(SUB, HOTPATCH), params={"api-version": FEATURES})
        assert one.json()["name"] == f"{NS}/{HOTPATCH}"
        # the features family refuses the providers' versions and the other way round
        wrong = client.get(
            f"/subscriptions/{SUB}/providers/Microsoft.Compute", params={"api-version": FEATURES}
        )
        assert wrong.json()["error"]["code"] == "InvalidApiVersionParameter"


def test_provider_registration_needs_write(arm: Arm, sdk: Callable[..., Any]) -> None:
    reader = sdk(ResourceManagementClient, arm.token("Reader"))
    assert reader.providers.get(NS).namespace == NS
    with pytest.raises(HttpResponseError) as caught:
        reader.providers.register(NS)
    assert caught.value.status_code == 403
    assert "Microsoft.Compute/register/action" in caught.value.message
    stranger = sdk(ResourceManagementClient, arm.token("Owner", OTHER_SUB))
    with pytest.raises(HttpResponseError) as refused:
        list(stranger.providers.list())
    assert refused.value.status_code == 403


def test_provider_list_pages(arm: Arm) -> None:
    with arm.http(arm.token("Reader")) as client:
        url: str | None = f"/subscriptions/{SUB}/providers"
        params: dict[str, str] | None = {"api-version": "2025-04-01", "$top": "2"}
        seen: list[str] = []
        while url:
            body = client.get(url, params=params).json()
            seen += [p["namespace"] for p in body["value"]]
            url, params = body.get("nextLink"), None
        assert seen == ["Microsoft.Compute", "Microsoft.Features", "Microsoft.Resources"]


# --- azure-mgmt-core's automatic registration ---------------------------------------------------


def test_missing_registration_is_refused_in_the_words_the_sdk_parses(tmp_path: Path) -> None:
    from azure.mgmt.core.policies._base import _SansIOARMAutoResourceProviderRegistrationPolicy

    from pyhotpatch.server._errors import ApiError
    from pyhotpatch.server.arm._registrations import require_provider
    from pyhotpatch.storage import open_database

    engine = open_database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with engine.connect() as conn, pytest.raises(ApiError) as caught:
        require_provider(conn, SUB, "Microsoft.Compute", now)
    engine.dispose()
    assert caught.value.status == 409
    body = {"error": {"code": caught.value.code, "message": caught.value.message}}
    assert body == {
        "error": {
            "code": "MissingSubscriptionRegistration",
            "message": "The subscription is not registered to use namespace 'Microsoft.Compute'. "
            "See https://aka.ms/rps-not-found for how to register subscriptions.",
        }
    }
    response = SimpleNamespace(http_response=SimpleNamespace(text=lambda: json.dumps(body)))
    policy = _SansIOARMAutoResourceProviderRegistrationPolicy
    found = policy._check_rp_not_registered_err(response)
    assert found == "Microsoft.Compute"


def test_the_sdk_registers_a_provider_by_itself(
    arm: Arm, monkeypatch: pytest.MonkeyPatch, sdk: Callable[..., Any]
) -> None:
    """azure-mgmt-core's own registration code (POST, then GET with 2016-02-01) succeeds."""
    from azure.mgmt.core.policies import _base

    real_sleep = time.sleep
    monkeypatch.setattr(_base, "time", SimpleNamespace(sleep=lambda _s: real_sleep(0.3)))
    sub, token = _fresh(arm)
    client = sdk(ResourceManagementClient, token, sub)
    pipeline = client._client._pipeline
    policy = next(
        p
        for p in pipeline._impl_policies
        if isinstance(p, ARMAutoResourceProviderRegistrationPolicy)
    )
    url = f"{arm.url}/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
    initial = PipelineRequest(HttpRequest("GET", url), PipelineContext(pipeline._transport))
    prefix = policy._extract_subscription_url(url)
    assert prefix == f"{arm.url}/subscriptions/{sub}/"
    assert policy._register_rp(initial, prefix, "Microsoft.Compute") is True
    assert client.providers.get(NS).registration_state == "Registered"


def test_the_sdk_registers_on_a_missing_registration_and_retries(
    arm: Arm, monkeypatch: pytest.MonkeyPatch, sdk: Callable[..., Any]
) -> None:
    """The whole path: 409 from a Microsoft.Compute route, registration, the retried call."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.core.policies import _base

    real_sleep = time.sleep
    monkeypatch.setattr(_base, "time", SimpleNamespace(sleep=lambda _s: real_sleep(0.3)))
    sub, token = _fresh(arm)
    with arm.http(token) as raw:
        refused = raw.get(
            f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
            params={"api-version": "2026-04-01"},
        )
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "MissingSubscriptionRegistration"
    compute = sdk(ComputeManagementClient, token, sub)
    assert list(compute.virtual_machines.list_all()) == []
    resources = sdk(ResourceManagementClient, token, sub)
    assert resources.providers.get(NS).registration_state == "Registered"
