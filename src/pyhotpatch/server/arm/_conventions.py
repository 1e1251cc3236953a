"""ARM's conventions, in one place: api-versions, ids, errors, paging, ETags, absolute URLs.

Everything here follows Azure's resource-provider contract (the RPC documents of
``Azure/azure-resource-manager-rpc``) closely enough that azure-core's pipeline, whose
policies parse error codes, follow ``nextLink`` and poll long-running operations, cannot
tell the difference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import Query, Request

from pyhotpatch.server._errors import ApiError

GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
NAME_RE = re.compile(r"^[A-Za-z0-9_().-]{1,90}$")

#: api-versions accepted per family: what current and recent clients send
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "features": ("2015-12-01", "2021-07-01"),
    "resources": (
        "2016-02-01", "2016-09-01", "2018-05-01", "2019-05-01", "2019-07-01", "2019-08-01",
        "2019-10-01", "2020-06-01", "2020-10-01", "2021-01-01", "2021-04-01", "2022-09-01",
        "2023-07-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-01-01", "2025-03-01",
        "2025-04-01",
    ),
    "compute": (
        "2019-12-01", "2020-06-01", "2020-12-01", "2021-03-01", "2021-04-01", "2021-07-01",
        "2021-11-01", "2022-03-01", "2022-08-01", "2022-11-01", "2023-03-01", "2023-07-01",
        "2023-09-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01", "2025-11-01",
        "2026-04-01",
    ),
}  # fmt: skip


def api_version(family: str, *, resource_type: str | None = None) -> Callable[..., str]:
    """A dependency that requires a supported ``api-version`` query parameter.

    Paths Microsoft.Resources serves answer ``InvalidApiVersionParameter``; resource
    providers answer ``NoRegisteredProviderFound``, as ARM does.
    """
    supported = API_VERSIONS[family]

    def check(
        version: str | None = Query(
            None,
            alias="api-version",
            description=f"One of {', '.join(supported)}.",
            examples=[supported[-1]],
        ),
    ) -> str:
        if not version:
            raise ApiError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in supported:
            listed = ", ".join(supported)
            if resource_type is None:
                raise ApiError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are '{listed}'.",
                )
            raise ApiError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '' and API version '{version}' "
                f"for type '{resource_type}'. The supported api-versions are '{listed}'.",
            )
        return version

    return check


def subscription_id(value: str) -> str:
    """A subscription id in the form ARM accepts (a GUID), lowercased."""
    if not GUID_RE.match(value):
        raise ApiError(
            400,
            "InvalidSubscriptionId",
            f"The provided subscription identifier '{value}' is malformed or invalid.",
        )
    return value.lower()


def resource_name(value: str, kind: str) -> str:
    """A resource or resource-group name ARM would accept."""
    if not NAME_RE.match(value) or value.endswith("."):
        raise ApiError(
            400,
            "InvalidResourceName",
            f"The resource name '{value}' is invalid. It can contain only alphanumeric characters, "
            f"underscores, parentheses, hyphens and periods, and be at most 90 characters long ({kind}).",
        )
    return value


def resource_group_id(subscription: str, group: str) -> str:
    """The canonical id of a resource group (ARM ids keep the creator's spelling of names)."""
    return f"/subscriptions/{subscription}/resourceGroups/{group}"


def request_ids(request: Request) -> dict[str, str]:
    """The ``x-ms-*`` identifiers to answer with: a new request id, the correlation id echoed."""
    ids = {"x-ms-request-id": str(uuid.uuid4())}
    ids["x-ms-correlation-request-id"] = request.headers.get(
        "x-ms-correlation-request-id", ids["x-ms-request-id"]
    )
    client = request.headers.get("x-ms-client-request-id")
    if client and request.headers.get("x-ms-return-client-request-id", "").lower() == "true":
        ids["x-ms-client-request-id"] = client
    return ids


def absolute(request: Request, path: str, **query: str) -> str:
    """An absolute URL on this server (ARM's ``Location`` and ``nextLink`` are absolute)."""
    base = str(request.base_url).rstrip("/")
    if query:
        from urllib.parse import urlencode

        return f"{base}{path}?{urlencode(query)}"
    return f"{base}{path}"


def page(request: Request, items: Sequence[Any], *, size: int = 100) -> dict[str, Any]:
    """One page of a list, ``{"value": [...], "nextLink": ...}``, with an opaque skip token."""
    token = request.query_params.get("$skipToken") or request.query_params.get("$skiptoken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "InvalidSkipToken", "The $skipToken is not valid.") from None
    top = request.query_params.get("$top")
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= 1000:
            raise ApiError(
                400,
                "InvalidParameter",
                "$top must be a whole number from 1 to 1000.",
                target="$top",
            )
        size = int(top)
    chunk = list(items[start : start + size])
    body: dict[str, Any] = {"value": chunk}
    if start + size < len(items):
        query = {k: v for k, v in request.query_params.items() if k.lower() != "$skiptoken"}
        query["$skipToken"] = (
            base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        )
        body["nextLink"] = absolute(request, request.url.path, **query)
    return body


def etag_of(body: Any) -> str:
    """A strong ETag for a stored model: quoted, derived from its content."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def check_preconditions(request: Request, current: str | None) -> None:
    """Honour ``If-Match`` and ``If-None-Match`` the way ARM does (412 when they fail)."""
    match = request.headers.get("if-match")
    none_match = request.headers.get("if-none-match")
    if match is not None:
        wanted = _etags(match)
        if current is None or ("*" not in wanted and current not in wanted):
            raise ApiError(
                412,
                "PreconditionFailed",
                "The condition specified using HTTP conditional header(s) is not met.",
            )
    if none_match is not None and current is not None:
        unwanted = _etags(none_match)
        if "*" in unwanted or current in unwanted:
            raise ApiError(
                412,
                "PreconditionFailed",
                "The condition specified using HTTP conditional header(s) is not met.",
            )


def _etags(header: str) -> set[str]:
    values = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag and tag != "*" and not tag.startswith('"'):
            tag = f'"{tag}"'
        values.add(tag)
    return values


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), which ARM's PATCH follows."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def lower_all(values: Iterable[str]) -> set[str]:
    """The values, lowercased: ARM compares names case-insensitively."""
    return {v.lower() for v in values}
