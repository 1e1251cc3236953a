"""The models of ``Microsoft.Compute/virtualMachines`` and ``availabilitySets``, as pure functions.

``normalise_vm`` and ``normalise_availability_set`` take a request body (and the stored
model when the resource exists) and return the model exactly as GET will return it, or
raise ``ApiError`` with Azure's code and message; they never touch the database, so
everything they need to know about the world (the catalog's images, other resources,
preview features) comes in through a ``Platform``.

Invariants the models keep:

- read-only fields a client echoes back (``vmId``, ``provisioningState``, ``etag``,
  ``instanceView``, ``exactVersion``, ``timeCreated``, ``id``, ``name``, ``type``, …) are
  ignored, so ``az vm update``'s GET-then-PUT round trip is accepted unchanged;
- secrets are never stored: ``adminPassword`` and ``customData`` are dropped;
- on update, what a PUT leaves out is kept from the stored model (Compute's behaviour);
  what may only be chosen at creation (location, zones, availability set, image, computer
  name, administrator, ``enableAutomaticUpdates``) cannot change;
- enums are matched case-insensitively and stored in Azure's spelling;
- every refusal names the property in its message and carries its JSON path as ``target``.

Where Azure's text is known (azure_api.md §3.3) it is used word for word. For the rest the
wording is ours in Azure's style. Missing preview features (when the server runs with
``preview_rules``) are refused with ``InvalidParameter`` in the words Azure uses for other
feature-gated VM properties ("… is not valid because the '…' feature is not enabled for
this subscription."), not with a separate code.
"""

from __future__ import annotations

import math
import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pyhotpatch.catalog._model import Product
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._providers import REGIONS, normalize_location
from pyhotpatch.server.orchestrator._windows import Window

VM_TYPE = "Microsoft.Compute/virtualMachines"
AS_TYPE = "Microsoft.Compute/availabilitySets"
#: the tag that says which environment a machine belongs to, and its values
ENVIRONMENT_TAG = "hotpatch-environment"
ENVIRONMENTS = ("DevTest", "Production")
DEFAULT_ENVIRONMENT = "Production"
#: the tag that gives a machine its own off-peak window, e.g. ``01:00-05:00`` (local time)
WINDOW_TAG = "hotpatch-maintenance-window"
#: Compute api-versions older than this cannot create or update hotpatch-compatible VMs
HOTPATCH_MIN_API = "2020-06-01"
#: an agent that reported within this long counts as running
RUNNING_WINDOW = timedelta(minutes=10)  # the same window in which patch operations find the agent

_WIN_PATCH_MODES = ("Manual", "AutomaticByOS", "AutomaticByPlatform")
_LINUX_PATCH_MODES = ("ImageDefault", "AutomaticByPlatform")
_ASSESSMENT_MODES = ("ImageDefault", "AutomaticByPlatform")
_REBOOT_SETTINGS = ("Unknown", "IfRequired", "Never", "Always")
_AS_SKUS = ("Aligned", "Classic")
_ZONES = ("1", "2", "3")
_MAX_TAGS = 50

_OS = "properties.osProfile"
_WIN = f"{_OS}.windowsConfiguration"
_LINUX = f"{_OS}.linuxConfiguration"
_IMAGE = "properties.storageProfile.imageReference"
_AS_ID_RE = re.compile(
    r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.Compute/"
    r"availabilitySets/([^/]+)$",
    re.IGNORECASE,
)

