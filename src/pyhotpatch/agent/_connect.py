"""``hotpatch agent connect``: bind this machine to its ``virtualMachines`` resource.

Like an Arc-connected server, a machine that has no resource yet gets one: the
resource group and availability set are created if missing (with the user's token,
which must be allowed to), then the virtual machine with the image the machine runs
and ``AutomaticByPlatform`` patching, with hotpatch enabled when the image supports
it. The agent then enrols and keeps its own credential; the user's token is not
stored. The TUF root the agent will trust from then on is the one given with
``--trusted-root``, or else the first root the server serves over verified TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyhotpatch import __version__
from pyhotpatch.agent._config import (
    AgentConfig,
    prepare_state_dir,
    save_config,
    save_credential,
)
from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.catalog.tufclient import METADATA_PATH, ReleaseFeed
from pyhotpatch.errors import AgentError

GROUP_VERSION = "2025-04-01"
COMPUTE_VERSION = "2024-07-01"
ENVIRONMENTS = ("DevTest", "Production")


@dataclass(frozen=True)
class Placement:
    """Where the machine is: its resource id parts, region, zone, availability set, time zone."""

    subscription: str
    resource_group: str
    name: str
    location: str
    zone: str | None = None
    availability_set: str | None = None
    time_zone: str | None = None
    environment: str = "Production"

    @property
    def machine(self) -> str:
        """The virtual machine's resource id."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )


def connect(
    api: ControlPlane,
    config: AgentConfig,
    placement: Placement,
    state_dir: Path,
    *,
    trusted_root: bytes | None = None,
    create: bool = True,
) -> dict[str, Any]:
    """Create the machine's resource if allowed and missing, enrol, and save the agent's files.

    Returns the enrolment answer (without the token). ``AgentError`` or
    ``ApiCallError`` say what the server refused.
    """
    if placement.environment not in ENVIRONMENTS:
        raise AgentError(
            f"environment must be DevTest or Production, not {placement.environment!r}"
        )
    vm = _get(api, placement.machine, COMPUTE_VERSION)
    created = False
    if vm is None:
        if not create:
            raise AgentError(
                f"there is no virtual machine {placement.machine} and --no-create was given"
            )
        _ensure_group(api, placement)
        if placement.availability_set:
            _ensure_availability_set(api, placement)
        vm = _create_vm(api, config, placement)
        created = True
    root = trusted_root if trusted_root is not None else _first_root(api)
    state_dir = prepare_state_dir(state_dir)
    feed = ReleaseFeed(
        config.server, state_dir / "tuf", trusted_root=root, ca_bundle=config.ca_bundle
    )
    feed.refresh()
    answer: dict[str, Any] = api.call(
        "POST",
        "/agent/enroll",
        json={
            "machine": vm["id"],
            "agentVersion": __version__,
            "reported": {"image": config.image_reference},
        },
    ).json()
    # the resource's own spelling of its id, whatever case the caller used
    config = replace(config, machine=str(vm["id"]))
    save_credential(state_dir, str(answer.pop("token")))
    save_config(state_dir, config)
    answer["created"] = created
    return answer


def _get(api: ControlPlane, path: str, version: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = api.call("GET", path, params={"api-version": version}).json()
    except ApiCallError as exc:
        if exc.status == 404:
            return None
        raise
    return found


def _ensure_group(api: ControlPlane, placement: Placement) -> None:
    path = f"/subscriptions/{placement.subscription}/resourcegroups/{placement.resource_group}"
    if _get(api, path, GROUP_VERSION) is None:
        api.call(
            "PUT",
            path,
            params={"api-version": GROUP_VERSION},
            json={"location": placement.location},
        )


def _ensure_availability_set(api: ControlPlane, placement: Placement) -> None:
    path = (
        f"/subscriptions/{placement.subscription}/resourceGroups/{placement.resource_group}"
        f"/providers/Microsoft.Compute/availabilitySets/{placement.availability_set}"
    )
    if _get(api, path, COMPUTE_VERSION) is None:
        api.call(
            "PUT",
            path,
            params={"api-version": COMPUTE_VERSION},
            json={
                "location": placement.location,
                "properties": {"platformFaultDomainCount": 2, "platformUpdateDomainCount": 5},
            },
        )


def _hotpatch_capable(api: ControlPlane, image: dict[str, str]) -> bool:
    products = api.call("GET", "/hotpatch/products").json().get("value", [])
    wanted = tuple(image[k].lower() for k in ("publisher", "offer", "sku"))
    for product in products:
        for candidate in product.get("images", []):
            if (
                tuple(str(candidate.get(k, "")).lower() for k in ("publisher", "offer", "sku"))
                == wanted
            ):
                return bool(product.get("hotpatch"))
    return False


def _create_vm(api: ControlPlane, config: AgentConfig, placement: Placement) -> dict[str, Any]:
    image = config.image_reference
    windows: dict[str, Any] = {
        "provisionVMAgent": True,
        "patchSettings": {
            "patchMode": "AutomaticByPlatform",
            "enableHotpatching": _hotpatch_capable(api, image),
        },
    }
    if placement.time_zone:
        windows["timeZone"] = placement.time_zone
    properties: dict[str, Any] = {
        "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
        "storageProfile": {"imageReference": {**image, "version": "latest"}},
        "osProfile": {"computerName": placement.name[:15], "windowsConfiguration": windows},
    }
    if placement.availability_set:
        properties["availabilitySet"] = {
            "id": f"/subscriptions/{placement.subscription}/resourceGroups/"
            f"{placement.resource_group}/providers/Microsoft.Compute/availabilitySets/"
            f"{placement.availability_set}"
        }
    body: dict[str, Any] = {
        "location": placement.location,
        "tags": {"hotpatch-environment": placement.environment},
        "properties": properties,
    }
    if placement.zone:
        body["zones"] = [placement.zone]
    created: dict[str, Any] = api.call(
        "PUT", placement.machine, params={"api-version": COMPUTE_VERSION}, json=body
    ).json()
    return created


def _first_root(api: ControlPlane) -> bytes:
    """Version 1 of the root metadata, fetched over TLS verified with the configured CA."""
    response = api.call("GET", METADATA_PATH + "1.root.json")
    data: bytes = response.content
    return data
