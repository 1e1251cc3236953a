"""What pages show, computed from API documents: pure functions, no I/O.

Each takes the JSON the API answered and returns plain values for a template, so the
rules (which patches are still missing, how machines count by placement, what an install
form asks for) can be read and tested apart from HTTP.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pyhotpatch.package._manifest import CLASSIFICATIONS

ENVIRONMENT_TAG = "hotpatch-environment"
ENVIRONMENTS = ("DevTest", "Production")
#: Azure's classifications of Windows updates, in the order its portal lists them
WINDOWS_CLASSIFICATIONS = CLASSIFICATIONS
LINUX_CLASSIFICATIONS = ("Critical", "Security", "Other")
REBOOT_SETTINGS = ("IfRequired", "Never", "Always")
#: the durations the install form offers (Azure allows at most four hours)
DURATIONS = (("PT30M", "30 minutes"), ("PT1H", "1 hour"), ("PT2H", "2 hours"), ("PT4H", "4 hours"))
_VM_ID = re.compile(
    r"^/?subscriptions/([^/]+)/resourcegroups/([^/]+)"
    r"/providers/microsoft\.compute/virtualmachines/([^/]+)/?$",
    re.IGNORECASE,
)
_KB_SPLIT = re.compile(r"[\s,;]+")


class BadMachineReference(ValueError):
    """A portal machine address that names no virtual machine."""


@dataclass(frozen=True)
class MachineRef:
    """A virtual machine: subscription, resource group, name."""

    subscription: str
    group: str
    name: str

    @property
    def portal_path(self) -> str:
        """The machine's page in the portal."""
        parts = (self.subscription, self.group, self.name)
        return "/portal/machines/" + "/".join(quote(p, safe="") for p in parts)


def machine_ref(value: str) -> MachineRef:
    """The machine a portal address names: an ARM id, or ``subscription/group/name``.

    ``BadMachineReference`` if it is neither.
    """
    found = _VM_ID.match(value)
    if found:
        return MachineRef(*found.groups())
    parts = value.strip("/").split("/")
    if len(parts) == 3 and all(parts):
        return MachineRef(*parts)
    raise BadMachineReference(
        f"'{value}' is not a virtual machine: give its resource id or subscription/group/name."
    )