#: Windows time-zone ids (what ``windowsConfiguration.timeZone`` takes) and their IANA zones
WINDOWS_TIME_ZONES: dict[str, str] = {
    "Dateline Standard Time": "Etc/GMT+12", "UTC-11": "Etc/GMT+11",
    "Aleutian Standard Time": "America/Adak", "Hawaiian Standard Time": "Pacific/Honolulu",
    "Marquesas Standard Time": "Pacific/Marquesas", "Alaskan Standard Time": "America/Anchorage",
    "UTC-09": "Etc/GMT+9", "Pacific Standard Time (Mexico)": "America/Tijuana",
    "UTC-08": "Etc/GMT+8", "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time (Mexico)": "America/Mazatlan",
    "Mountain Standard Time": "America/Denver", "Yukon Standard Time": "America/Whitehorse",
    "Central America Standard Time": "America/Guatemala",
    "Central Standard Time": "America/Chicago", "Easter Island Standard Time": "Pacific/Easter",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina", "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time (Mexico)": "America/Cancun",
    "Eastern Standard Time": "America/New_York", "Haiti Standard Time": "America/Port-au-Prince",
    "Cuba Standard Time": "America/Havana",
    "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Turks And Caicos Standard Time": "America/Grand_Turk",
    "Paraguay Standard Time": "America/Asuncion", "Atlantic Standard Time": "America/Halifax",
    "Venezuela Standard Time": "America/Caracas",
    "Central Brazilian Standard Time": "America/Cuiaba",
    "SA Western Standard Time": "America/La_Paz", "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns",
    "Tocantins Standard Time": "America/Araguaina",
    "E. South America Standard Time": "America/Sao_Paulo",
    "SA Eastern Standard Time": "America/Cayenne",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "Greenland Standard Time": "America/Godthab", "Montevideo Standard Time": "America/Montevideo",
    "Magallanes Standard Time": "America/Punta_Arenas",
    "Saint Pierre Standard Time": "America/Miquelon", "Bahia Standard Time": "America/Bahia",
    "UTC-02": "Etc/GMT+2", "Azores Standard Time": "Atlantic/Azores",
    "Cape Verde Standard Time": "Atlantic/Cape_Verde", "UTC": "Etc/UTC",
    "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Sao Tome Standard Time": "Africa/Sao_Tome", "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin", "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris", "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos", "Jordan Standard Time": "Asia/Amman",
    "GTB Standard Time": "Europe/Bucharest", "Middle East Standard Time": "Asia/Beirut",
    "Egypt Standard Time": "Africa/Cairo", "E. Europe Standard Time": "Europe/Chisinau",
    "Syria Standard Time": "Asia/Damascus", "West Bank Standard Time": "Asia/Hebron",
    "South Africa Standard Time": "Africa/Johannesburg", "FLE Standard Time": "Europe/Kiev",
    "Israel Standard Time": "Asia/Jerusalem", "South Sudan Standard Time": "Africa/Juba",
    "Kaliningrad Standard Time": "Europe/Kaliningrad", "Sudan Standard Time": "Africa/Khartoum",
    "Libya Standard Time": "Africa/Tripoli", "Namibia Standard Time": "Africa/Windhoek",
    "Arabic Standard Time": "Asia/Baghdad", "Turkey Standard Time": "Europe/Istanbul",
    "Arab Standard Time": "Asia/Riyadh", "Belarus Standard Time": "Europe/Minsk",
    "Russian Standard Time": "Europe/Moscow", "E. Africa Standard Time": "Africa/Nairobi",
    "Volgograd Standard Time": "Europe/Volgograd", "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai", "Astrakhan Standard Time": "Europe/Astrakhan",
    "Azerbaijan Standard Time": "Asia/Baku", "Russia Time Zone 3": "Europe/Samara",
    "Mauritius Standard Time": "Indian/Mauritius", "Saratov Standard Time": "Europe/Saratov",
    "Georgian Standard Time": "Asia/Tbilisi", "Caucasus Standard Time": "Asia/Yerevan",
    "Afghanistan Standard Time": "Asia/Kabul", "West Asia Standard Time": "Asia/Tashkent",
    "Ekaterinburg Standard Time": "Asia/Yekaterinburg",
    "Pakistan Standard Time": "Asia/Karachi", "Qyzylorda Standard Time": "Asia/Qyzylorda",
    "India Standard Time": "Asia/Kolkata", "Sri Lanka Standard Time": "Asia/Colombo",
    "Nepal Standard Time": "Asia/Kathmandu", "Central Asia Standard Time": "Asia/Almaty",
    "Bangladesh Standard Time": "Asia/Dhaka", "Omsk Standard Time": "Asia/Omsk",
    "Myanmar Standard Time": "Asia/Yangon", "SE Asia Standard Time": "Asia/Bangkok",
    "Altai Standard Time": "Asia/Barnaul", "W. Mongolia Standard Time": "Asia/Hovd",
    "North Asia Standard Time": "Asia/Krasnoyarsk",
    "N. Central Asia Standard Time": "Asia/Novosibirsk", "Tomsk Standard Time": "Asia/Tomsk",
    "China Standard Time": "Asia/Shanghai", "North Asia East Standard Time": "Asia/Irkutsk",
    "Singapore Standard Time": "Asia/Singapore", "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei", "Ulaanbaatar Standard Time": "Asia/Ulaanbaatar",
    "Aus Central W. Standard Time": "Australia/Eucla",
    "Transbaikal Standard Time": "Asia/Chita", "Tokyo Standard Time": "Asia/Tokyo",
    "North Korea Standard Time": "Asia/Pyongyang", "Korea Standard Time": "Asia/Seoul",
    "Yakutsk Standard Time": "Asia/Yakutsk", "Cen. Australia Standard Time": "Australia/Adelaide",
    "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "West Pacific Standard Time": "Pacific/Port_Moresby",
    "Tasmania Standard Time": "Australia/Hobart", "Vladivostok Standard Time": "Asia/Vladivostok",
    "Lord Howe Standard Time": "Australia/Lord_Howe",
    "Bougainville Standard Time": "Pacific/Bougainville",
    "Russia Time Zone 10": "Asia/Srednekolymsk", "Magadan Standard Time": "Asia/Magadan",
    "Norfolk Standard Time": "Pacific/Norfolk", "Sakhalin Standard Time": "Asia/Sakhalin",
    "Central Pacific Standard Time": "Pacific/Guadalcanal",
    "Russia Time Zone 11": "Asia/Kamchatka", "New Zealand Standard Time": "Pacific/Auckland",
    "UTC+12": "Etc/GMT-12", "Fiji Standard Time": "Pacific/Fiji",
    "Chatham Islands Standard Time": "Pacific/Chatham", "UTC+13": "Etc/GMT-13",
    "Tonga Standard Time": "Pacific/Tongatapu", "Samoa Standard Time": "Pacific/Apia",
    "Line Islands Standard Time": "Pacific/Kiritimati",
}  # fmt: skip
_WINDOWS_ZONE_NAMES = {name.lower(): name for name in WINDOWS_TIME_ZONES}


