"""Errors in Azure Resource Manager's shape: ``{"error": {"code", "message", "details"?}}``.

Every failure the API reports, whether raised by the catalog, by request
validation or by authentication, leaves through here, so clients (and the Azure
SDK later) parse one shape with a stable ``code``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyhotpatch.errors import CatalogError, HotpatchError, NotFound, PublishRefused


class ApiError(Exception):
    """An error the API answers with ``status`` and an ARM error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        target: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.target = target


def error_body(
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    target: str | None = None,
) -> Any:
    """The ARM error document."""
    error: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    if details:
        error["details"] = details
    return {"error": error}


def _respond(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(
        error_body(error.code, error.message, error.details, error.target),
        error.status,
        headers=headers,
    )


def from_hotpatch_error(exc: HotpatchError) -> ApiError:
    """The API error a library error becomes."""
    if isinstance(exc, PublishRefused):
        details = [{"code": "PublishRuleViolated", "message": reason} for reason in exc.reasons]
        return ApiError(409, "PublishRefused", str(exc), details)
    if isinstance(exc, NotFound):
        return ApiError(404, "NotFound", str(exc))
    if isinstance(exc, CatalogError):
        return ApiError(400, "BadRequest", str(exc))
    return ApiError(500, "InternalServerError", f"{type(exc).__name__}: {exc}")


def install(app: FastAPI) -> None:
    """Route every kind of failure to an ARM error body."""

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return _respond(exc)

    @app.exception_handler(HotpatchError)
    async def _hotpatch(_request: Request, exc: HotpatchError) -> JSONResponse:
        return _respond(from_hotpatch_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "code": "InvalidParameter",
                "target": ".".join(str(p) for p in e.get("loc", ())),
                "message": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        message = "; ".join(f"{p['target']}: {p['message']}" for p in problems)
        return _respond(ApiError(400, "InvalidRequestContent", message, problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}
        return _respond(
            ApiError(exc.status_code, codes.get(exc.status_code, "Error"), str(exc.detail))
        )
