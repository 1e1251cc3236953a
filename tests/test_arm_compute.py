"""Virtual machines and availability sets over HTTPS, driven by the real Azure SDK.

Error cases and headers go through raw httpx; everything the SDK can do goes through
``ComputeManagementClient``. The module's server has Microsoft.Compute registered up front;
one test starts from a fresh subscription and lets the SDK register the provider itself.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
import zoneinfo
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as m
from azure.mgmt.resource.resources import ResourceManagementClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arm import OTHER_SUB, SUB, Arm, start_arm
from pyhotpatch.catalog._products import DEFAULT_PRODUCTS, DEMO
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm import _vm_model
from pyhotpatch.server.arm._registrations import PREVIEW_FEATURES

API = "2024-11-01"
GROUP = "rg-Compute"
HOTPATCH_SKU = "2022-datacenter-azure-edition-hotpatch"
WIN = "properties.osProfile.windowsConfiguration"
PATCH = f"{WIN}.patchSettings"
NOT_FOUND = (
    "The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{group}' "
    "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
)


def _register(client: httpx.Client, subscription: str, namespace: str) -> None:
    base = f"/subscriptions/{subscription}/providers/{namespace}"
    reply = client.post(f"{base}/register", params={"api-version": "2021-04-01"})
    assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + 20
    while (
        client.get(base, params={"api-version": "2021-04-01"}).json()["registrationState"]
        != "Registered"
    ):
        assert time.monotonic() < deadline, f"{namespace} never registered"
        time.sleep(0.25)


def _register_feature(client: httpx.Client, feature: str) -> None:
    base = (
        f"/subscriptions/{SUB}/providers/Microsoft.Features/providers/Microsoft.Compute"
        f"/features/{feature}"
    )
    params = {"api-version": "2021-07-01"}
    assert client.post(f"{base}/register", params=params).status_code == 200
    deadline = time.monotonic() + 20
    while client.get(base, params=params).json()["properties"]["state"] != "Registered":
        assert time.monotonic() < deadline, f"{feature} never registered"
        time.sleep(0.25)


def _group(client: httpx.Client, subscription: str, group: str, location: str = "eastus") -> None:
    reply = client.put(
        f"/subscriptions/{subscription}/resourcegroups/{group}",
        params={"api-version": "2025-04-01"},
        json={"location": location},
    )
    assert reply.status_code in (200, 201), reply.text


@pytest.fixture(scope="module")
def ready(arm: Arm) -> Arm:
    """The module's server with a resource group and Microsoft.Compute registered."""
    with arm.http(arm.token("Owner")) as client:
        _group(client, SUB, GROUP)
        _register(client, SUB, "Microsoft.Compute")
    return arm


@pytest.fixture(scope="module")
def compute(ready: Arm) -> ComputeManagementClient:
    return ComputeManagementClient(subscription_id=SUB, **ready.sdk())


@pytest.fixture
def http(ready: Arm) -> Iterator[httpx.Client]:
    with ready.http(ready.token("Owner")) as client:
        yield client


def _vm_path(name: str, group: str = GROUP, subscription: str = SUB) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def _as_path(name: str, group: str = GROUP) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{group}"
        f"/providers/Microsoft.Compute/availabilitySets/{name}"
    )


def _sdk_vm(*, hotpatch: bool = True, sku: str = HOTPATCH_SKU, **extra: Any) -> m.VirtualMachine:
    return m.VirtualMachine(
        location="eastus",
        tags={"hotpatch-environment": "DevTest"},
        hardware_profile=m.HardwareProfile(vm_size="Standard_D2s_v5"),
        storage_profile=m.StorageProfile(
            image_reference=m.ImageReference(
                publisher="MicrosoftWindowsServer", offer="WindowsServer", sku=sku, version="latest"
            )
        ),
        os_profile=m.OSProfile(
            computer_name="web01",
            admin_username="azureuser",
            admin_password="S3cret-Passw0rd!",
            windows_configuration=m.WindowsConfiguration(
                provision_vm_agent=True,
                enable_automatic_updates=True,
                time_zone="Pacific Standard Time",
                patch_settings=m.PatchSettings(
                    patch_mode="AutomaticByPlatform",
                    enable_hotpatching=hotpatch,
                    assessment_mode="AutomaticByPlatform",
                    automatic_by_platform_settings=m.WindowsVMGuestPatchAutomaticByPlatformSettings(
                        reboot_setting="IfRequired",
                        bypass_platform_safety_checks_on_user_schedule=False,
                    ),
                ),
            ),
        ),
        **extra,
    )


def _raw_vm(**windows: Any) -> dict[str, Any]:
    """A hotpatch VM as raw JSON; keyword arguments replace ``patchSettings`` fields."""
    settings: dict[str, Any] = {
        "patchMode": "AutomaticByPlatform",
        "enableHotpatching": True,
        "automaticByPlatformSettings": {"bypassPlatformSafetyChecksOnUserSchedule": False},
    }
    settings.update(windows)
    return {
        "location": "eastus",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
            "storageProfile": {
                "imageReference": {
                    "publisher": "MicrosoftWindowsServer",
                    "offer": "WindowsServer",
                    "sku": HOTPATCH_SKU,
                    "version": "latest",
                }
            },
            "osProfile": {
                "computerName": "vm",
                "adminUsername": "azureuser",
                "adminPassword": "S3cret-Passw0rd!",
                "windowsConfiguration": {
                    "provisionVMAgent": True,
                    "enableAutomaticUpdates": True,
                    "patchSettings": settings,
                },
            },
        },
    }


