"""``hotpatch group`` and ``hotpatch vm``: machines and their patching, as az spells them.

``vm create … --image … --enable-hotpatching --patch-mode AutomaticByPlatform``,
``vm update --enable-hotpatching false``, ``vm assess-patches``, ``vm install-patches``
(``--maximum-duration PT4H --reboot-setting IfRequired --classifications-to-include Critical
Security --kb-numbers-to-include …``), ``vm show --patch-status`` and ``vm history`` map to
the ARM routes and ``/hotpatch/machines`` routes the server documents. List options take
several values after one flag, as az's do.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pyhotpatch.cli._output import UsageError
from pyhotpatch.cli._session import (
    COMPUTE,
    RESOURCES,
    NoWaitOption,
    OutputOption,
    QueryOption,
    ServerOption,
    Session,
    SubscriptionOption,
    TokenOption,
    dig,
    machine_path,
    run,
    vm_id,
)

group_app = typer.Typer(name="group", help="Resource groups (az group).", no_args_is_help=True)
vm_app = typer.Typer(
    name="vm", help="Machines and their hotpatching (az vm).", no_args_is_help=True
)
set_app = typer.Typer(
    name="availability-set",
    help="Availability sets: machines patched one update domain at a time.",
    no_args_is_help=True,
)
vm_app.add_typer(set_app)

GroupOption = Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.")]
VmNameOption = Annotated[str, typer.Option("--name", "-n", help="Machine (VM) name.")]
ENVIRONMENT_TAG = "hotpatch-environment"
WINDOW_TAG = "hotpatch-maintenance-window"
#: az's image aliases that name hotpatch-capable images, and the project's demo images
IMAGE_ALIASES = {
    "Win2022AzureEditionCore": (
        "MicrosoftWindowsServer:WindowsServer:2022-datacenter-azure-edition-core:latest"
    ),
    "Win2022AzureEdition": (
        "MicrosoftWindowsServer:WindowsServer:2022-datacenter-azure-edition-hotpatch:latest"
    ),
    "Win2025AzureEdition": "MicrosoftWindowsServer:WindowsServer:2025-datacenter-azure-edition:latest",
    "PyhotpatchDemo": "pyhotpatch:python-service:demo-hotpatch:latest",
    "PyhotpatchDemoLegacy": "pyhotpatch:python-service:demo-legacy:latest",
}
#: options that take several values after one flag (``--zones 1 2``), as in az
LIST_OPTIONS = frozenset(
    {"--classifications-to-include", "--kb-numbers-to-include", "--kb-numbers-to-exclude"}
)
#: boolean options written as a bare flag or with a value (``--enable-hotpatching false``)
BOOL_OPTIONS = frozenset({"--enable-hotpatching"})


def spread_arguments(argv: list[str]) -> list[str]:
    """The argument forms az accepts, rewritten into the ones click parses.

    ``--opt a b`` and ``--opt a,b`` become ``--opt a --opt b`` for the list options, and a
    bare boolean flag gets its ``true``.
    """
    result: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in LIST_OPTIONS:
            values = [arg.split("=", 1)[1]] if "=" in arg else []
            i += 1
            while "=" not in arg and i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
            for value in values:
                for piece in value.split(","):
                    if piece:
                        result.extend([name, piece])
            if not values:
                result.append(name)  # click reports the missing value
            continue
        if name in BOOL_OPTIONS and "=" not in arg:
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or following.startswith("-"):
                result.extend([arg, "true"])
                i += 1
                continue
        result.append(arg)
        i += 1
    return result


def _truth(value: str | None, option: str) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise UsageError(f"{option} takes true or false, not {value!r}")


def image_reference(image: str) -> dict[str, str]:
    """An ``imageReference`` from a URN ``publisher:offer:sku:version`` or an alias."""
    urn = IMAGE_ALIASES.get(image, image)
    parts = urn.split(":")
    if len(parts) != 4 or not all(parts):
        known = ", ".join(IMAGE_ALIASES)
        raise UsageError(f"--image must be publisher:offer:sku:version or one of {known}")
    publisher, offer, sku, version = parts
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


def _group_path(sub: str, group: str | None = None) -> str:
    base = f"/subscriptions/{sub}/resourcegroups"
    return base if group is None else f"{base}/{group}"


@group_app.command("create")
def group_create(
    name: Annotated[str, typer.Option("--name", "-n", help="Resource group name.")],
    location: Annotated[str, typer.Option("--location", "-l", help="Region, e.g. westus.")],
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a resource group (or answer the existing one in the same region)."""

    def body(s: Session) -> Any:
        return s.json("PUT", _group_path(s.subscription, name), RESOURCES, {"location": location})

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=group_rows,
    )


