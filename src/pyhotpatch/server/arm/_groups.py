"""Resource groups (``Microsoft.Resources/resourceGroups``): the folders every resource lives in.

Stored as rows of ``arm_resources`` with type ``microsoft.resources/resourcegroups``, so
other modules find a group the same way they find any resource (``require_group``).
Deleting a group deletes what it holds, as in Azure, and revokes the credentials of its
machines first, so a deleted machine's agent is shut out even if the deletion is cut short.
Azure answers a group's DELETE with 202 and a ``Location`` to poll; here the deletion is
done when the answer leaves, so it is a 200, which azure-core's poller takes as finished
(a 202 would make the SDK wait a polling interval, 30 s by default, for nothing).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, delete, insert, select, update

from pyhotpatch.server._auth import Authenticator, Principal, TokenStore, require
from pyhotpatch.server._errors import ApiError
from pyhotpatch.server.arm._context import ArmContext
from pyhotpatch.server.arm._conventions import (
    api_version,
    check_preconditions,
    etag_of,
    page,
    resource_group_id,
    resource_name,
    subscription_id,
)
from pyhotpatch.server.arm._providers import REGIONS, normalize_location
from pyhotpatch.server.arm._subscriptions import require_subscription
from pyhotpatch.storage import serialized
from pyhotpatch.storage._tables import resources

GROUP_TYPE = "microsoft.resources/resourcegroups"
_VM_TYPE = "microsoft.compute/virtualmachines"
_TAG_FILTER = re.compile(
    r"^\s*tagName\s+eq\s+'(?P<name>(?:[^']|'')*)'"
    r"(?:\s+and\s+tagValue\s+eq\s+'(?P<value>(?:[^']|'')*)')?\s*$",
    re.IGNORECASE,
)
_MAX_TAGS = 50


def subscription_lock(subscription: str) -> str:
    """The named lock writers of a subscription's resources take (Compute's, shared).

    Creating a group, deleting one, and creating a resource in one must not interleave,
    or a resource could land in a group being deleted (on SQLite every write transaction
    is serialized anyway).
    """
    return f"compute:{subscription}"


def group_not_found(group: str) -> ApiError:
    """ARM's 404 for a resource group that does not exist."""
    return ApiError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")


def require_group(conn: Connection, subscription: str, group: str) -> dict[str, Any]:
    """The resource group's model as GET returns it, or ARM's 404 ``ResourceGroupNotFound``."""
    row = _find(conn, subscription.lower(), group)
    if row is None:
        raise group_not_found(group)
    body: dict[str, Any] = dict(row.body)
    return body


def _row_id(subscription: str, group: str) -> str:
    return resource_group_id(subscription, group).lower()


def _find(conn: Connection, subscription: str, group: str) -> Any:
    return conn.execute(
        select(resources.c.body, resources.c.etag, resources.c.name).where(
            resources.c.id == _row_id(subscription, group), resources.c.type == GROUP_TYPE
        )
    ).first()


def _tags(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiError(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: "
            "'tags' must be an object whose values are strings.",
            target="tags",
        )
    if len(value) > _MAX_TAGS:
        raise ApiError(
            400,
            "InvalidTagCount",
            f"The number of tags {len(value)} exceeds the limit of {_MAX_TAGS}.",
            target="tags",
        )
    for key, tag in value.items():
        if not key or len(key) > 512 or len(tag) > 256 or any(c in key for c in "<>%&\\?/"):
            raise ApiError(
                400,
                "InvalidTagNameCharacters" if key and len(key) <= 512 else "InvalidTagName",
                f"The tag name '{key}' or its value is invalid: names are 1 to 512 characters "
                "without '<', '>', '%', '&', '\\', '?' or '/', values at most 256 characters.",
                target="tags",
            )
    return dict(value)


def _managed_by(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ApiError(
        400,
        "InvalidRequestContent",
        "The request content was invalid and could not be deserialized: "
        "'managedBy' must be a string.",
        target="managedBy",
    )


def _location(value: Any) -> str:
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
            "LocationNotAvailableForResourceGroup",
            f"The provided location '{value}' is not available for resource group. "
            f"List of available regions is '{','.join(sorted(REGIONS))}'.",
            target="location",
        )
    return location


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: "
            "a JSON object is required.",
        )
    return body


