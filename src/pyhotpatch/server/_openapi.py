"""The OpenAPI document: every route that takes a JSON body says so.

Routes that validate their bodies themselves, to answer in ARM's words rather than
pydantic's, would otherwise appear body-less in ``/openapi.json``; clients, and the
fuzzer in the tests, then never learn that they take a JSON object.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_WITH_BODY = ("put", "post", "patch")
_RAW = {"/hotpatch/artifacts/{sha256}"}  # takes the artifact's bytes, not JSON


def document_bodies(app: FastAPI) -> None:
    """Make ``app.openapi()`` declare an optional JSON object body wherever none is declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if method not in _WITH_BODY or "requestBody" in operation:
                    continue
                media = (
                    {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
                    if path in _RAW
                    else {"application/json": {"schema": {"type": "object"}}}
                )
                operation["requestBody"] = {"required": False, "content": media}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