def _put(
    client: httpx.Client, name: str, body: Any, *, api: str = API, **headers: str
) -> httpx.Response:
    return client.put(_vm_path(name), params={"api-version": api}, json=body, headers=headers)


def _error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    return error


# --- the SDK's own calls ------------------------------------------------------------------------


def test_vm_lifecycle_with_the_sdk(compute: ComputeManagementClient) -> None:
    made = compute.virtual_machines.begin_create_or_update(GROUP, "Web-01", _sdk_vm()).result()
    assert made.name == "Web-01"
    assert made.id == _vm_path("Web-01")
    assert made.type == "Microsoft.Compute/virtualMachines"
    assert made.provisioning_state == "Succeeded"
    assert uuid.UUID(made.vm_id)
    assert made.etag
    settings = made.os_profile.windows_configuration.patch_settings
    assert settings.enable_hotpatching is True
    assert settings.patch_mode == "AutomaticByPlatform"
    assert settings.automatic_by_platform_settings.reboot_setting == "IfRequired"
    assert made.os_profile.admin_password is None
    assert made.storage_profile.image_reference.sku == HOTPATCH_SKU
    assert made.tags == {"hotpatch-environment": "DevTest"}

    got = compute.virtual_machines.get(GROUP, "web-01")
    assert got.vm_id == made.vm_id and got.etag == made.etag and got.instance_view is None

    viewed = compute.virtual_machines.get(GROUP, "Web-01", expand="instanceView")
    view = viewed.instance_view
    assert view.computer_name == "web01"
    assert view.os_name == "Windows Server 2022 Datacenter: Azure Edition"
    assert [s.code for s in view.statuses] == [
        "ProvisioningState/succeeded",
        "PowerState/unknown",
    ]
    assert view.patch_status.available_patch_summary.status == "Unknown"

    model = compute.virtual_machines.get(GROUP, "Web-01")
    model.os_profile.windows_configuration.patch_settings.enable_hotpatching = False
    off = compute.virtual_machines.begin_create_or_update(GROUP, "Web-01", model).result()
    assert off.os_profile.windows_configuration.patch_settings.enable_hotpatching is False
    assert off.vm_id == made.vm_id and off.etag != made.etag

    tagged = compute.virtual_machines.begin_update(
        GROUP, "Web-01", m.VirtualMachineUpdate(tags={"hotpatch-environment": "Production"})
    ).result()
    assert tagged.tags == {"hotpatch-environment": "Production"}
    assert tagged.os_profile.windows_configuration.patch_settings.patch_mode == (
        "AutomaticByPlatform"
    )

    assert "Web-01" in [vm.name for vm in compute.virtual_machines.list(GROUP)]
    assert "Web-01" in [vm.name for vm in compute.virtual_machines.list_all()]

    compute.virtual_machines.begin_delete(GROUP, "Web-01").result()
    with pytest.raises(ResourceNotFoundError) as gone:
        compute.virtual_machines.get(GROUP, "Web-01")
    assert gone.value.error.code == "ResourceNotFound"
    assert gone.value.error.message == NOT_FOUND.format(name="Web-01", group=GROUP)


def test_availability_sets_with_the_sdk(compute: ComputeManagementClient) -> None:
    made = compute.availability_sets.create_or_update(
        GROUP, "Front-End", m.AvailabilitySet(location="East US", tags={"tier": "web"})
    )
    assert made.location == "eastus"
    assert made.sku.name == "Aligned"
    assert (made.platform_update_domain_count, made.platform_fault_domain_count) == (5, 2)
    assert made.virtual_machines == []

    vm = _sdk_vm(availability_set=m.SubResource(id=_as_path("front-end").lower()))
    placed = compute.virtual_machines.begin_create_or_update(GROUP, "web-as", vm).result()
    assert placed.availability_set.id == _as_path("Front-End")

    got = compute.availability_sets.get(GROUP, "front-end")
    assert [ref.id for ref in got.virtual_machines] == [_vm_path("web-as")]
    assert "Front-End" in [s.name for s in compute.availability_sets.list(GROUP)]
    assert "Front-End" in [s.name for s in compute.availability_sets.list_by_subscription()]

    changed = compute.availability_sets.update(
        GROUP, "Front-End", m.AvailabilitySetUpdate(tags={"tier": "api"})
    )
    assert changed.tags == {"tier": "api"} and changed.platform_update_domain_count == 5

    with pytest.raises(HttpResponseError) as busy:
        compute.availability_sets.delete(GROUP, "Front-End")
    assert busy.value.status_code == 409
    assert busy.value.error.code == "OperationNotAllowed"

    compute.virtual_machines.begin_delete(GROUP, "web-as").result()
    compute.availability_sets.delete(GROUP, "Front-End")
    with pytest.raises(ResourceNotFoundError):
        compute.availability_sets.get(GROUP, "Front-End")