def _model(
    subscription: str,
    group: str,
    location: str,
    tags: dict[str, str],
    managed_by: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": resource_group_id(subscription, group),
        "name": group,
        "type": "Microsoft.Resources/resourceGroups",
        "location": location,
        "tags": tags,
        "properties": {"provisioningState": "Succeeded"},
    }
    if managed_by:
        body["managedBy"] = managed_by
    return body


def _answer(body: dict[str, Any], etag: str, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status, headers={"ETag": etag})


def groups_router(ctx: ArmContext, auth: Authenticator) -> APIRouter:
    """Create, read, update, delete and list the resource groups of a subscription."""
    router = APIRouter(tags=["resource groups"])
    version = Depends(api_version("resources"))
    one = "/subscriptions/{subscription}/resourcegroups/{group}"

    def allowed(principal: Principal, action: str, subscription: str, verb: str) -> str:
        sub = subscription_id(subscription)
        require(principal, action, sub, f"Microsoft.Resources/subscriptions/resourceGroups/{verb}")
        return sub

    @router.put(one, dependencies=[version])
    def create_or_update(
        subscription: str,
        group: str,
        request: Request,
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Create a group (201) or replace its tags and ``managedBy`` (200); its location stays."""
        sub = allowed(principal, "write", subscription, "write")
        resource_name(group, "resource group")
        given = _object(body)
        location = _location(given.get("location"))
        tags = _tags(given.get("tags"))
        managed_by = _managed_by(given.get("managedBy"))
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            serialized(conn, subscription_lock(sub))
            row = _find(conn, sub, group)
            check_preconditions(request, row.etag if row else None)
            if row is None:
                model = _model(sub, group, location, tags, managed_by)
                etag = etag_of(model)
                conn.execute(
                    insert(resources).values(
                        id=_row_id(sub, group),
                        subscription=sub,
                        resource_group=group.lower(),
                        type=GROUP_TYPE,
                        name=group,
                        body=model,
                        etag=etag,
                        created=now,
                        updated=now,
                    )
                )
                return _answer(model, etag, 201)
            old = row.body["location"]
            if location != old:
                raise ApiError(
                    400,
                    "InvalidResourceGroupLocation",
                    f"Invalid resource group location '{given['location']}'. "
                    f"The Resource group already exists in location '{old}'.",
                    target="location",
                )
            model = _model(sub, row.name, old, tags, managed_by)
            etag = _store(conn, sub, group, model, now)
        return _answer(model, etag)

    @router.patch(one, dependencies=[version])
    def patch_group(
        subscription: str,
        group: str,
        request: Request,
        principal: Principal = Depends(auth),
        body: Any = Body(None),
    ) -> Any:
        """Change a group's tags or ``managedBy``; fields left out keep their value."""
        sub = allowed(principal, "write", subscription, "write")
        given = _object(body)
        now = ctx.clock()
        with ctx.engine.begin() as conn:
            require_subscription(conn, sub)
            serialized(conn, subscription_lock(sub))
            row = _find(conn, sub, group)
            if row is None:
                raise group_not_found(group)
            check_preconditions(request, row.etag)
            current = dict(row.body)
            if given.get("location") is not None:
                wanted = normalize_location(str(given["location"]))
                if wanted != current["location"]:
                    raise ApiError(
                        400,
                        "InvalidResourceGroupLocation",
                        f"Invalid resource group location '{given['location']}'. "
                        f"The Resource group already exists in location '{current['location']}'.",
                        target="location",
                    )
            tags = _tags(given["tags"]) if "tags" in given else current.get("tags", {})
            managed_by = (
                _managed_by(given["managedBy"])
                if "managedBy" in given
                else current.get("managedBy")
            )
            model = _model(sub, row.name, current["location"], tags, managed_by)
            etag = _store(conn, sub, group, model, now)
        return _answer(model, etag)

    @router.get(one, dependencies=[version])
    def get_group(subscription: str, group: str, principal: Principal = Depends(auth)) -> Any:
        """One resource group."""
        sub = allowed(principal, "read", subscription, "read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            row = _find(conn, sub, group)
        if row is None:
            raise group_not_found(group)
        return _answer(dict(row.body), row.etag)

    # out of the OpenAPI document: a HEAD answer has no body, so it cannot carry ARM's error
    # shape, which the fuzzing of every documented operation demands of each 4xx
    @router.head(one, dependencies=[version], include_in_schema=False)
    def group_exists(subscription: str, group: str, principal: Principal = Depends(auth)) -> Any:
        """204 if the group exists, else 404 (``check_existence``)."""
        sub = allowed(principal, "read", subscription, "read")
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            row = _find(conn, sub, group)
        return Response(status_code=204 if row is not None else 404)

    @router.delete(one, dependencies=[version])
    def delete_group(
        subscription: str, group: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """Delete a group and every resource in it; its machines' credentials are revoked first."""
        sub = allowed(principal, "write", subscription, "delete")
        store: TokenStore = request.app.state.tokens
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            row = _find(conn, sub, group)
            if row is None:
                raise group_not_found(group)
            check_preconditions(request, row.etag)
            machines = _machines(conn, sub, group)
        for machine in machines:
            store.revoke_machine(machine)
        with ctx.engine.begin() as conn:
            serialized(conn, subscription_lock(sub))
            late = _machines(conn, sub, group) - machines
            conn.execute(
                delete(resources).where(
                    resources.c.subscription == sub, resources.c.resource_group == group.lower()
                )
            )
        for machine in late:
            store.revoke_machine(machine)
        return Response(status_code=200)

    @router.get("/subscriptions/{subscription}/resourcegroups", dependencies=[version])
    def list_groups(
        subscription: str, request: Request, principal: Principal = Depends(auth)
    ) -> Any:
        """The subscription's groups by name, optionally those with a tag (``$filter``)."""
        sub = allowed(principal, "read", subscription, "read")
        wanted = _tag_filter(request.query_params.get("$filter"))
        with ctx.engine.connect() as conn:
            require_subscription(conn, sub)
            rows = conn.execute(
                select(resources.c.body)
                .where(resources.c.subscription == sub, resources.c.type == GROUP_TYPE)
                .order_by(resources.c.resource_group)
            ).all()
        found = [dict(r.body) for r in rows if _tagged(r.body, wanted)]
        return page(request, found)

    return router


def _store(conn: Connection, subscription: str, group: str, model: dict[str, Any], now: Any) -> str:
    etag = etag_of(model)
    conn.execute(
        update(resources)
        .where(resources.c.id == _row_id(subscription, group))
        .values(body=model, etag=etag, updated=now)
    )
    return etag


def _machines(conn: Connection, subscription: str, group: str) -> set[str]:
    rows = conn.execute(
        select(resources.c.id).where(
            resources.c.subscription == subscription,
            resources.c.resource_group == group.lower(),
            resources.c.type == _VM_TYPE,
        )
    ).all()
    return {r.id for r in rows}


def _tag_filter(text: str | None) -> tuple[str, str | None] | None:
    if text is None:
        return None
    match = _TAG_FILTER.match(text)
    if match is None:
        raise ApiError(
            400,
            "InvalidFilterInQueryString",
            f"Invalid $filter '{text}' specified in the query string: resource groups can be "
            "filtered by \"tagName eq 'name'\" and optionally \"and tagValue eq 'value'\".",
            target="$filter",
        )
    value = match.group("value")
    return match.group("name").replace("''", "'"), (
        value.replace("''", "'") if value is not None else None
    )


def _tagged(body: dict[str, Any], wanted: tuple[str, str | None] | None) -> bool:
    if wanted is None:
        return True
    name, value = wanted
    tags = {k.lower(): v for k, v in (body.get("tags") or {}).items()}
    if name.lower() not in tags:
        return False
    return value is None or tags[name.lower()] == value