@group_app.command("list")
def group_list(
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The subscription's resource groups."""
    run(
        lambda s: s.listed(_group_path(s.subscription), RESOURCES),
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=group_rows,
    )


@group_app.command("delete")
def group_delete(
    name: Annotated[str, typer.Option("--name", "-n", help="Resource group name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a resource group and every machine in it (their agents lose their credentials)."""

    def body(s: Session) -> Any:
        _confirm(yes, f"delete resource group {name} and everything in it?")
        s.call("DELETE", _group_path(s.subscription, name), RESOURCES)
        return None

    run(body, server=server, token=token, subscription=subscription)


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Pass --yes to confirm without a terminal.")
    if not typer.confirm(question):
        raise typer.Exit(1)


def _vm_path(sub: str, group: str, name: str) -> str:
    return vm_id(sub, group, name)


@set_app.command("create")
def set_create(
    group: GroupOption,
    name: Annotated[str, typer.Option("--name", "-n", help="Availability set name.")],
    location: Annotated[
        str | None, typer.Option("--location", "-l", help="Region (default: the group's).")
    ] = None,
    update_domains: Annotated[
        int, typer.Option("--platform-update-domain-count", min=1, max=20)
    ] = 5,
    fault_domains: Annotated[int, typer.Option("--platform-fault-domain-count", min=1, max=3)] = 2,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create an availability set: its machines are patched one update domain at a time."""

    def body(s: Session) -> Any:
        region = (
            location or s.json("GET", _group_path(s.subscription, group), RESOURCES)["location"]
        )
        path = (
            f"/subscriptions/{s.subscription}/resourceGroups/{group}"
            f"/providers/Microsoft.Compute/availabilitySets/{name}"
        )
        model = {
            "location": region,
            "sku": {"name": "Aligned"},
            "properties": {
                "platformUpdateDomainCount": update_domains,
                "platformFaultDomainCount": fault_domains,
            },
        }
        return s.json("PUT", path, COMPUTE, model)

    run(body, server=server, token=token, subscription=subscription, output=output, query=query)


@vm_app.command("create")
def vm_create(
    group: GroupOption,
    name: VmNameOption,
    image: Annotated[
        str, typer.Option("--image", help="URN publisher:offer:sku:version, or an alias.")
    ],
    location: Annotated[
        str | None, typer.Option("--location", "-l", help="Region (default: the group's).")
    ] = None,
    enable_hotpatching: Annotated[
        str | None,
        typer.Option("--enable-hotpatching", help="Hotpatch this machine (true when given bare)."),
    ] = None,
    patch_mode: Annotated[
        str, typer.Option("--patch-mode", help="AutomaticByPlatform, AutomaticByOS or Manual.")
    ] = "AutomaticByPlatform",
    assessment_mode: Annotated[
        str | None, typer.Option("--assessment-mode", help="ImageDefault or AutomaticByPlatform.")
    ] = None,
    environment: Annotated[
        str, typer.Option("--environment", help="DevTest (patched first) or Production.")
    ] = "Production",
    zone: Annotated[str | None, typer.Option("--zone", help="Availability zone.")] = None,
    availability_set: Annotated[
        str | None, typer.Option("--availability-set", help="Availability set name or id.")
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option("--time-zone", help="IANA zone of the machine's off-peak hours."),
    ] = None,
    maintenance_window: Annotated[
        str | None,
        typer.Option("--maintenance-window", help="Off-peak hours HH:MM-HH:MM, local time."),
    ] = None,
    os_type: Annotated[str, typer.Option("--os-type", help="windows or linux.")] = "windows",
    size: Annotated[str, typer.Option("--size", help="VM size.")] = "Standard_D2s_v5",
    admin_username: Annotated[str, typer.Option("--admin-username")] = "azureuser",
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Create a machine; with --enable-hotpatching it takes hotpatches without restarts."""

    def body(s: Session) -> Any:
        if os_type.lower() not in ("windows", "linux"):
            raise UsageError(f"--os-type must be windows or linux, not {os_type!r}")
        if environment not in ("DevTest", "Production"):
            raise UsageError(f"--environment must be DevTest or Production, not {environment!r}")
        hotpatch = _truth(enable_hotpatching, "--enable-hotpatching")
        region = (
            location or s.json("GET", _group_path(s.subscription, group), RESOURCES)["location"]
        )
        settings: dict[str, Any] = {"patchMode": patch_mode}
        if assessment_mode:
            settings["assessmentMode"] = assessment_mode
        config: dict[str, Any] = {"provisionVMAgent": True, "patchSettings": settings}
        if time_zone:
            config["timeZone"] = time_zone
        if os_type.lower() == "windows":
            if hotpatch is not None:
                settings["enableHotpatching"] = hotpatch
            if patch_mode in ("Manual", "AutomaticByOS"):  # Azure ties the two, as az sets it
                config["enableAutomaticUpdates"] = patch_mode == "AutomaticByOS"
            os_profile_key = "windowsConfiguration"
        else:
            if hotpatch:
                raise UsageError(
                    "--enable-hotpatching exists only for windows machines, as in Azure"
                )
            os_profile_key = "linuxConfiguration"
        properties: dict[str, Any] = {
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {"imageReference": image_reference(image)},
            "osProfile": {
                "computerName": name,
                "adminUsername": admin_username,
                os_profile_key: config,
            },
        }
        if availability_set:
            set_id = availability_set
            if not set_id.startswith("/"):
                set_id = (
                    f"/subscriptions/{s.subscription}/resourceGroups/{group}"
                    f"/providers/Microsoft.Compute/availabilitySets/{availability_set}"
                )
            properties["availabilitySet"] = {"id": set_id}
        tags = {ENVIRONMENT_TAG: environment}
        if maintenance_window:
            tags[WINDOW_TAG] = maintenance_window
        model: dict[str, Any] = {"location": region, "tags": tags, "properties": properties}
        if zone:
            model["zones"] = [zone]
        return s.json("PUT", _vm_path(s.subscription, group, name), COMPUTE, model)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=vm_rows,
    )


@vm_app.command("update")
def vm_update(
    group: GroupOption,
    name: VmNameOption,
    enable_hotpatching: Annotated[
        str | None,
        typer.Option(
            "--enable-hotpatching",
            help="false: back to restart-based updates; true: rejoin at the next baseline.",
        ),
    ] = None,
    patch_mode: Annotated[str | None, typer.Option("--patch-mode")] = None,
    assessment_mode: Annotated[str | None, typer.Option("--assessment-mode")] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="DevTest or Production.")
    ] = None,
    maintenance_window: Annotated[
        str | None,
        typer.Option(
            "--maintenance-window", help="Off-peak hours HH:MM-HH:MM; '' for the fleet's."
        ),
    ] = None,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Change a machine's patch settings, environment or off-peak hours."""

    def body(s: Session) -> Any:
        path = _vm_path(s.subscription, group, name)
        current = s.json("GET", path, COMPUTE)
        os_profile = current.get("properties", {}).get("osProfile", {})
        key = "linuxConfiguration" if "linuxConfiguration" in os_profile else "windowsConfiguration"
        settings: dict[str, Any] = {}
        hotpatch = _truth(enable_hotpatching, "--enable-hotpatching")
        if hotpatch is not None:
            settings["enableHotpatching"] = hotpatch
        if patch_mode:
            settings["patchMode"] = patch_mode
        if assessment_mode:
            settings["assessmentMode"] = assessment_mode
        change: dict[str, Any] = {}
        if settings:
            change["properties"] = {"osProfile": {key: {"patchSettings": settings}}}
        tags: dict[str, Any] = {}
        if environment is not None:
            if environment not in ("DevTest", "Production"):
                raise UsageError(
                    f"--environment must be DevTest or Production, not {environment!r}"
                )
            tags[ENVIRONMENT_TAG] = environment
        if maintenance_window is not None:
            tags[WINDOW_TAG] = maintenance_window or None  # merge patch: null removes it
        if tags:
            change["tags"] = tags
        if not change:
            raise UsageError("nothing to change: give at least one option")
        return s.json("PATCH", path, COMPUTE, change)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=vm_rows,
    )


@vm_app.command("show")
def vm_show(
    group: GroupOption,
    name: VmNameOption,
    patch_status: Annotated[
        bool,
        typer.Option("--patch-status", help="Only the patch and hotpatch status, not the model."),
    ] = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """A machine; with --patch-status, its patch status and hotpatch enrolment."""

    def body(s: Session) -> Any:
        resource = _vm_path(s.subscription, group, name)
        if not patch_status:
            return s.json("GET", resource, COMPUTE)
        view = s.json("GET", resource + "/instanceView", COMPUTE)
        hotpatch = s.json("GET", f"/hotpatch/machines/{machine_path(resource)}/hotpatchStatus")
        return {"name": name, "patchStatus": view.get("patchStatus"), "hotpatch": hotpatch}

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=(status_rows if patch_status else vm_rows),
    )


@vm_app.command("list")
def vm_list(
    group: Annotated[
        str | None, typer.Option("--resource-group", "-g", help="Only this group's machines.")
    ] = None,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The subscription's (or a group's) machines."""

    def body(s: Session) -> Any:
        scope = f"/subscriptions/{s.subscription}" + (f"/resourceGroups/{group}" if group else "")
        return s.listed(f"{scope}/providers/Microsoft.Compute/virtualMachines", COMPUTE)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=vm_rows,
    )


@vm_app.command("delete")
def vm_delete(
    group: GroupOption,
    name: VmNameOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a machine; its agent's credential is revoked."""

    def body(s: Session) -> Any:
        _confirm(yes, f"delete machine {name}?")
        s.call("DELETE", _vm_path(s.subscription, group, name), COMPUTE)
        return None

    run(body, server=server, token=token, subscription=subscription)


@vm_app.command("assess-patches")
def vm_assess(
    group: GroupOption,
    name: VmNameOption,
    no_wait: NoWaitOption = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Assess the machine now: which patches it lacks (the portal's Assess now)."""

    def body(s: Session) -> Any:
        path = _vm_path(s.subscription, group, name) + "/assessPatches"
        return s.follow(s.call("POST", path, COMPUTE), f"assessPatches {name}", no_wait=no_wait)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=patch_rows,
    )


@vm_app.command("install-patches")
def vm_install(
    group: GroupOption,
    name: VmNameOption,
    maximum_duration: Annotated[
        str, typer.Option("--maximum-duration", help="ISO 8601 duration, at most PT4H.")
    ],
    reboot_setting: Annotated[
        str, typer.Option("--reboot-setting", help="IfRequired, Never or Always.")
    ],
    classifications: Annotated[
        list[str] | None,
        typer.Option("--classifications-to-include", help="Critical Security … (several)."),
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--kb-numbers-to-include", help="KB ids (several).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--kb-numbers-to-exclude", help="KB ids (several).")
    ] = None,
    exclude_reboot: Annotated[
        bool,
        typer.Option("--exclude-kbs-requiring-reboot", help="Leave out what needs a restart."),
    ] = False,
    no_wait: NoWaitOption = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Install patches now, outside the off-peak window (the portal's Install updates now)."""

    def body(s: Session) -> Any:
        path = _vm_path(s.subscription, group, name)
        model = s.json("GET", path, COMPUTE)
        os_profile = model.get("properties", {}).get("osProfile", {})
        linux = "linuxConfiguration" in os_profile
        rules: dict[str, Any] = {"classificationsToInclude": classifications or []}
        if not linux:
            rules["kbNumbersToInclude"] = include or []
            rules["kbNumbersToExclude"] = exclude or []
            if exclude_reboot:
                rules["excludeKbsRequiringReboot"] = True
        elif include or exclude:
            raise UsageError(
                "KB ids apply to windows machines; linux ones select by classification"
            )
        parameters = {
            "maximumDuration": maximum_duration,
            "rebootSetting": reboot_setting,
            ("linuxParameters" if linux else "windowsParameters"): rules,
        }
        response = s.call("POST", path + "/installPatches", COMPUTE, parameters)
        return s.follow(response, f"installPatches {name}", no_wait=no_wait)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=patch_rows,
    )


@vm_app.command("history")
def vm_history(
    group: GroupOption,
    name: VmNameOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The machine's patch operations of the last 30 days, newest first, per patch."""

    def body(s: Session) -> Any:
        resource = _vm_path(s.subscription, group, name)
        answer = s.json("GET", f"/hotpatch/machines/{machine_path(resource)}/history")
        return answer.get("value", [])

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=history_rows,
    )


@vm_app.command("schedule-upgrade")
def vm_schedule_upgrade(
    group: GroupOption,
    name: VmNameOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Move an older stack to its hotpatch-capable successor in its next off-peak window."""

    def body(s: Session) -> Any:
        resource = _vm_path(s.subscription, group, name)
        return s.json("POST", f"/hotpatch/machines/{machine_path(resource)}/scheduleUpgrade")

    run(body, server=server, token=token, subscription=subscription, output=output, query=query)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def vm_rows(value: Any) -> Any:
    """A machine per row: where it is, its environment and how it is patched."""
    rows = []
    for vm in _listed(value):
        os_profile = dig(vm, "properties", "osProfile") or {}
        config = os_profile.get("windowsConfiguration") or os_profile.get("linuxConfiguration")
        settings = dig(config, "patchSettings") or {}
        rows.append(
            {
                "name": vm.get("name"),
                "location": vm.get("location"),
                "zone": ",".join(vm.get("zones") or []),
                "environment": (vm.get("tags") or {}).get(ENVIRONMENT_TAG, "Production"),
                "patchMode": settings.get("patchMode"),
                "hotpatching": settings.get("enableHotpatching"),
                "provisioningState": dig(vm, "properties", "provisioningState"),
            }
        )
    return rows


def group_rows(value: Any) -> Any:
    """A resource group per row."""
    return [
        {
            "name": g.get("name"),
            "location": g.get("location"),
            "provisioningState": dig(g, "properties", "provisioningState"),
        }
        for g in _listed(value)
    ]


def history_rows(value: Any) -> Any:
    """One row per patch of each operation (operations without patches get one row)."""
    rows = []
    for entry in _listed(value):
        base = {
            "startTime": entry.get("startTime"),
            "kind": entry.get("kind"),
            "status": entry.get("status"),
        }
        patches = dig(entry, "result", "patches") or []
        if not patches:
            rows.append({**base, "kbId": None, "patch": None, "installationState": None})
        for patch in patches:
            rows.append(
                {
                    **base,
                    "kbId": patch.get("kbId"),
                    "patch": patch.get("name"),
                    "installationState": patch.get("installationState"),
                }
            )
    return rows


def patch_rows(value: Any) -> Any:
    """An assessment's or installation's patches, one per row."""
    return [
        {
            "kbId": p.get("kbId"),
            "name": p.get("name"),
            "classifications": ",".join(p.get("classifications") or []),
            "state": p.get("installationState") or p.get("assessmentState"),
            "rebootBehavior": p.get("rebootBehavior"),
        }
        for p in ((value or {}).get("patches") or (value or {}).get("availablePatches") or [])
    ]


def status_rows(value: Any) -> Any:
    """``vm show --patch-status`` as one row."""
    hotpatch = value.get("hotpatch") or {}
    return {
        "name": value.get("name"),
        "enrolment": hotpatch.get("enrolment"),
        "baseline": hotpatch.get("baseline"),
        "activeHotpatch": hotpatch.get("activeHotpatch"),
        "transition": hotpatch.get("transition"),
        "running": hotpatch.get("running"),
        "assessment": dig(value, "patchStatus", "availablePatchSummary", "status"),
        "lastAssessed": dig(value, "patchStatus", "availablePatchSummary", "lastModifiedTime"),
        "lastInstall": dig(value, "patchStatus", "lastPatchInstallationSummary", "status"),
    }
