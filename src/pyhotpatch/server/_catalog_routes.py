"""``/hotpatch/…``: products, releases, artifacts, the calendar and catalog settings."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from pyhotpatch.catalog import Catalog, Kind, PublishRequest, render_svg
from pyhotpatch.catalog._model import SHA256_RE
from pyhotpatch.server._auth import Authenticator, Principal, require_admin
from pyhotpatch.server._errors import ApiError

#: the largest artifact the API accepts (a baseline wheel of a big service stack fits)
MAX_ARTIFACT = 512 * 1024 * 1024


def catalog_router(catalog: Catalog, auth: Authenticator) -> APIRouter:
    """The catalog's part of the API: any caller reads it, administrators publish."""
    router = APIRouter(prefix="/hotpatch", tags=["catalog"])

    def admin(principal: Principal = Depends(auth)) -> Principal:
        require_admin(principal, "Hotpatch/releases/write")
        return principal

    def reader(principal: Principal = Depends(auth)) -> Principal:
        if principal.role == "Agent":
            require_admin(principal, "Hotpatch/releases/read")
        return principal

    @router.get("/products", dependencies=[Depends(reader)])
    def list_products() -> Any:
        """Every product and the images that run it."""
        return {"value": [p.to_json() for p in catalog.products()]}

    @router.get("/releases", dependencies=[Depends(reader)])
    def list_releases(
        product: str | None = None,
        kind: str | None = None,
        year: int | None = Query(None, ge=1970, le=9999),
    ) -> Any:
        """Published releases, oldest first, optionally filtered."""
        chosen = _kind(kind) if kind else None
        if product is not None:
            catalog.product(product)
        found = catalog.releases(product=product, kind=chosen, year=year)
        return {"value": [r.to_json() for r in found]}

    @router.get("/releases/{kb}", dependencies=[Depends(reader)])
    def show_release(kb: str) -> Any:
        """One release with its artifacts."""
        return catalog.release(kb).to_json()

    @router.post("/releases", status_code=201, dependencies=[Depends(admin)])
    async def publish(request: Request) -> Any:
        """Publish a release whose artifacts were uploaded; 409 lists every broken rule."""
        body = await _json(request)
        publish_request = PublishRequest.from_json(body)
        release = await run_in_threadpool(catalog.publish, publish_request)
        return release.to_json()

    @router.put("/artifacts/{sha256}", status_code=201, dependencies=[Depends(admin)])
    async def upload(sha256: str, request: Request) -> Any:
        """Store an artifact under its digest; the body must hash to ``sha256``."""
        if not SHA256_RE.match(sha256):
            raise ApiError(400, "InvalidParameter", f"{sha256!r} is not a sha256 digest")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_ARTIFACT:
            raise ApiError(
                413, "RequestEntityTooLarge", f"artifacts are limited to {MAX_ARTIFACT} bytes"
            )
        if catalog.blobs.has(sha256):
            return JSONResponse(
                {"sha256": sha256, "size": catalog.blobs.path(sha256).stat().st_size}, 200
            )
        spool = catalog.blobs.root / "tmp"
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=spool, prefix="incoming-")
        try:
            size = 0
            with os.fdopen(fd, "wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_ARTIFACT:
                        raise ApiError(
                            413,
                            "RequestEntityTooLarge",
                            f"artifacts are limited to {MAX_ARTIFACT} bytes",
                        )
                    handle.write(chunk)
            digest, size = await run_in_threadpool(catalog.blobs.put_file, tmp, expect=sha256)
        finally:
            os.unlink(tmp)
        return {"sha256": digest, "size": size}

    @router.get("/artifacts/{sha256}", dependencies=[Depends(reader)])
    def download(sha256: str) -> Any:
        """An artifact's bytes, for publishers that build on a baseline's wheels."""
        if not SHA256_RE.match(sha256) or not catalog.blobs.has(sha256):
            raise ApiError(404, "NotFound", f"no artifact with sha256 {sha256}")
        return FileResponse(catalog.blobs.path(sha256), media_type="application/octet-stream")

    @router.get("/calendar", dependencies=[Depends(reader)])
    def show_calendar(
        year: int = Query(..., ge=1970, le=9999),
        product: str | None = None,
        format: str = Query("json", pattern="^(json|svg)$"),
    ) -> Any:
        """The year's plan and releases: JSON, one entry per month, or an SVG picture."""
        entries = catalog.calendar(year, product=product)
        if format == "svg":
            title = f"Hotpatch release calendar {year}" + (f" · {product}" if product else "")
            return Response(render_svg(year, entries, title=title), media_type="image/svg+xml")
        return {
            "year": year,
            "baselineMonths": list(catalog.baseline_months()),
            "value": [e.to_json() for e in entries],
        }

    @router.get("/settings", dependencies=[Depends(reader)])
    def show_settings() -> Any:
        """The catalog's settings."""
        return {"baselineMonths": list(catalog.baseline_months())}

    @router.patch("/settings", dependencies=[Depends(admin)])
    async def change_settings(request: Request) -> Any:
        """Change the catalog's settings (``baselineMonths``)."""
        body = await _json(request)
        if not isinstance(body, dict) or set(body) - {"baselineMonths"}:
            raise ApiError(400, "InvalidRequestContent", "settings take only baselineMonths")
        months = body.get("baselineMonths")
        if months is not None:
            if not isinstance(months, list):
                raise ApiError(400, "InvalidParameter", "baselineMonths must be a list of months")
            await run_in_threadpool(catalog.set_baseline_months, months)
        return {"baselineMonths": list(catalog.baseline_months())}

    return router


def _kind(value: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise ApiError(
            400, "InvalidParameter", f"kind must be one of {', '.join(k.value for k in Kind)}"
        ) from None


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ApiError(400, "InvalidRequestContent", "the request body is not valid JSON") from None
