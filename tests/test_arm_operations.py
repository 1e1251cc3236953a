"""assessPatches and installPatches as Azure's long-running operations, with the real Azure SDK.

A real server over HTTPS; each machine's work is answered by a simulated agent (a thread
speaking the agent protocol). Raw HTTP checks the wire details the SDK hides: 202 with an
empty body, absolute ``Azure-AsyncOperation`` and ``Location`` URLs, the operation's shape
while it runs and after, ``monitor=true``, validation messages word for word.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    LinuxParameters,
    VirtualMachineInstallPatchesParameters,
    WindowsParameters,
)

from arm import OTHER_SUB, SUB, Arm, start_arm
from sim_agent import SimulatedAgent, create_group, create_vm, finish, patch, register_compute

GROUP = "patching-rg"
API = "2024-11-01"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _patches() -> list[dict[str, Any]]:
    return [
        patch("KB5041160", classifications=("Security",)),
        patch("KB5041161", classifications=("Critical",), reboot="AlwaysRequiresReboot"),
        patch("KB4052623", classifications=("Definition",)),
        patch("KB890830", classifications=("UpdateRollUp",)),
    ]


@pytest.fixture(scope="module")
def world(arm: Arm) -> Arm:
    """Microsoft.Compute registered and a resource group, in SUB and OTHER_SUB."""
    arm.token("Owner", OTHER_SUB)
    for sub in (SUB, OTHER_SUB):
        register_compute(arm, sub)
        create_group(arm, sub, GROUP)
    return arm


@pytest.fixture(scope="module")
def compute(world: Arm) -> Iterator[ComputeManagementClient]:
    client = ComputeManagementClient(subscription_id=SUB, **world.sdk())
    yield client
    client.close()


def _vm(arm: Arm, *, linux: bool = False) -> tuple[str, str]:
    name = f"vm-{uuid.uuid4().hex[:8]}"
    return name, create_vm(arm, SUB, GROUP, name, linux=linux)


def _vm_path(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines/{name}"


def test_assess_patches_with_the_sdk(world: Arm, compute: ComputeManagementClient) -> None:
    name, vm_id = _vm(world)
    with SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches()):
        result = finish(compute.virtual_machines.begin_assess_patches(GROUP, name))
    assert result.status == "Succeeded"
    assert result.critical_and_security_patch_count == 2
    assert result.other_patch_count == 2
    assert result.reboot_pending is False
    assert GUID.match(result.assessment_activity_id)
    assert result.start_date_time is not None
    assert result.error.code == "Success" and result.error.message == "0 error/s reported"
    by_kb = {p.kb_id: p for p in result.available_patches}
    assert set(by_kb) == {"5041160", "5041161", "4052623", "890830"}  # no "KB" prefix
    critical = by_kb["5041161"]
    assert GUID.match(critical.patch_id)
    assert critical.classifications == ["Critical"]
    assert critical.reboot_behavior == "AlwaysRequiresReboot"
    assert critical.assessment_state == "Available"
    assert critical.activity_id == result.assessment_activity_id
    assert all("version" not in p.as_dict() for p in result.available_patches)  # Windows

    view = compute.virtual_machines.instance_view(GROUP, name)
    summary = view.patch_status.available_patch_summary
    assert summary.status == "Succeeded"
    assert summary.critical_and_security_patch_count == 2
    assert summary.other_patch_count == 2
    assert summary.assessment_activity_id == result.assessment_activity_id
    assert summary.start_time is not None and summary.last_modified_time is not None
    assert view.patch_status.last_patch_installation_summary.status == "Unknown"
    assert view.computer_name == name
    assert "PowerState/running" in [s.code for s in view.statuses]


def test_install_patches_with_the_sdk(world: Arm, compute: ComputeManagementClient) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    with agent:
        result = finish(
            compute.virtual_machines.begin_install_patches(
                GROUP,
                name,
                VirtualMachineInstallPatchesParameters(
                    maximum_duration="PT4H",
                    reboot_setting="IfRequired",
                    windows_parameters=WindowsParameters(
                        classifications_to_include=["Critical", "Security"],
                        kb_numbers_to_include=["KB4052623"],
                        kb_numbers_to_exclude=["KB5041161"],
                    ),
                ),
            )
        )
        states = {p.kb_id: p.installation_state for p in result.patches}
        assert states == {
            "5041160": "Installed",
            "5041161": "Excluded",
            "4052623": "Installed",
            "890830": "NotSelected",
        }
        assert (
            result.installed_patch_count,
            result.excluded_patch_count,
            result.not_selected_patch_count,
            result.pending_patch_count,
            result.failed_patch_count,
        ) == (2, 1, 1, 0, 0)
        assert result.status == "Succeeded"
        assert result.reboot_status == "NotNeeded"
        assert result.maintenance_window_exceeded is False
        assert GUID.match(result.installation_activity_id)
        assert result.error.code == "Success"
        assert all(GUID.match(p.patch_id) for p in result.patches)
        assert all("version" not in p.as_dict() for p in result.patches)

        view = compute.virtual_machines.instance_view(GROUP, name)
        last = view.patch_status.last_patch_installation_summary
        assert last.status == "Succeeded"
        assert last.installed_patch_count == 2 and last.excluded_patch_count == 1
        assert last.installation_activity_id == result.installation_activity_id

        # a new assessment sees only what is left
        after = finish(compute.virtual_machines.begin_assess_patches(GROUP, name))
        assert {p.kb_id for p in after.available_patches} == {"5041161", "890830"}
        view = compute.virtual_machines.instance_view(GROUP, name)
        assert view.patch_status.available_patch_summary.critical_and_security_patch_count == 1

    with world.http(world.token("Reader")) as client:
        history = client.get(f"/hotpatch/machines/{quote(vm_id, safe='')}/history").json()
    kinds = [entry["kind"] for entry in history["value"]]
    assert kinds == ["assessment", "installation"]  # newest first
    assert history["value"][1]["result"]["installedPatchCount"] == 2


def test_linux_results_keep_azure_s_linux_shape(
    world: Arm, compute: ComputeManagementClient
) -> None:
    name, vm_id = _vm(world, linux=True)
    patches = [
        patch("libssl3", classifications=("Security",), version="3.0.2-0ubuntu1.18"),
        patch("vim", classifications=("Other",), version="2:8.2.3995-1ubuntu2.21"),
    ]
    with SimulatedAgent(world, vm_id, world.token("Owner"), patches=patches):
        assessed = finish(compute.virtual_machines.begin_assess_patches(GROUP, name))
        installed = finish(
            compute.virtual_machines.begin_install_patches(
                GROUP,
                name,
                VirtualMachineInstallPatchesParameters(
                    maximum_duration="PT1H",
                    reboot_setting="IfRequired",
                    linux_parameters=LinuxParameters(classifications_to_include=["Security"]),
                ),
            )
        )
    assert assessed.error.code == "0" and assessed.error.message == "0 error/s reported."
    assert {p.version for p in assessed.available_patches} == {
        "3.0.2-0ubuntu1.18",
        "2:8.2.3995-1ubuntu2.21",
    }
    assert installed.error.code == "0"
    assert installed.as_dict()["maintenanceRunId"] == ""  # in Azure's answer, not in its spec


def test_the_wire_protocol_of_the_operation(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    agent.enroll()
    agent.heartbeat()
    with world.http() as client:
        started = client.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})
        assert started.status_code == 202, started.text
        assert started.content == b""
        assert "retry-after" not in started.headers
        status_url = started.headers["Azure-AsyncOperation"]
        monitor_url = started.headers["Location"]
        assert status_url.startswith(
            f"{world.url}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus/operations/"
        )
        assert f"api-version={API}" in status_url
        assert monitor_url == status_url.replace("?", "?monitor=true&")
        operation = urlsplit(status_url).path.rsplit("/", 1)[1]

        running = client.get(status_url)
        assert running.status_code == 200
        assert set(running.json()) == {"startTime", "status", "name"}
        assert running.json()["status"] == "InProgress" and running.json()["name"] == operation
        assert client.get(monitor_url).status_code == 202

        (item,) = agent.poll()
        assert item["kind"] == "assessPatches" and item["operation"] == operation
        assert agent.answer(item).status_code == 200

        done = client.get(status_url).json()
        assert list(done) == ["startTime", "endTime", "status", "properties", "name"]
        assert done["status"] == "Succeeded"
        output = done["properties"]["output"]
        assert list(output) == [
            "status",
            "assessmentActivityId",
            "rebootPending",
            "criticalAndSecurityPatchCount",
            "otherPatchCount",
            "startDateTime",
            "availablePatches",
            "error",
        ]
        assert output["error"] == {
            "details": [],
            "code": "Success",
            "message": "0 error/s reported",
        }
        final = client.get(monitor_url)
        assert final.status_code == 200 and final.json() == output
        # case-insensitive path, as ARM's
        lower = client.get(
            status_url.replace("Microsoft.Compute/locations", "microsoft.compute/LOCATIONS")
        )
        assert lower.json()["status"] == "Succeeded"
        missing = client.get(status_url.replace(operation, str(uuid.uuid4())))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NotFound"


def _install(client: httpx.Client, name: str, body: Any) -> httpx.Response:
    return client.post(f"{_vm_path(name)}/installPatches", params={"api-version": API}, json=body)


def test_a_malformed_kb_is_refused_in_azure_s_words(
    world: Arm, compute: ComputeManagementClient
) -> None:
    name, _vm_id = _vm(world)
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machines.begin_install_patches(
            GROUP,
            name,
            VirtualMachineInstallPatchesParameters(
                maximum_duration="PT4H",
                reboot_setting="IfRequired",
                windows_parameters=WindowsParameters(kb_numbers_to_include=["1111"]),
            ),
        )
    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == "InvalidParameter"
    assert refused.value.error.message == (
        "The entry in 'kbNumbersToInclude' with value '1111' is not valid. "
        "It must be a KBID such as KB4512508."
    )
    with world.http() as client:
        reply = _install(
            client,
            name,
            {"rebootSetting": "Never", "windowsParameters": {"kbNumbersToExclude": ["KB12", "x"]}},
        )
    assert reply.status_code == 400
    assert reply.json() == {
        "error": {
            "code": "InvalidParameter",
            "message": "The entry in 'kbNumbersToExclude' with value 'KB12' is not valid. "
            "It must be a KBID such as KB4512508.",
            "target": "windowsParameters.kbNumbersToExclude",
        }
    }


@pytest.mark.parametrize(
    ("body", "target", "words"),
    [
        (None, "installPatchesInput", "Required parameter 'installPatchesInput' is missing"),
        ({"maximumDuration": "PT4H"}, "rebootSetting", "Required parameter 'rebootSetting'"),
        ({"rebootSetting": "Sometimes"}, "rebootSetting", "'IfRequired', 'Never', 'Always'"),
        ({"rebootSetting": "Never", "maximumDuration": "4 hours"}, "maximumDuration", "ISO 8601"),
        ({"rebootSetting": "Never", "maximumDuration": "PT5H"}, "maximumDuration", "at most 4"),
        ({"rebootSetting": "Never", "maximumDuration": "PT0S"}, "maximumDuration", "more than"),
        (
            {"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Big"]}},
            "windowsParameters.classificationsToInclude",
            "'Critical', 'Security', 'UpdateRollUp'",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"excludeKbsRequiringReboot": "yes"}},
            "windowsParameters.excludeKbsRequiringReboot",
            "true or false",
        ),
        (
            {"rebootSetting": "Never", "windowsParameters": {"maxPatchPublishDate": "soon"}},
            "windowsParameters.maxPatchPublishDate",
            "date-time",
        ),
        (
            {"rebootSetting": "Never", "linuxParameters": {"classificationsToInclude": ["Tools"]}},
            "linuxParameters.classificationsToInclude",
            "'Critical', 'Security', 'Other'",
        ),
    ],
)
def test_install_parameters_are_validated(world: Arm, body: Any, target: str, words: str) -> None:
    with world.http() as client:
        reply = _install(client, "any-vm", body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "InvalidParameter" and error["target"] == target
    assert words in error["message"]


def test_what_the_cli_sends_is_accepted(world: Arm) -> None:
    """The body ``az vm install-patches`` sends (azure_api.md §5.1), both parameter objects."""
    name, vm_id = _vm(world)
    with (
        SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches()),
        world.http() as client,
    ):
        started = _install(
            client,
            name,
            {
                "maximumDuration": "PT4H",
                "rebootSetting": "never",
                "windowsParameters": {
                    "classificationsToInclude": ["Critical", "Security"],
                    "kbNumbersToInclude": ["KB4512508"],
                    "excludeKbsRequiringReboot": True,
                    "maxPatchPublishDate": "2024-11-01T07:36:43.000Z",
                },
                "linuxParameters": {},
            },
        )
        assert started.status_code == 202, started.text
        status = _wait_done(client, started.headers["Azure-AsyncOperation"])
    output = status["properties"]["output"]
    # published after maxPatchPublishDate: nothing selected; the reboot-requiring one excluded
    assert {p["installationState"] for p in output["patches"]} == {"NotSelected", "Excluded"}
    assert output["installedPatchCount"] == 0


def _wait_done(client: httpx.Client, url: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] != "InProgress":
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_a_machine_without_a_running_agent_is_refused(
    world: Arm, compute: ComputeManagementClient
) -> None:
    name, _vm_id = _vm(world)
    with pytest.raises(HttpResponseError) as refused:
        compute.virtual_machines.begin_assess_patches(GROUP, name)
    assert refused.value.status_code == 409
    assert refused.value.error is not None
    assert refused.value.error.code == "OperationNotAllowed"
    assert refused.value.error.message == (
        f"Operation 'assessPatches' is not allowed on VM '{name}' since the VM is not running: "
        "no agent has enrolled it."
    )
    view = compute.virtual_machines.instance_view(GROUP, name)
    assert "PowerState/running" not in [s.code for s in view.statuses]
    with pytest.raises(HttpResponseError) as missing:
        compute.virtual_machines.begin_assess_patches(GROUP, "no-such-vm")
    assert missing.value.status_code == 404


def test_one_patch_operation_at_a_time(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    agent.enroll()
    agent.heartbeat()
    with world.http() as client:
        first = client.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})
        assert first.status_code == 202
        second = _install(client, name, {"rebootSetting": "Never"})
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "OperationNotAllowed"
        assert "another patch operation ('assessPatches'" in second.json()["error"]["message"]
        (item,) = agent.poll()
        agent.answer(item)
        assert _install(client, name, {"rebootSetting": "Never"}).status_code == 202


def test_a_subscription_s_tokens_reach_only_its_operations(world: Arm) -> None:
    name, vm_id = _vm(world)
    agent = SimulatedAgent(world, vm_id, world.token("Owner"), patches=_patches())
    agent.enroll()
    agent.heartbeat()
    with world.http() as client:
        started = client.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})
        status_url = started.headers["Azure-AsyncOperation"]
    with world.http(world.token("Reader")) as reader:
        assert reader.get(status_url).status_code == 200
        refused = reader.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "AuthorizationFailed"
        assert reader.get(f"{_vm_path(name)}/instanceView", params={"api-version": API}).is_success
    with world.http(world.token("Owner", OTHER_SUB)) as stranger:
        assert stranger.get(status_url).status_code == 403
        other = status_url.replace(SUB, OTHER_SUB)
        assert stranger.get(other).status_code == 404  # the operation is not in their subscription
        assert (
            stranger.post(
                f"{_vm_path(name)}/assessPatches", params={"api-version": API}
            ).status_code
            == 403
        )
        assert (
            stranger.get(f"{_vm_path(name)}/instanceView", params={"api-version": API}).status_code
            == 403
        )
    with world.http(agent.token or "") as machine:  # an agent's credential is not a user's
        assert machine.get(status_url).status_code == 403
    (item,) = agent.poll()
    agent.answer(item)


def test_an_operation_survives_a_server_restart(tmp_path: Path) -> None:
    first = start_arm(tmp_path)
    try:
        register_compute(first, SUB)
        create_group(first, SUB, GROUP)
        name = "durable"
        vm_id = create_vm(first, SUB, GROUP, name)
        agent = SimulatedAgent(first, vm_id, first.token("Owner"), patches=_patches())
        agent.enroll()
        agent.heartbeat()
        with first.http() as client:
            started = client.post(f"{_vm_path(name)}/assessPatches", params={"api-version": API})
        assert started.status_code == 202
        status_path = urlsplit(started.headers["Azure-AsyncOperation"])
    finally:
        first.server.stop()
    second = start_arm(tmp_path)
    try:
        second.tokens.update(first.tokens)
        url = f"{status_path.path}?{status_path.query}"
        with second.http() as client:
            assert client.get(url).json()["status"] == "InProgress"
            agent.point_at(second)
            with agent:
                done = _wait_done(client, url)
        assert done["status"] == "Succeeded"
        assert done["properties"]["output"]["criticalAndSecurityPatchCount"] == 2
    finally:
        second.server.stop()