def test_validation_errors_reach_the_sdk(compute: ComputeManagementClient) -> None:
    vm = _sdk_vm()
    vm.os_profile.windows_configuration.patch_settings.automatic_by_platform_settings.bypass_platform_safety_checks_on_user_schedule = True
    with pytest.raises(HttpResponseError) as bypass:
        compute.virtual_machines.begin_create_or_update(GROUP, "bad", vm).result()
    assert bypass.value.status_code == 400
    assert bypass.value.error.code == "InvalidParameter"
    assert bypass.value.error.message == (
        "Hotpatch updates require platform safety checks. The "
        "'BypassPlatformSafetyChecksOnUserSchedule' flag must be set to false to enable "
        "hotpatching."
    )
    assert bypass.value.error.target == (
        f"{PATCH}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule"
    )

    by_os = _sdk_vm(hotpatch=False, sku="2019-datacenter")
    windows = by_os.os_profile.windows_configuration
    windows.enable_automatic_updates = False
    windows.patch_settings = m.PatchSettings(patch_mode="AutomaticByOS")
    with pytest.raises(HttpResponseError) as automatic:
        compute.virtual_machines.begin_create_or_update(GROUP, "bad", by_os).result()
    assert automatic.value.error.code == "InvalidParameter"
    assert automatic.value.error.message == (
        "The patchMode 'AutomaticByOS' is invalid. For patchMode 'AutomaticByOS', the property "
        "'enableAutomaticUpdates' must be set to true."
    )
    assert automatic.value.error.target == f"{PATCH}.patchMode"


# --- validation, one rule at a time ------------------------------------------------------------