def os_config(vm: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """("Windows" or "Linux", the OS configuration block) of a VM model."""
    profile = vm.get("properties", {}).get("osProfile", {})
    if "linuxConfiguration" in profile:
        return "Linux", profile.get("linuxConfiguration") or {}
    return "Windows", profile.get("windowsConfiguration") or {}


def environment_of(vm: dict[str, Any]) -> str:
    """DevTest or Production, from the ``hotpatch-environment`` tag (Production by default)."""
    tag = (vm.get("tags") or {}).get(ENVIRONMENT_TAG)
    return "DevTest" if str(tag).lower() == "devtest" else "Production"


def hotpatch_enabled(vm: dict[str, Any]) -> bool:
    """Whether the VM model asks for hotpatching (``enableHotpatching``)."""
    return bool(os_config(vm)[1].get("patchSettings", {}).get("enableHotpatching"))


def zone_of(vm: dict[str, Any]) -> str | None:
    """The VM's availability zone, if it has one."""
    zones = vm.get("zones") or []
    return str(zones[0]) if zones else None


@dataclass(frozen=True)
class Placement:
    """How many machines are in one region and zone."""

    region: str
    zone: str | None
    machines: int


def placements(vms: list[dict[str, Any]]) -> list[Placement]:
    """Machines counted by region and zone, sorted by region then zone (no zone first)."""
    counts = Counter((str(vm.get("location", "")), zone_of(vm)) for vm in vms)
    return [
        Placement(region, zone, number)
        for (region, zone), number in sorted(counts.items(), key=lambda i: (i[0][0], i[0][1] or ""))
    ]


def kb_key(kb: Any) -> str:
    """A KB id as ``KB`` + digits, whether written ``5000001`` or ``kb5000001``."""
    text = str(kb).strip().upper()
    return text if text.startswith("KB") else "KB" + text


@dataclass(frozen=True)
class Assessment:
    """The last assessment, and what it found that no installation since has installed."""

    time: str | None
    status: str | None
    operation: str | None
    missing: list[dict[str, Any]]


def missing_patches(history: list[dict[str, Any]]) -> Assessment:
    """The last assessment's available patches minus those installed after it.

    ``history`` is the machine's history, newest first, as ``/history`` answers.
    """
    installed: set[str] = set()
    for entry in history:
        result = entry.get("result") or {}
        if entry.get("kind") == "installation":
            installed.update(
                kb_key(p.get("kbId", ""))
                for p in result.get("patches", [])
                if p.get("installationState") == "Installed"
            )
        elif entry.get("kind") == "assessment":
            missing = [
                p
                for p in result.get("availablePatches", [])
                if kb_key(p.get("kbId", "")) not in installed
            ]
            return Assessment(
                entry.get("endTime") or entry.get("startTime"),
                entry.get("status"),
                entry.get("operation"),
                missing,
            )
    return Assessment(None, None, None, [])


def kb_list(text: str) -> list[str]:
    """KB ids typed in a field, separated by commas, semicolons or spaces."""
    return [kb for kb in _KB_SPLIT.split(text.strip()) if kb]


def install_parameters(form: dict[str, list[str]], os_type: str) -> dict[str, Any]:
    """The ``installPatches`` body an Install updates now form asks for.

    Nothing is checked here beyond the shape: the API validates the values and its words
    reach the page.
    """
    first = {key: values[0] if values else "" for key, values in form.items()}
    body: dict[str, Any] = {
        "maximumDuration": first.get("maximumDuration", "") or "PT2H",
        "rebootSetting": first.get("rebootSetting", "") or "IfRequired",
    }
    classifications = form.get("classification", [])
    if os_type == "Linux":
        body["linuxParameters"] = {
            "classificationsToInclude": classifications,
            "packageNameMasksToInclude": kb_list(first.get("include", "")),
            "packageNameMasksToExclude": kb_list(first.get("exclude", "")),
        }
    else:
        body["windowsParameters"] = {
            "classificationsToInclude": classifications,
            "kbNumbersToInclude": kb_list(first.get("include", "")),
            "kbNumbersToExclude": kb_list(first.get("exclude", "")),
        }
    return body


def phases(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    """A rollout's regions grouped by phase, each with its batches, in order."""
    batches: dict[str, list[dict[str, Any]]] = {}
    for batch in rollout.get("batchList", []):
        batches.setdefault(str(batch.get("region")), []).append(batch)
    grouped: dict[int, list[dict[str, Any]]] = {}
    for region in rollout.get("regions", []):
        entry = {**region, "batchList": batches.get(str(region.get("region")), [])}
        grouped.setdefault(int(region.get("phase") or 0), []).append(entry)
    current = rollout.get("phase")
    return [
        {"number": number, "regions": regions, "current": number == current}
        for number, regions in sorted(grouped.items())
    ]


# --- creating a machine -----------------------------------------------------------------------

WINDOW_TAG = "hotpatch-maintenance-window"
PATCH_MODES = ("AutomaticByPlatform", "AutomaticByOS", "Manual")
ZONES = ("1", "2", "3")
#: what the create form sends for what it does not ask, as ``az vm create`` defaults them
VM_SIZE = "Standard_D2s_v5"
ADMIN_USERNAME = "azureuser"
#: the create form's fields, and their values before anything is typed
CREATE_DEFAULTS = {
    "subscription": "",
    "group": "",
    "newGroup": "",
    "newGroupRegion": "",
    "name": "",
    "region": "",
    "image": "",
    "zone": "",
    "availabilitySet": "",
    "environment": "DevTest",
    "patchMode": "AutomaticByPlatform",
    "hotpatch": "on",
    "timeZone": "UTC",
    "window": "",
}
#: the form field an API refusal is about, by the start of its ``target`` (JSON path)
_TARGET_FIELDS = (
    ("tags." + WINDOW_TAG, "window"),
    ("tags." + ENVIRONMENT_TAG, "environment"),
    ("location", "region"),
    ("zones", "zone"),
    ("properties.availabilitySet", "availabilitySet"),
    ("properties.storageProfile", "image"),
    ("properties.osProfile.windowsConfiguration.timeZone", "timeZone"),
    ("properties.osProfile.windowsConfiguration.patchSettings.enableHotpatching", "hotpatch"),
    ("properties.osProfile.windowsConfiguration.patchSettings", "patchMode"),
    ("properties.osProfile.windowsConfiguration.provisionVMAgent", "patchMode"),
    ("properties.osProfile.computerName", "name"),
    ("name", "name"),
)


@dataclass(frozen=True)
class ImageChoice:
    """An image the create form offers: its URN, the product it runs, whether it hotpatches."""

    urn: str
    sku: str
    product: str
    title: str
    hotpatch: bool
    upgrade_to: str | None


def image_choices(products: list[dict[str, Any]]) -> list[ImageChoice]:
    """Every image of the catalog's products (``GET /hotpatch/products``), hotpatch-capable first.

    The form names an image by ``publisher:offer:sku``, as ``az vm create --image`` does.
    """
    found = [
        ImageChoice(
            urn=f"{image['publisher']}:{image['offer']}:{image['sku']}",
            sku=str(image["sku"]),
            product=str(product.get("name", "")),
            title=str(product.get("title") or product.get("name", "")),
            hotpatch=bool(product.get("hotpatch")),
            upgrade_to=product.get("upgradeTo"),
        )
        for product in products
        for image in product.get("images", [])
    ]
    return sorted(found, key=lambda c: (not c.hotpatch, c.product, c.sku))


def regions_of(provider: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, display name) of the regions where Microsoft.Compute offers virtual machines.

    ``provider`` is ``GET /subscriptions/{s}/providers/Microsoft.Compute``; ARM lists display
    names (``West US``) and stores names (``westus``).
    """
    for kind in provider.get("resourceTypes", []):
        if str(kind.get("resourceType", "")).lower() == "virtualmachines":
            names = {str(n).replace(" ", "").lower(): str(n) for n in kind.get("locations", [])}
            return sorted(names.items(), key=lambda pair: pair[1])
    return []


def group_of(resource_id: str) -> str:
    """The resource group an ARM resource id names ('' if none)."""
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if "resourcegroups" in lowered:
        at = lowered.index("resourcegroups") + 1
        return parts[at] if at < len(parts) else ""
    return ""


def create_values(form: dict[str, list[str]]) -> dict[str, str]:
    """The create form's values as posted, stripped; a field left out keeps no default.

    An unticked checkbox is not posted, so a posted form without ``hotpatch`` means off.
    """
    return {key: (form.get(key) or [""])[0].strip() for key in CREATE_DEFAULTS}


def machine_model(values: dict[str, str], subscription: str, group: str, region: str) -> Any:
    """The ``PUT …/virtualMachines/{name}`` body the create form asks for, as az sends it.

    A Windows configuration with ``provisionVMAgent``, ``patchSettings`` (``patchMode``,
    ``enableHotpatching``) and ``timeZone``; ``enableAutomaticUpdates`` false for Manual, as
    ``az vm create`` sets it; the environment and off-peak window as tags; the zone; the
    availability set by id. Nothing is checked here beyond the shape: the API validates
    and its words reach the page.
    """
    mode = values.get("patchMode") or "AutomaticByPlatform"
    settings: dict[str, Any] = {
        "patchMode": mode,
        "enableHotpatching": values.get("hotpatch") == "on",
    }
    config: dict[str, Any] = {"provisionVMAgent": True, "patchSettings": settings}
    if mode == "Manual":
        config["enableAutomaticUpdates"] = False
    if values.get("timeZone"):
        config["timeZone"] = values["timeZone"]
    publisher, offer, sku = ([*values.get("image", "").split(":"), "", "", ""])[:3]
    properties: dict[str, Any] = {
        "hardwareProfile": {"vmSize": VM_SIZE},
        "storageProfile": {
            "imageReference": {
                "publisher": publisher,
                "offer": offer,
                "sku": sku,
                "version": "latest",
            }
        },
        "osProfile": {
            "computerName": values.get("name", ""),
            "adminUsername": ADMIN_USERNAME,
            "windowsConfiguration": config,
        },
    }
    chosen_set = values.get("availabilitySet", "")
    if chosen_set:
        set_id = chosen_set
        if not set_id.startswith("/"):
            set_id = (
                f"/subscriptions/{subscription}/resourceGroups/{group}"
                f"/providers/Microsoft.Compute/availabilitySets/{chosen_set}"
            )
        properties["availabilitySet"] = {"id": set_id}
    tags = {ENVIRONMENT_TAG: values.get("environment") or "Production"}
    if values.get("window"):
        tags[WINDOW_TAG] = values["window"]
    model: dict[str, Any] = {"location": region, "tags": tags, "properties": properties}
    if values.get("zone"):
        model["zones"] = [values["zone"]]
    return model


def field_of_target(target: Any) -> str | None:
    """The create form's field an API refusal's ``target`` (a JSON path) is about, if any."""
    text = str(target or "")
    for prefix, name in _TARGET_FIELDS:
        if text.lower().startswith(prefix.lower()):
            return name
    return None