@dataclass(frozen=True)
class Place:
    """Where a resource lives: its subscription, its group (as the group spells itself), its name."""

    subscription: str
    group: str
    name: str

    def id(self, kind: str) -> str:
        """The resource's ARM id, e.g. ``kind="virtualMachines"``."""
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"
            f"/providers/Microsoft.Compute/{kind}/{self.name}"
        )


@dataclass(frozen=True)
class Platform:
    """What the VM rules need to know about the world, looked up by the caller.

    ``product_for_image(publisher, offer, sku)``: the catalog's product for an image, if
    known. ``baseline(product)``: the product's current baseline KB id, if any (the
    ``exactVersion`` of a ``latest`` image). ``availability_set(id)``: the stored model of
    an availability set of this subscription, by id in any case. ``missing_features()``:
    the preview features enabling hotpatch still needs (empty unless the preview rules
    apply).
    """

    product_for_image: Callable[[str, str, str], Product | None]
    baseline: Callable[[str], str | None]
    availability_set: Callable[[str], dict[str, Any] | None]
    sovereign_regions: frozenset[str]
    missing_features: Callable[[], list[str]]


# --- small checks ------------------------------------------------------------------------------


def invalid(target: str, message: str) -> ApiError:
    """Compute's 400 ``InvalidParameter`` for the property at JSON path ``target``."""
    return ApiError(400, "InvalidParameter", message, target=target)