def _with(path: str, value: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """``body`` (default a hotpatch VM) with the value at a dotted path replaced (None removes)."""
    result = copy.deepcopy(body if body is not None else _raw_vm())
    *parents, leaf = path.split(".")
    node = result
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return result


IMAGE = "properties.storageProfile.imageReference"
REFUSALS = [
    pytest.param(
        _with(
            f"{IMAGE}.sku",
            "demo-legacy",
            _with(f"{IMAGE}.publisher", "pyhotpatch", _with(f"{IMAGE}.offer", "python-service")),
        ),
        f"{PATCH}.enableHotpatching",
        "the image 'pyhotpatch:python-service:demo-legacy' does not support hotpatching",
        id="image-not-hotpatch-capable",
    ),
    pytest.param(
        _with(f"{IMAGE}.sku", "2019-datacenter"),
        f"{PATCH}.enableHotpatching",
        "'MicrosoftWindowsServer:WindowsServer:2019-datacenter' does not support hotpatching",
        id="unknown-image",
    ),
    pytest.param(
        _raw_vm(patchMode="AutomaticByOS"),
        f"{PATCH}.patchMode",
        "For enableHotpatching, the 'provisionVMAgent' must be set to true and 'patchMode' "
        "must be set to 'AutomaticByPlatform'.",
        id="hotpatch-needs-platform-mode",
    ),
    pytest.param(
        _with(f"{WIN}.provisionVMAgent", False),
        f"{WIN}.provisionVMAgent",
        "the property 'provisionVMAgent' must be set to true.",
        id="hotpatch-needs-agent",
    ),
    pytest.param(
        _with(f"{WIN}.patchSettings", None),
        f"{PATCH}",
        "PatchSettings must be specified for hotpatch compatible VMs.",
        id="hotpatch-image-needs-patch-settings",
    ),
    pytest.param(
        _with(
            f"{WIN}.enableAutomaticUpdates",
            True,
            _raw_vm(patchMode="Manual", enableHotpatching=False),
        ),
        f"{PATCH}.patchMode",
        "The patchMode 'Manual' is invalid. For patchMode 'Manual', the property "
        "'enableAutomaticUpdates' must be set to false.",
        id="manual-needs-automatic-updates-off",
    ),
    pytest.param(
        _raw_vm(patchMode="Sometimes"),
        f"{PATCH}.patchMode",
        "The value 'Sometimes' of property 'patchMode' is not valid. Allowed values are "
        "'Manual', 'AutomaticByOS', 'AutomaticByPlatform'.",
        id="unknown-patch-mode",
    ),
    pytest.param(
        _raw_vm(assessmentMode="Weekly"),
        f"{PATCH}.assessmentMode",
        "The value 'Weekly' of property 'assessmentMode' is not valid.",
        id="unknown-assessment-mode",
    ),
    pytest.param(
        _raw_vm(automaticByPlatformSettings={"rebootSetting": "Sometimes"}),
        f"{PATCH}.automaticByPlatformSettings.rebootSetting",
        "Allowed values are 'Unknown', 'IfRequired', 'Never', 'Always'.",
        id="unknown-reboot-setting",
    ),
    pytest.param(
        _raw_vm(enableHotpatching="yes"),
        f"{PATCH}.enableHotpatching",
        "The property 'enableHotpatching' must be true or false.",
        id="hotpatch-flag-not-boolean",
    ),
    pytest.param(
        _with(f"{WIN}.timeZone", "Mars Standard Time"),
        f"{WIN}.timeZone",
        "The value 'Mars Standard Time' of property 'timeZone' is not a known time zone.",
        id="unknown-time-zone",
    ),
    pytest.param(
        _with("zones", ["4"]),
        "zones",
        "A virtual machine takes at most one availability zone",
        id="unknown-zone",
    ),
    pytest.param(
        _with("zones", ["1", "2"]),
        "zones",
        "A virtual machine takes at most one availability zone",
        id="two-zones",
    ),
    pytest.param(
        _with("tags", {"hotpatch-environment": "Staging"}),
        "tags.hotpatch-environment",
        "The value 'Staging' of tag 'hotpatch-environment' is not valid. Allowed values are "
        "'DevTest', 'Production'.",
        id="unknown-environment",
    ),
    pytest.param(
        _with("location", "usgovvirginia"),
        f"{PATCH}.enableHotpatching",
        "cannot be set to true in location 'usgovvirginia'",
        id="sovereign-region",
    ),
    pytest.param(
        _with(
            "properties.osProfile.linuxConfiguration",
            {"patchSettings": {"patchMode": "AutomaticByPlatform", "enableHotpatching": True}},
            _with(f"{WIN}", None),
        ),
        "properties.osProfile.linuxConfiguration.patchSettings.enableHotpatching",
        "The property 'enableHotpatching' is not supported for Linux virtual machines",
        id="linux-has-no-hotpatch",
    ),
    pytest.param(
        _with(
            "properties.osProfile.linuxConfiguration",
            {"patchSettings": {"patchMode": "AutomaticByOS"}},
            _with(f"{WIN}", None),
        ),
        "properties.osProfile.linuxConfiguration.patchSettings.patchMode",
        "Allowed values are 'ImageDefault', 'AutomaticByPlatform'.",
        id="linux-patch-modes",
    ),
    pytest.param(
        _with("properties.availabilitySet", {"id": _as_path("nowhere")}),
        "properties.availabilitySet.id",
        f"The availability set '{_as_path('nowhere')}' named by property 'availabilitySet.id' "
        "was not found.",
        id="availability-set-missing",
    ),
]


@pytest.mark.parametrize(("body", "target", "message"), REFUSALS)
def test_each_rule_refuses_with_its_target(
    http: httpx.Client, body: dict[str, Any], target: str, message: str
) -> None:
    error = _error(_put(http, "refused", body), 400)
    assert error["code"] == "InvalidParameter"
    assert error["target"] == target
    assert message in error["message"]
    assert http.get(_vm_path("refused"), params={"api-version": API}).status_code == 404


def test_old_api_versions_cannot_touch_hotpatch_images(http: httpx.Client) -> None:
    error = _error(_put(http, "old-api", _raw_vm(), api="2019-12-01"), 400)
    assert error == {
        "code": "BadRequest",
        "message": "Hotpatch compatible VMs cannot be created or updated with an API version "
        "lower than '2020-06-01'.",
    }
    plain = _with(f"{IMAGE}.sku", "2019-datacenter", _raw_vm(enableHotpatching=False))
    assert _put(http, "old-api", plain, api="2019-12-01").status_code == 201


def test_requests_that_are_not_models(http: httpx.Client) -> None:
    assert _error(_put(http, "nobody", [1, 2]), 400)["code"] == "InvalidRequestContent"
    not_a_number = http.put(
        _vm_path("nobody"),
        params={"api-version": API},
        content=b'{"location": "eastus", "properties": {"extra": [NaN]}}',
        headers={"content-type": "application/json"},
    )
    assert _error(not_a_number, 400)["code"] == "InvalidRequestContent"
    assert _error(_put(http, "nobody", {"properties": {}}), 400)["code"] == "LocationRequired"
    nowhere = _error(_put(http, "nobody", _with("location", "atlantis")), 400)
    assert nowhere["code"] == "LocationNotAvailableForResourceType"
    assert _error(_put(http, "no$such", _raw_vm()), 400)["code"] == "InvalidResourceName"
    missing_group = http.put(
        _vm_path("vm", group="no-such-group"), params={"api-version": API}, json=_raw_vm()
    )
    assert _error(missing_group, 404)["code"] == "ResourceGroupNotFound"
    wrong_version = http.get(_vm_path("vm"), params={"api-version": "2000-01-01"})
    assert _error(wrong_version, 400)["code"] == "NoRegisteredProviderFound"
    expand = http.get(_vm_path("vm"), params={"api-version": API, "$expand": "everything"})
    assert _error(expand, 400)["target"] == "$expand"


def test_what_is_allowed(http: httpx.Client) -> None:
    legacy = _with(
        IMAGE,
        {"publisher": "pyhotpatch", "offer": "python-service", "sku": "demo-legacy"},
        _raw_vm(enableHotpatching=False),
    )
    restart_based = _put(http, "legacy", legacy)
    assert restart_based.status_code == 201, restart_based.text
    assert restart_based.json()["properties"]["storageProfile"]["imageReference"]["version"] == (
        "latest"
    )
    custom = _with(
        IMAGE, {"publisher": "Contoso", "offer": "Anything", "sku": "1", "version": "2.0"}
    )
    anything = _put(http, "custom", _with(f"{PATCH}.enableHotpatching", False, custom))
    assert anything.status_code == 201, anything.text
    assert (
        anything.json()["properties"]["storageProfile"]["imageReference"]["exactVersion"] == "2.0"
    )
    iana = _put(http, "iana", _with(f"{WIN}.timeZone", "Europe/Berlin"))
    assert iana.status_code == 201, iana.text
    spelled = _put(http, "windows-tz", _with(f"{WIN}.timeZone", "w. europe standard time"))
    assert spelled.json()["properties"]["osProfile"]["windowsConfiguration"]["timeZone"] == (
        "W. Europe Standard Time"
    )
    zoned = _put(
        http, "zoned", _with("tags", {"Hotpatch-Environment": "devtest"}, _with("zones", ["2"]))
    )
    assert zoned.status_code == 201, zoned.text
    assert zoned.json()["zones"] == ["2"]
    assert zoned.json()["tags"] == {"Hotpatch-Environment": "DevTest"}
    linux = _with(
        "properties.osProfile.linuxConfiguration",
        {"patchSettings": {"patchMode": "automaticbyplatform"}},
        _with(
            f"{WIN}",
            None,
            _with(IMAGE, {"publisher": "Canonical", "offer": "ubuntu", "sku": "22_04-lts"}),
        ),
    )
    made = _put(http, "linux", linux)
    assert made.status_code == 201, made.text
    config = made.json()["properties"]["osProfile"]["linuxConfiguration"]
    assert config["patchSettings"] == {
        "patchMode": "AutomaticByPlatform",
        "assessmentMode": "ImageDefault",
        "automaticByPlatformSettings": {
            "rebootSetting": "IfRequired",
            "bypassPlatformSafetyChecksOnUserSchedule": False,
        },
    }
    assert config["provisionVMAgent"] is True
    for name in ("legacy", "custom", "iana", "windows-tz", "zoned", "linux"):
        assert http.delete(_vm_path(name), params={"api-version": API}).status_code == 200


def test_defaults_and_secrets(http: httpx.Client) -> None:
    bare = _with(
        "properties.osProfile",
        {"adminUsername": "ops", "adminPassword": "hunter2", "customData": "c2VjcmV0"},
        _with(IMAGE, {"publisher": "Contoso", "offer": "Anything", "sku": "1"}),
    )
    made = _put(http, "Defaults", bare)
    assert made.status_code == 201, made.text
    body = made.json()
    assert "hunter2" not in made.text and "c2VjcmV0" not in made.text
    assert body["properties"]["osProfile"] == {"adminUsername": "ops", "computerName": "Defaults"}
    assert made.headers["etag"] == body["etag"]
    windows = _with("properties.osProfile.windowsConfiguration", {}, bare)
    again = _put(http, "defaults-win", windows).json()["properties"]["osProfile"]
    assert again["windowsConfiguration"] == {
        "provisionVMAgent": True,
        "enableAutomaticUpdates": True,
        "patchSettings": {
            "patchMode": "AutomaticByOS",
            "enableHotpatching": False,
            "assessmentMode": "ImageDefault",
        },
    }
    for name in ("Defaults", "defaults-win"):
        http.delete(_vm_path(name), params={"api-version": API})


# --- updates ------------------------------------------------------------------------------------


def test_get_then_put_the_whole_model_is_accepted(http: httpx.Client) -> None:
    made = _put(http, "round-trip", _raw_vm())
    assert made.status_code == 201, made.text
    for expand in (None, "instanceView"):
        params = {"api-version": API, **({"$expand": expand} if expand else {})}
        model = http.get(_vm_path("round-trip"), params=params).json()
        model["resources"] = [{"id": "extension"}]
        again = _put(http, "round-trip", model)
        assert again.status_code == 200, again.text
        assert again.json()["properties"]["vmId"] == made.json()["properties"]["vmId"]
        assert again.json()["etag"] == made.json()["etag"]
        assert "instanceView" not in again.json()["properties"]
    http.delete(_vm_path("round-trip"), params={"api-version": API})


def test_what_only_creation_may_choose(http: httpx.Client) -> None:
    assert _put(http, "fixed", _raw_vm()).status_code == 201
    moved = _error(_put(http, "fixed", _with("location", "westus")), 409)
    assert moved["code"] == "InvalidResourceLocation"
    image = _error(
        _put(http, "fixed", _with(f"{IMAGE}.sku", "2022-datacenter-azure-edition-core")), 409
    )
    assert image == {
        "code": "PropertyChangeNotAllowed",
        "message": "Changing property 'imageReference' is not allowed.",
        "target": IMAGE,
    }
    renamed = _error(_put(http, "fixed", _with("properties.osProfile.computerName", "other")), 409)
    assert renamed["target"] == "properties.osProfile.computerName"
    updates = _error(_put(http, "fixed", _with(f"{WIN}.enableAutomaticUpdates", False)), 409)
    assert updates["target"] == f"{WIN}.enableAutomaticUpdates"
    zones = _error(_put(http, "fixed", _with("zones", ["1"])), 409)
    assert zones["target"] == "zones"
    linux = _with("properties.osProfile.linuxConfiguration", {}, _with(WIN, None))
    assert _error(_put(http, "fixed", linux), 409)["code"] == "PropertyChangeNotAllowed"
    # what a PUT leaves out is kept: a PUT of tags alone changes only the tags
    kept = _put(http, "fixed", {"location": "eastus", "tags": {"team": "a"}})
    assert kept.status_code == 200, kept.text
    assert kept.json()["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"][
        "enableHotpatching"
    ]
    http.delete(_vm_path("fixed"), params={"api-version": API})


def test_patch_mode_transitions(http: httpx.Client) -> None:
    plain = _with(IMAGE, {"publisher": "Contoso", "offer": "Anything", "sku": "1"}, _raw_vm())

    def mode(name: str, value: str) -> httpx.Response:
        return http.patch(
            _vm_path(name),
            params={"api-version": API},
            json={
                "properties": {
                    "osProfile": {
                        "windowsConfiguration": {
                            "patchSettings": {"patchMode": value, "enableHotpatching": False}
                        }
                    }
                }
            },
        )

    off = _with(f"{WIN}.enableAutomaticUpdates", False, plain)
    assert (
        _put(http, "updates-off", _with(f"{PATCH}.enableHotpatching", False, off)).status_code
        == 201
    )
    assert mode("updates-off", "Manual").status_code == 200
    assert mode("updates-off", "AutomaticByPlatform").status_code == 200
    refused = _error(mode("updates-off", "AutomaticByOS"), 400)
    assert refused["target"] == f"{PATCH}.patchMode"
    assert "requires 'enableAutomaticUpdates' to be true" in refused["message"]

    on = _with(f"{PATCH}.enableHotpatching", False, plain)
    assert _put(http, "updates-on", on).status_code == 201
    assert mode("updates-on", "AutomaticByOS").status_code == 200
    never = _error(mode("updates-on", "Manual"), 400)
    assert "Changing between 'AutomaticByOS' and 'Manual' is not supported." in never["message"]
    assert mode("updates-on", "AutomaticByPlatform").status_code == 200
    manual = _error(mode("updates-on", "Manual"), 400)
    assert "requires 'enableAutomaticUpdates' to be false" in manual["message"]
    for name in ("updates-off", "updates-on"):
        http.delete(_vm_path(name), params={"api-version": API})


def test_patch_merges_and_validates(http: httpx.Client) -> None:
    assert _put(http, "patched", _with("tags", {"a": "1", "b": "2"})).status_code == 201
    missing = http.patch(_vm_path("nobody"), params={"api-version": API}, json={"tags": {}})
    assert _error(missing, 404)["code"] == "ResourceNotFound"
    tags = http.patch(_vm_path("patched"), params={"api-version": API}, json={"tags": {"c": "3"}})
    assert tags.json()["tags"] == {"c": "3"}
    bypass = {"automaticByPlatformSettings": {"bypassPlatformSafetyChecksOnUserSchedule": True}}
    refused = http.patch(
        _vm_path("patched"),
        params={"api-version": API},
        json={"properties": {"osProfile": {"windowsConfiguration": {"patchSettings": bypass}}}},
    )
    assert _error(refused, 400)["code"] == "InvalidParameter"
    http.delete(_vm_path("patched"), params={"api-version": API})


def test_etags_guard_updates(http: httpx.Client) -> None:
    made = _put(http, "guarded", _raw_vm())
    etag = made.headers["etag"]
    stale = _put(http, "guarded", _raw_vm(), **{"If-Match": '"not-the-etag"'})
    assert _error(stale, 412)["code"] == "PreconditionFailed"
    assert _error(_put(http, "guarded", _raw_vm(), **{"If-None-Match": "*"}), 412)
    assert _put(http, "guarded", _raw_vm(), **{"If-Match": etag}).status_code == 200
    assert _error(_put(http, "unguarded", _raw_vm(), **{"If-Match": "*"}), 412)
    gone = http.delete(
        _vm_path("guarded"), params={"api-version": API}, headers={"If-Match": '"nope"'}
    )
    assert gone.status_code == 412
    assert http.delete(_vm_path("guarded"), params={"api-version": API}).status_code == 200
    assert http.delete(_vm_path("guarded"), params={"api-version": API}).status_code == 204


def test_availability_set_rules(http: httpx.Client) -> None:
    path = _as_path("rules")
    bad = http.put(
        path,
        params={"api-version": API},
        json={"location": "eastus", "properties": {"platformFaultDomainCount": 4}},
    )
    assert _error(bad, 400)["target"] == "properties.platformFaultDomainCount"
    bad_sku = http.put(
        path, params={"api-version": API}, json={"location": "eastus", "sku": {"name": "Huge"}}
    )
    assert _error(bad_sku, 400)["target"] == "sku.name"
    made = http.put(
        path,
        params={"api-version": API},
        json={
            "location": "westus",
            "properties": {"platformFaultDomainCount": 3, "platformUpdateDomainCount": 20},
        },
    )
    assert made.status_code == 200, made.text
    assert made.json()["properties"]["platformFaultDomainCount"] == 3
    elsewhere = _error(_put(http, "in-set", _with("properties.availabilitySet", {"id": path})), 400)
    assert (
        elsewhere["target"] == "properties.availabilitySet.id" and "westus" in elsewhere["message"]
    )
    zoned = _with(
        "location",
        "westus",
        _with("zones", ["1"], _with("properties.availabilitySet", {"id": path})),
    )
    assert _error(_put(http, "in-set", zoned), 400)["target"] == "zones"
    placed = _put(
        http,
        "in-set",
        _with("location", "westus", _with("properties.availabilitySet", {"id": path})),
    )
    assert placed.status_code == 201, placed.text
    fewer = http.patch(
        path, params={"api-version": API}, json={"properties": {"platformFaultDomainCount": 2}}
    )
    assert _error(fewer, 409)["code"] == "PropertyChangeNotAllowed"
    leave = _put(
        http, "in-set", _with("location", "westus", _with("properties.availabilitySet", None))
    )
    assert leave.status_code == 200  # left out: kept
    other = _put(
        http,
        "in-set",
        _with("location", "westus", _with("properties.availabilitySet", {"id": _as_path("x")})),
    )
    assert _error(other, 409)["target"] == "properties.availabilitySet.id"
    http.delete(_vm_path("in-set"), params={"api-version": API})
    assert http.delete(path, params={"api-version": API}).status_code == 200
    assert http.delete(path, params={"api-version": API}).status_code == 204


# --- who may do what, and where -----------------------------------------------------------------


def test_tokens_reach_only_their_subscription_and_role(ready: Arm, http: httpx.Client) -> None:
    assert _put(http, "guarded-vm", _raw_vm()).status_code == 201
    with ready.http(ready.token("Owner", OTHER_SUB)) as other:
        for reply in (
            other.get(_vm_path("guarded-vm"), params={"api-version": API}),
            other.put(_vm_path("guarded-vm"), params={"api-version": API}, json=_raw_vm()),
            other.delete(_vm_path("guarded-vm"), params={"api-version": API}),
            other.get(
                f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
                params={"api-version": API},
            ),
            other.get(_as_path("any"), params={"api-version": API}),
        ):
            assert _error(reply, 403)["code"] == "AuthorizationFailed"
        mine = other.get(
            f"/subscriptions/{OTHER_SUB}/providers/Microsoft.Compute/virtualMachines",
            params={"api-version": API},
        )
        assert _error(mine, 409)["code"] == "MissingSubscriptionRegistration"
    with ready.http(ready.token("Reader")) as reader:
        assert reader.get(_vm_path("guarded-vm"), params={"api-version": API}).status_code == 200
        made = reader.put(_vm_path("reader-vm"), params={"api-version": API}, json=_raw_vm())
        assert _error(made, 403)["code"] == "AuthorizationFailed"
        assert "Microsoft.Compute/virtualMachines/write" in made.json()["error"]["message"]
        gone = reader.delete(_vm_path("guarded-vm"), params={"api-version": API})
        assert _error(gone, 403)["code"] == "AuthorizationFailed"
        sets = reader.put(
            _as_path("reader-set"), params={"api-version": API}, json={"location": "eastus"}
        )
        assert _error(sets, 403)["code"] == "AuthorizationFailed"
    compute = ComputeManagementClient(subscription_id=SUB, **ready.sdk(ready.token("Reader")))
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machines.begin_create_or_update(GROUP, "reader-vm", _sdk_vm()).result()
    assert refused.value.status_code == 403
    http.delete(_vm_path("guarded-vm"), params={"api-version": API})


def test_deleting_a_machine_revokes_its_agent(ready: Arm, http: httpx.Client) -> None:
    made = _put(http, "Agent-VM", _raw_vm()).json()
    agent = ready.token("Agent", SUB, machine=made["id"])
    with ready.http(agent) as client:
        assert client.get("/hotpatch/whoami").status_code == 200
        assert http.delete(_vm_path("agent-vm"), params={"api-version": API}).status_code == 200
        assert client.get("/hotpatch/whoami").status_code == 401


def test_paths_are_case_insensitive_and_ids_keep_their_spelling(http: httpx.Client) -> None:
    made = _put(http, "MixedCase-VM", _raw_vm())
    assert made.status_code == 201
    shouted = (
        f"/SUBSCRIPTIONS/{SUB.upper()}/RESOURCEGROUPS/{GROUP.upper()}"
        "/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/mixedcase-vm"
    )
    got = http.get(shouted, params={"api-version": API})
    assert got.status_code == 200, got.text
    assert got.json()["id"] == _vm_path("MixedCase-VM") and got.json()["name"] == "MixedCase-VM"
    again = http.put(shouted, params={"api-version": API}, json=_raw_vm())
    assert again.status_code == 200 and again.json()["name"] == "MixedCase-VM"
    assert http.delete(shouted, params={"api-version": API}).status_code == 200


def test_lists_are_paged(http: httpx.Client, compute: ComputeManagementClient) -> None:
    names = [f"paged-{i}" for i in range(3)]
    for name in names:
        assert _put(http, name, _raw_vm()).status_code == 201
    first = http.get(
        f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines",
        params={"api-version": API, "$top": "2"},
    ).json()
    assert len(first["value"]) == 2 and first["nextLink"].startswith("https://")
    rest = http.get(first["nextLink"]).json()
    assert "nextLink" not in rest
    seen = [vm["name"] for vm in first["value"] + rest["value"]]
    assert set(names) <= set(seen)
    viewed = list(compute.virtual_machines.list(GROUP, expand="instanceView"))
    assert all(vm.instance_view is not None for vm in viewed)
    for name in names:
        http.delete(_vm_path(name), params={"api-version": API})


# --- fresh subscriptions, restarts and the preview rules ----------------------------------------


def test_the_sdk_registers_microsoft_compute_by_itself(ready: Arm) -> None:
    fresh = "abcdef01-2345-6789-abcd-ef0123456789"
    owner = ready.token("Owner", fresh)
    ResourceManagementClient(
        subscription_id=fresh, **ready.sdk(owner)
    ).resource_groups.create_or_update("rg-fresh", {"location": "eastus"})
    with ready.http(owner) as client:
        refused = client.put(
            f"/subscriptions/{fresh}/resourceGroups/rg-fresh/providers/Microsoft.Compute/availabilitySets/s",
            params={"api-version": API},
            json={"location": "eastus"},
        )
    assert _error(refused, 409) == {
        "code": "MissingSubscriptionRegistration",
        "message": "The subscription is not registered to use namespace 'Microsoft.Compute'. "
        "See https://aka.ms/rps-not-found for how to register subscriptions.",
    }
    compute = ComputeManagementClient(subscription_id=fresh, **ready.sdk(owner))
    made = compute.availability_sets.create_or_update(
        "rg-fresh", "s", m.AvailabilitySet(location="eastus")
    )
    assert (
        made.id
        == f"/subscriptions/{fresh}/resourceGroups/rg-fresh/providers/Microsoft.Compute/availabilitySets/s"
    )


def test_machines_survive_a_restart_and_preview_rules_gate_hotpatch(tmp_path: Path) -> None:
    running = start_arm(tmp_path, "--preview-rules")
    try:
        owner = running.token("Owner")
        with running.http(owner) as client:
            _group(client, SUB, GROUP)
            _register(client, SUB, "Microsoft.Compute")
            refused = _error(_put(client, "preview", _raw_vm()), 400)
            assert refused == {
                "code": "InvalidParameter",
                "message": "The property 'enableHotpatching' is not valid because the "
                "'Microsoft.Compute/InGuestHotPatchVMPreview', "
                "'Microsoft.Compute/InGuestAutoPatchVMPreview', "
                "'Microsoft.Compute/InGuestPatchVMPreview' features are not enabled for this "
                "subscription.",
                "target": f"{PATCH}.enableHotpatching",
            }
            plain = _put(client, "preview", _raw_vm(enableHotpatching=False))
            assert plain.status_code == 201, plain.text
            for feature in PREVIEW_FEATURES:
                _register_feature(client, feature)
            made = _put(client, "preview", _raw_vm())
            assert made.status_code == 200, made.text
        running.server.stop()
        running = start_arm(tmp_path, "--preview-rules")
        with running.http(owner) as client:
            again = client.get(_vm_path("preview"), params={"api-version": API})
            assert again.status_code == 200
            assert again.json() == made.json()
            assert again.headers["etag"] == made.headers["etag"]
    finally:
        running.server.stop()


# --- the pure parts -----------------------------------------------------------------------------


def test_windows_time_zones_name_real_zones() -> None:
    for windows, iana in _vm_model.WINDOWS_TIME_ZONES.items():
        assert zoneinfo.ZoneInfo(iana), windows
        assert _vm_model.iana_time_zone(windows.upper()) == iana
    assert _vm_model.iana_time_zone("Asia/Tokyo") == "Asia/Tokyo"
    assert _vm_model.iana_time_zone("../etc/passwd") is None


def test_environment_defaults_to_production() -> None:
    assert _vm_model.environment({}) == "Production"
    assert _vm_model.environment({"tags": {"HOTPATCH-ENVIRONMENT": "DevTest"}}) == "DevTest"


def test_power_state_follows_the_agents_last_report() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    model = {"name": "vm", "properties": {"timeCreated": now.isoformat()}}

    def power(seen: datetime | None) -> str:
        view = _vm_model.instance_view(
            model, patch_status={}, last_seen=seen, now=now, reported=None, os_name=None
        )
        return str(view["statuses"][1]["code"])

    assert power(None) == "PowerState/unknown"
    assert power(now - timedelta(minutes=9)) == "PowerState/running"
    assert power(now - timedelta(minutes=11)) == "PowerState/unknown"


# --- the model rules under random input ---------------------------------------------------------

_SET = _as_path("Fixed-Set")
_PLACE = _vm_model.Place(SUB, GROUP, "Random-VM")
_PLATFORM = _vm_model.Platform(
    product_for_image=lambda publisher, offer, sku: next(
        (p for p in DEFAULT_PRODUCTS if any(i.matches(publisher, offer, sku) for i in p.images)),
        None,
    ),
    baseline=lambda product: "KB5000001" if product == DEMO else None,
    availability_set=lambda set_id: (
        {"id": _SET, "name": "Fixed-Set", "location": "eastus"}
        if set_id.lower() == _SET.lower()
        else None
    ),
    sovereign_regions=frozenset({"usgovvirginia"}),
    missing_features=list,
)
_PATHS = (
    "location", "tags", "zones", "identity", "properties", "properties.availabilitySet",
    "properties.availabilitySet.id", "properties.hardwareProfile", "properties.storageProfile",
    IMAGE, f"{IMAGE}.publisher", f"{IMAGE}.offer", f"{IMAGE}.sku", f"{IMAGE}.version",
    "properties.osProfile", "properties.osProfile.computerName", WIN,
    f"{WIN}.provisionVMAgent", f"{WIN}.enableAutomaticUpdates", f"{WIN}.timeZone", PATCH,
    f"{PATCH}.patchMode", f"{PATCH}.enableHotpatching", f"{PATCH}.assessmentMode",
    f"{PATCH}.automaticByPlatformSettings", f"{PATCH}.automaticByPlatformSettings.rebootSetting",
    f"{PATCH}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule",
    "properties.osProfile.linuxConfiguration",
    "properties.osProfile.linuxConfiguration.patchSettings.patchMode", "properties.extra",
)  # fmt: skip
_WORDS = st.sampled_from(
    [
        "eastus", "usgovvirginia", "1", "4", "Manual", "automaticbyos", "AutomaticByPlatform",
        "ImageDefault", "IfRequired", "Pacific Standard Time", "Europe/Paris", "latest",
        "demo-hotpatch", "demo-legacy", "pyhotpatch", "python-service", HOTPATCH_SKU, _SET,
    ]
)  # fmt: skip
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | _WORDS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text() | _WORDS, inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(st.sampled_from(_PATHS), _JSON), max_size=4))
def test_any_body_is_refused_cleanly_or_round_trips(edits: list[tuple[str, Any]]) -> None:
    body: Any = _raw_vm()
    for path, value in edits:
        try:
            body = _with(path, value, body)
        except (AttributeError, TypeError):
            continue  # the path runs through a value that is no longer an object
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)

    def normalise(given: Any, existing: dict[str, Any] | None) -> dict[str, Any]:
        return _vm_model.normalise_vm(
            given, existing, place=_PLACE, api_version=API, now=now, platform=_PLATFORM
        )

    existing = normalise(_raw_vm(), None)
    for before in (None, existing):
        try:
            model = normalise(body, before)
        except ApiError as refused:
            assert refused.status in (400, 409) and refused.message and refused.code
            continue
        assert json.loads(json.dumps(model, allow_nan=False)) == model
        assert "adminPassword" not in model["properties"].get("osProfile", {})
        assert normalise(model, model) == model