def change_refused(target: str, prop: str) -> ApiError:
    """Compute's 409 for changing what can only be chosen at creation."""
    return ApiError(
        409,
        "PropertyChangeNotAllowed",
        f"Changing property '{prop}' is not allowed.",
        target=target,
    )


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _object(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(path, f"The property '{_leaf(path)}' must be a JSON object.")
    return value


def _string(value: Any, path: str, *, limit: int = 1024) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(
            path, f"The property '{_leaf(path)}' must be a string of at most {limit} characters."
        )
    return value


def _bool(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(path, f"The property '{_leaf(path)}' must be true or false.")
    return value


def _int(value: Any, path: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise invalid(
            path,
            f"The value '{value}' of property '{_leaf(path)}' is not valid. "
            f"It must be a whole number from {low} to {high}.",
        )
    return value


def _enum(value: Any, path: str, allowed: Iterable[str], default: str | None) -> str | None:
    if value is None:
        return default
    choices = tuple(allowed)
    if isinstance(value, str):
        for choice in choices:
            if choice.lower() == value.lower():
                return choice
    listed = ", ".join(f"'{c}'" for c in choices)
    raise invalid(
        path,
        f"The value '{value}' of property '{_leaf(path)}' is not valid. "
        f"Allowed values are {listed}.",
    )


def _inherit(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``new`` with what it leaves out (or sets to null) taken from ``old``, recursively."""
    result = {k: v for k, v in new.items() if v is not None}
    for key, value in old.items():
        mine = result.get(key)
        if mine is None:
            result[key] = value
        elif isinstance(mine, dict) and isinstance(value, dict):
            result[key] = _inherit(mine, value)
    return result


def _without(value: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in keys}


def request_object(body: Any) -> dict[str, Any]:
    """The request body, which must be a JSON object without ``NaN`` or infinities.

    Parts of a model this server does not interpret are stored as sent, so nothing that
    could not be answered as strict JSON may get in.
    """
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: "
            "a JSON object is required.",
        )
    pending: list[Any] = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ApiError(
                400,
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: "
                f"'{value}' is not a JSON number.",
            )
    return body


def location_of(body: dict[str, Any], existing: dict[str, Any] | None, resource_type: str) -> str:
    """The resource's location in ARM's spelling; it is required at creation and then fixed."""
    value = body.get("location")
    if existing is not None and value is None:
        return str(existing["location"])
    if value is None or value == "":
        raise ApiError(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
            target="location",
        )
    location = normalize_location(value) if isinstance(value, str) else ""
    if location not in REGIONS:
        raise ApiError(
            400,
            "LocationNotAvailableForResourceType",
            f"The provided location '{value}' is not available for resource type "
            f"'{resource_type}'. List of available regions for the resource type is "
            f"'{','.join(sorted(REGIONS))}'.",
            target="location",
        )
    if existing is not None and location != existing["location"]:
        raise ApiError(
            409,
            "InvalidResourceLocation",
            f"The resource '{existing['name']}' already exists in location "
            f"'{existing['location']}' in resource group '{existing['id'].split('/')[4]}'. "
            f"A resource with the same name cannot be created in location '{location}'. "
            "Please select a new resource name.",
            target="location",
        )
    return location


def tags_of(value: Any) -> dict[str, str]:
    """Validated tags; the ``hotpatch-environment`` tag must name a known environment."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid("tags", "The property 'tags' must be an object whose values are strings.")
    if len(value) > _MAX_TAGS:
        raise ApiError(
            400,
            "InvalidTagCount",
            f"The number of tags {len(value)} exceeds the limit of {_MAX_TAGS}.",
            target="tags",
        )
    tags: dict[str, str] = {}
    for key, tag in value.items():
        if not key or len(key) > 512 or len(tag) > 256 or any(c in key for c in "<>%&\\?/"):
            raise ApiError(
                400,
                "InvalidTagNameCharacters" if key and len(key) <= 512 else "InvalidTagName",
                f"The tag name '{key}' or its value is invalid: names are 1 to 512 characters "
                "without '<', '>', '%', '&', '\\', '?' or '/', values at most 256 characters.",
                target="tags",
            )
        tags[key] = tag
        if key.lower() == ENVIRONMENT_TAG:
            known = {e.lower(): e for e in ENVIRONMENTS}.get(tag.lower())
            if known is None:
                raise invalid(
                    f"tags.{key}",
                    f"The value '{tag}' of tag '{key}' is not valid. Allowed values are "
                    f"'{ENVIRONMENTS[0]}', '{ENVIRONMENTS[1]}'.",
                )
            tags[key] = known
        elif key.lower() == WINDOW_TAG:
            try:
                tags[key] = str(Window.parse(tag))
            except ValueError:
                raise invalid(
                    f"tags.{key}",
                    f"The value '{tag}' of tag '{key}' is not valid: give the machine's "
                    "off-peak window in its local time as HH:MM-HH:MM, such as '22:00-06:00'.",
                ) from None
    return tags


def environment(model: dict[str, Any]) -> str:
    """The machine's environment: its ``hotpatch-environment`` tag, else ``Production``."""
    for key, value in (model.get("tags") or {}).items():
        if key.lower() == ENVIRONMENT_TAG:
            return str(value)
    return DEFAULT_ENVIRONMENT


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def iana_time_zone(name: str) -> str | None:
    """The IANA zone a ``timeZone`` value stands for (a Windows id or an IANA name), if known."""
    windows = _WINDOWS_ZONE_NAMES.get(name.lower())
    if windows is not None:
        return WINDOWS_TIME_ZONES[windows]
    return name if name in _iana_zones() else None


def _time_zone(value: Any, path: str) -> str | None:
    name = _string(value, path, limit=100)
    if name is None:
        return None
    if iana_time_zone(name) is None:
        raise invalid(
            path,
            f"The value '{name}' of property 'timeZone' is not a known time zone. Use a Windows "
            "time zone id such as 'Pacific Standard Time' or an IANA name such as "
            "'America/Los_Angeles'.",
        )
    return _WINDOWS_ZONE_NAMES.get(name.lower(), name)


# --- availability sets -------------------------------------------------------------------------


def normalise_availability_set(
    body: Any, existing: dict[str, Any] | None, *, place: Place, has_machines: bool
) -> dict[str, Any]:
    """The availability set a PUT (or a merged PATCH) of ``body`` makes, as GET returns it.

    ``existing`` is the stored model on update. The domain counts cannot change while
    virtual machines are in the set (``has_machines``).
    """
    data = request_object(body)
    old = existing or {}
    props = _without(_object(data.get("properties"), "properties"), "virtualMachines", "statuses")
    sku_in = _object(data.get("sku"), "sku")
    if existing is not None:
        props = _inherit(props, old.get("properties", {}))
        sku_in = _inherit(sku_in, old.get("sku", {}))
    location = location_of(data, existing, AS_TYPE)
    sku = {"name": _enum(sku_in.get("name"), "sku.name", _AS_SKUS, "Aligned")}
    update_domains = _int(
        props.get("platformUpdateDomainCount"), "properties.platformUpdateDomainCount", 5, 1, 20
    )
    fault_domains = _int(
        props.get("platformFaultDomainCount"), "properties.platformFaultDomainCount", 2, 1, 3
    )
    if existing is not None and has_machines:
        for key, value in (
            ("platformUpdateDomainCount", update_domains),
            ("platformFaultDomainCount", fault_domains),
        ):
            if old["properties"].get(key) != value:
                raise change_refused(f"properties.{key}", key)
    properties = {
        **_without(props, "platformUpdateDomainCount", "platformFaultDomainCount"),
        "platformUpdateDomainCount": update_domains,
        "platformFaultDomainCount": fault_domains,
    }
    model: dict[str, Any] = {
        "id": old.get("id") or place.id("availabilitySets"),
        "name": old.get("name") or place.name,
        "type": AS_TYPE,
        "location": location,
    }
    tags = tags_of(data.get("tags"))
    if tags:
        model["tags"] = tags
    model["sku"] = sku
    model["properties"] = properties
    return model


def availability_set_view(model: dict[str, Any], machines: Iterable[str]) -> dict[str, Any]:
    """The availability set as GET returns it: with the ids of the machines in it."""
    view = dict(model)
    view["properties"] = {**model["properties"], "virtualMachines": [{"id": m} for m in machines]}
    return view


# --- virtual machines --------------------------------------------------------------------------

#: properties the platform sets; a body's values for them are ignored
_VM_READ_ONLY = ("vmId", "provisioningState", "instanceView", "timeCreated")


def normalise_vm(
    body: Any,
    existing: dict[str, Any] | None,
    *,
    place: Place,
    api_version: str,
    now: datetime,
    platform: Platform,
) -> dict[str, Any]:
    """The virtual machine a PUT (or a merged PATCH) of ``body`` makes, as GET returns it.

    ``existing`` is the stored model when the machine exists. Raises ``ApiError`` with
    Azure's code, message and target for anything Azure would refuse.
    """
    data = request_object(body)
    old = existing or {}
    old_props: dict[str, Any] = old.get("properties", {})
    props = _without(_object(data.get("properties"), "properties"), *_VM_READ_ONLY)
    if existing is not None:
        _refuse_os_switch(props, old_props)
        props = _inherit(props, _without(old_props, *_VM_READ_ONLY))
    location = location_of(data, existing, VM_TYPE)
    tags = tags_of(data.get("tags"))
    zones = _zones(data.get("zones"), (old.get("zones") or []) if existing is not None else None)

    hardware = _object(props.get("hardwareProfile"), "properties.hardwareProfile")
    _string(hardware.get("vmSize"), "properties.hardwareProfile.vmSize", limit=200)
    image, product = _image(props.get("storageProfile"), old_props, platform)
    storage = _without(
        _object(props.get("storageProfile"), "properties.storageProfile"), "imageReference"
    )
    storage_out = {**storage, **({"imageReference": image} if image else {})}
    os_profile = _os_profile(props.get("osProfile"), old_props.get("osProfile"), place.name)
    availability = _availability_set(
        props.get("availabilitySet"), old_props, place, platform, creating=existing is None
    )

    hotpatch_image = product is not None and product.hotpatch
    if hotpatch_image and api_version < HOTPATCH_MIN_API:
        raise ApiError(
            400,
            "BadRequest",
            "Hotpatch compatible VMs cannot be created or updated with an API version lower "
            "than '2020-06-01'.",
        )
    if availability is not None:
        _check_placement(availability, location, zones)
    windows = os_profile.get("windowsConfiguration")
    if windows is not None or "linuxConfiguration" not in os_profile:
        given = ((props.get("osProfile") or {}).get("windowsConfiguration") or {}).get(
            "patchSettings"
        )
        if hotpatch_image and existing is None and given is None:
            raise invalid(
                f"{_WIN}.patchSettings",
                "PatchSettings must be specified for hotpatch compatible VMs.",
            )
    if windows is not None:
        old_windows = (old_props.get("osProfile") or {}).get("windowsConfiguration")
        _windows_rules(windows, old_windows if existing is not None else None)
        settings = windows["patchSettings"]
        if settings["enableHotpatching"]:
            _hotpatch_rules(
                windows,
                image,
                product,
                location,
                platform,
                enabling=not (old_windows or {}).get("patchSettings", {}).get("enableHotpatching"),
            )
    linux = os_profile.get("linuxConfiguration")
    if linux is not None and linux["patchSettings"]["patchMode"] == "AutomaticByPlatform":
        _needs_agent(linux, _LINUX)

    properties: dict[str, Any] = {
        key: value
        for key, value in props.items()
        if key not in ("storageProfile", "osProfile", "availabilitySet")
    }
    properties["vmId"] = old_props.get("vmId") or str(uuid.uuid4())
    if storage_out:
        properties["storageProfile"] = storage_out
    if os_profile:
        properties["osProfile"] = os_profile
    if availability is not None:
        properties["availabilitySet"] = {"id": availability["id"]}
    properties["provisioningState"] = "Succeeded"
    properties["timeCreated"] = old_props.get("timeCreated") or now.isoformat()
    model: dict[str, Any] = {
        "id": old.get("id") or place.id("virtualMachines"),
        "name": old.get("name") or place.name,
        "type": VM_TYPE,
        "location": location,
    }
    if tags:
        model["tags"] = tags
    if zones:
        model["zones"] = zones
    for key in ("identity", "plan"):
        if isinstance(data.get(key), dict):
            model[key] = data[key]
    model["properties"] = properties
    return model


def _refuse_os_switch(props: dict[str, Any], old_props: dict[str, Any]) -> None:
    new = props.get("osProfile")
    old = old_props.get("osProfile") or {}
    if not isinstance(new, dict):
        return
    for mine, other in (
        ("windowsConfiguration", "linuxConfiguration"),
        ("linuxConfiguration", "windowsConfiguration"),
    ):
        if new.get(mine) is not None and old.get(other) is not None:
            raise change_refused(f"{_OS}.{mine}", f"osProfile.{other}")


def _zones(value: Any, old: list[str] | None) -> list[str]:
    if value is None:
        return list(old or [])
    if (
        not isinstance(value, list)
        or len(value) > 1
        or not all(isinstance(z, str) and z in _ZONES for z in value)
    ):
        raise invalid(
            "zones",
            f"The value '{value}' of property 'zones' is not valid. A virtual machine takes at "
            "most one availability zone: '1', '2' or '3'.",
        )
    if old is not None and list(value) != list(old):
        raise change_refused("zones", "zones")
    return list(value)


def _image(
    storage: Any, old_props: dict[str, Any], platform: Platform
) -> tuple[dict[str, Any] | None, Product | None]:
    raw = _object(_object(storage, "properties.storageProfile").get("imageReference"), _IMAGE)
    if not raw:
        return None, None
    ref = _without(raw, "exactVersion")
    names = {}
    for key in ("publisher", "offer", "sku", "version", "id"):
        text = _string(ref.get(key), f"{_IMAGE}.{key}", limit=600)
        if text is not None:
            names[key] = text
    product = None
    if "publisher" in names or "offer" in names or "sku" in names:
        for key in ("publisher", "offer", "sku"):
            if not names.get(key):
                raise invalid(
                    f"{_IMAGE}.{key}",
                    f"The property '{key}' of 'imageReference' is required when a Marketplace "
                    "image is named by publisher, offer and sku.",
                )
        ref["version"] = names.get("version") or "latest"
        product = platform.product_for_image(names["publisher"], names["offer"], names["sku"])
    old_ref = ((old_props.get("storageProfile") or {}).get("imageReference")) or None
    if old_ref is not None:
        fields = ("publisher", "offer", "sku", "version", "id")
        if any(str(ref.get(k) or "").lower() != str(old_ref.get(k) or "").lower() for k in fields):
            raise change_refused(_IMAGE, "imageReference")
        if "exactVersion" in old_ref:
            ref["exactVersion"] = old_ref["exactVersion"]
        return ref, product
    version = ref.get("version")
    if version and version.lower() != "latest":
        ref["exactVersion"] = version
    elif product is not None:
        baseline = platform.baseline(product.name)
        if baseline:
            ref["exactVersion"] = baseline
    return ref, product


def _os_profile(value: Any, old: dict[str, Any] | None, name: str) -> dict[str, Any]:
    given = _object(value, _OS)
    if not given and old is None:
        return {}
    profile = _without(given, "adminPassword", "customData")
    computer = _string(profile.get("computerName"), f"{_OS}.computerName", limit=64)
    admin = _string(profile.get("adminUsername"), f"{_OS}.adminUsername", limit=64)
    if old is not None:
        for key, mine in (("computerName", computer), ("adminUsername", admin)):
            theirs = old.get(key)
            if mine is not None and theirs is not None and mine != theirs:
                raise change_refused(f"{_OS}.{key}", f"osProfile.{key}")
    profile["computerName"] = computer or name
    if admin is not None:
        profile["adminUsername"] = admin
    windows = profile.get("windowsConfiguration")
    linux = profile.get("linuxConfiguration")
    if windows is not None and linux is not None:
        raise invalid(
            _OS,
            "Only one of the properties 'windowsConfiguration' and 'linuxConfiguration' of "
            "'osProfile' may be specified.",
        )
    if windows is not None:
        profile["windowsConfiguration"] = _windows(windows)
    if linux is not None:
        profile["linuxConfiguration"] = _linux(linux)
    return profile


def _windows(value: Any) -> dict[str, Any]:
    config = _without(_object(value, _WIN), "enableVMAgentPlatformUpdates")
    agent = _bool(config.get("provisionVMAgent"), f"{_WIN}.provisionVMAgent", True)
    automatic = _bool(config.get("enableAutomaticUpdates"), f"{_WIN}.enableAutomaticUpdates", True)
    config["provisionVMAgent"] = agent
    config["enableAutomaticUpdates"] = automatic
    zone = _time_zone(config.get("timeZone"), f"{_WIN}.timeZone")
    if zone is not None:
        config["timeZone"] = zone
    path = f"{_WIN}.patchSettings"
    settings = _object(config.get("patchSettings"), path)
    mode = _enum(
        settings.get("patchMode"),
        f"{path}.patchMode",
        _WIN_PATCH_MODES,
        "AutomaticByOS" if automatic else "Manual",
    )
    out = {
        **settings,
        "patchMode": mode,
        "enableHotpatching": _bool(
            settings.get("enableHotpatching"), f"{path}.enableHotpatching", False
        ),
        "assessmentMode": _enum(
            settings.get("assessmentMode"),
            f"{path}.assessmentMode",
            _ASSESSMENT_MODES,
            "ImageDefault",
        ),
    }
    _platform_settings(out, settings.get("automaticByPlatformSettings"), path, mode)
    config["patchSettings"] = out
    return config


def _linux(value: Any) -> dict[str, Any]:
    config = _without(_object(value, _LINUX), "enableVMAgentPlatformUpdates")
    config["provisionVMAgent"] = _bool(
        config.get("provisionVMAgent"), f"{_LINUX}.provisionVMAgent", True
    )
    zone = _time_zone(config.pop("timeZone", None), f"{_LINUX}.timeZone")
    if zone is not None:
        config["timeZone"] = zone
    path = f"{_LINUX}.patchSettings"
    settings = _object(config.get("patchSettings"), path)
    if settings.get("enableHotpatching") not in (None, False):
        raise invalid(
            f"{path}.enableHotpatching",
            "The property 'enableHotpatching' is not supported for Linux virtual machines: "
            "hotpatching needs 'windowsConfiguration.patchSettings'.",
        )
    mode = _enum(settings.get("patchMode"), f"{path}.patchMode", _LINUX_PATCH_MODES, "ImageDefault")
    out = {
        **_without(settings, "enableHotpatching"),
        "patchMode": mode,
        "assessmentMode": _enum(
            settings.get("assessmentMode"),
            f"{path}.assessmentMode",
            _ASSESSMENT_MODES,
            "ImageDefault",
        ),
    }
    _platform_settings(out, settings.get("automaticByPlatformSettings"), path, mode)
    config["patchSettings"] = out
    return config


def _platform_settings(out: dict[str, Any], value: Any, path: str, mode: str | None) -> None:
    where = f"{path}.automaticByPlatformSettings"
    given = _object(value, where)
    if not given and mode != "AutomaticByPlatform":
        out.pop("automaticByPlatformSettings", None)
        return
    out["automaticByPlatformSettings"] = {
        **given,
        "rebootSetting": _enum(
            given.get("rebootSetting"), f"{where}.rebootSetting", _REBOOT_SETTINGS, "IfRequired"
        ),
        "bypassPlatformSafetyChecksOnUserSchedule": _bool(
            given.get("bypassPlatformSafetyChecksOnUserSchedule"),
            f"{where}.bypassPlatformSafetyChecksOnUserSchedule",
            False,
        ),
    }


def _windows_rules(windows: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Patch-mode rules of automatic VM guest patching (azure_api.md §3.3, §3.4)."""
    path = f"{_WIN}.patchSettings.patchMode"
    automatic = windows["enableAutomaticUpdates"]
    mode = windows["patchSettings"]["patchMode"]
    if old is not None:
        if old.get("enableAutomaticUpdates", automatic) != automatic:
            raise change_refused(
                f"{_WIN}.enableAutomaticUpdates", "windowsConfiguration.enableAutomaticUpdates"
            )
        before = (old.get("patchSettings") or {}).get("patchMode", mode)
        _check_transition(before, mode, automatic, path)
    if mode == "AutomaticByOS" and not automatic:
        raise invalid(
            path,
            "The patchMode 'AutomaticByOS' is invalid. For patchMode 'AutomaticByOS', the "
            "property 'enableAutomaticUpdates' must be set to true.",
        )
    if mode == "Manual" and automatic:
        raise invalid(
            path,
            "The patchMode 'Manual' is invalid. For patchMode 'Manual', the property "
            "'enableAutomaticUpdates' must be set to false.",
        )
    if mode == "AutomaticByPlatform":
        _needs_agent(windows, _WIN)


def _check_transition(before: str, after: str, automatic: bool, path: str) -> None:
    if before == after:
        return
    pair = {before, after}
    if pair == {"AutomaticByOS", "Manual"}:
        raise invalid(
            path,
            f"The patchMode cannot be changed from '{before}' to '{after}'. Changing between "
            "'AutomaticByOS' and 'Manual' is not supported.",
        )
    needed = pair == {"AutomaticByPlatform", "AutomaticByOS"}
    if automatic != needed:
        raise invalid(
            path,
            f"The patchMode cannot be changed from '{before}' to '{after}' while the property "
            f"'enableAutomaticUpdates' is {str(automatic).lower()}. Changing between "
            f"'{before}' and '{after}' requires 'enableAutomaticUpdates' to be "
            f"{str(needed).lower()}.",
        )


def _needs_agent(config: dict[str, Any], where: str) -> None:
    if not config["provisionVMAgent"]:
        raise invalid(
            f"{where}.provisionVMAgent",
            "The patchMode 'AutomaticByPlatform' is invalid. For patchMode "
            "'AutomaticByPlatform', the property 'provisionVMAgent' must be set to true.",
        )


def _hotpatch_rules(
    windows: dict[str, Any],
    image: dict[str, Any] | None,
    product: Product | None,
    location: str,
    platform: Platform,
    *,
    enabling: bool,
) -> None:
    path = f"{_WIN}.patchSettings"
    target = f"{path}.enableHotpatching"
    settings = windows["patchSettings"]
    needs = (
        "For enableHotpatching, the 'provisionVMAgent' must be set to true and 'patchMode' "
        "must be set to 'AutomaticByPlatform'."
    )
    if settings["patchMode"] != "AutomaticByPlatform":
        raise invalid(f"{path}.patchMode", needs)
    if not windows["provisionVMAgent"]:
        raise invalid(f"{_WIN}.provisionVMAgent", needs)
    if settings["automaticByPlatformSettings"]["bypassPlatformSafetyChecksOnUserSchedule"]:
        raise invalid(
            f"{path}.automaticByPlatformSettings.bypassPlatformSafetyChecksOnUserSchedule",
            "Hotpatch updates require platform safety checks. The "
            "'BypassPlatformSafetyChecksOnUserSchedule' flag must be set to false to enable "
            "hotpatching.",
        )
    if product is None or not product.hotpatch:
        named = (
            "{publisher}:{offer}:{sku}".format(**image)
            if image and "publisher" in image
            else "(none)"
        )
        raise invalid(
            target,
            f"The property 'enableHotpatching' cannot be set to true: the image '{named}' "
            "does not support hotpatching. Hotpatch is supported only on hotpatch-capable "
            "images named by publisher, offer and sku in "
            "'properties.storageProfile.imageReference'.",
        )
    if location in platform.sovereign_regions:
        raise invalid(
            target,
            f"The property 'enableHotpatching' cannot be set to true in location "
            f"'{location}': hotpatch is not available in Azure Government regions.",
        )
    if enabling:
        missing = platform.missing_features()
        if missing:
            names = ", ".join(f"'Microsoft.Compute/{name}'" for name in missing)
            noun = "feature is" if len(missing) == 1 else "features are"
            raise invalid(
                target,
                f"The property 'enableHotpatching' is not valid because the {names} {noun} "
                "not enabled for this subscription.",
            )


def _availability_set(
    value: Any, old_props: dict[str, Any], place: Place, platform: Platform, *, creating: bool
) -> dict[str, Any] | None:
    path = "properties.availabilitySet"
    given = _object(value, path)
    wanted = _string(given.get("id"), f"{path}.id", limit=600)
    old_id = (old_props.get("availabilitySet") or {}).get("id")
    if not creating and (wanted or "").lower() != str(old_id or "").lower():
        raise change_refused(f"{path}.id", "availabilitySet.id")
    if wanted is None:
        if given:
            raise invalid(f"{path}.id", "The property 'id' of 'availabilitySet' is required.")
        return None
    match = _AS_ID_RE.match(wanted)
    found = None
    if match is not None and match.group(1).lower() == place.subscription.lower():
        found = platform.availability_set(wanted)
    if found is None:
        raise invalid(
            f"{path}.id",
            f"The availability set '{wanted}' named by property 'availabilitySet.id' was not "
            "found.",
        )
    if match is not None and match.group(2).lower() != place.group.lower():
        raise invalid(
            f"{path}.id",
            f"The availability set '{wanted}' named by property 'availabilitySet.id' must be "
            f"in the virtual machine's resource group '{place.group}'.",
        )
    return found


def _check_placement(availability: dict[str, Any], location: str, zones: list[str]) -> None:
    target = "properties.availabilitySet.id"
    if availability["location"] != location:
        raise invalid(
            target,
            f"The availability set '{availability['id']}' named by property "
            f"'availabilitySet.id' is in location '{availability['location']}', not in the "
            f"virtual machine's location '{location}'.",
        )
    if zones:
        raise invalid(
            "zones",
            "The property 'zones' cannot be set on a virtual machine in an availability set: "
            "a virtual machine is placed either in an availability set or in an availability "
            "zone.",
        )


def instance_view(
    model: dict[str, Any],
    *,
    patch_status: dict[str, Any],
    last_seen: datetime | None,
    now: datetime,
    reported: dict[str, Any] | None,
    os_name: str | None,
) -> dict[str, Any]:
    """The ``VirtualMachineInstanceView`` of a machine, from what its agent last reported."""
    properties = model["properties"]
    running = last_seen is not None and now - last_seen <= RUNNING_WINDOW
    view: dict[str, Any] = {
        "computerName": (properties.get("osProfile") or {}).get("computerName", model["name"]),
    }
    reported = reported or {}
    name = reported.get("osName") or os_name
    if isinstance(name, str):
        view["osName"] = name
    if isinstance(reported.get("osVersion"), str):
        view["osVersion"] = reported["osVersion"]
    view["patchStatus"] = patch_status
    view["statuses"] = [
        {
            "code": "ProvisioningState/succeeded",
            "level": "Info",
            "displayStatus": "Provisioning succeeded",
            "time": properties.get("timeCreated"),
        },
        {
            "code": "PowerState/running" if running else "PowerState/unknown",
            "level": "Info",
            "displayStatus": "VM running" if running else "VM status unknown",
        },
    ]
    return view


# --- facts about a machine, for its agent and for operators -------------------------------------

#: the longest publisher, offer or sku accepted from an agent's report
_IMAGE_FIELD_LIMIT = 600


def os_type(vm: dict[str, Any]) -> str:
    """``Windows`` or ``Linux``: what the VM's model says (its OS disk, else its OS profile)."""
    properties = vm.get("properties") or {}
    disk = ((properties.get("storageProfile") or {}).get("osDisk")) or {}
    declared = disk.get("osType")
    if isinstance(declared, str) and declared.lower() in ("windows", "linux"):
        return "Linux" if declared.lower() == "linux" else "Windows"
    profile = properties.get("osProfile") or {}
    return "Linux" if profile.get("linuxConfiguration") else "Windows"


def patch_settings(model: dict[str, Any]) -> dict[str, Any]:
    """The machine's ``patchSettings`` (Windows or Linux); empty when its model has none."""
    profile = (model.get("properties") or {}).get("osProfile") or {}
    for key in ("windowsConfiguration", "linuxConfiguration"):
        settings = (profile.get(key) or {}).get("patchSettings")
        if isinstance(settings, dict):
            return settings
    return {}


def _image_fields(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    fields = {key: value.get(key) for key in ("publisher", "offer", "sku")}
    if all(isinstance(v, str) and 0 < len(v) <= _IMAGE_FIELD_LIMIT for v in fields.values()):
        return {key: str(v) for key, v in fields.items()}
    return None


def model_image(model: dict[str, Any]) -> dict[str, str] | None:
    """The publisher, offer and sku of the image the machine's model names, if it names one."""
    storage = (model.get("properties") or {}).get("storageProfile") or {}
    return _image_fields(storage.get("imageReference"))


def reported_image(reported: dict[str, Any] | None) -> dict[str, str] | None:
    """The image an agent reported its machine runs (``reported.image``), if well formed."""
    return _image_fields((reported or {}).get("image"))
