"""The HTTP client for a control plane: bearer token, trusted CA, ARM error bodies.

Every CLI command and the node agent talk to a server through ``ControlPlane``, so
they all find the token and CA bundle the same way (arguments, then
``HOTPATCH_TOKEN`` and ``HOTPATCH_CA_BUNDLE``) and report a refusal as the server's
code and message.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from pyhotpatch.errors import HotpatchError


class ApiCallError(HotpatchError):
    """The control plane answered with an error; ``code`` and ``details`` are its own."""

    def __init__(self, status: int, code: str, message: str, details: list[str]) -> None:
        self.status = status
        self.code = code
        self.details = details
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed: no answer, throttled or a server fault."""
        return self.status in {0, 429} or self.status >= 500


class ControlPlane:
    """A connection to one control plane as one caller."""

    def __init__(
        self, server: str, token: str | None, ca: Path | None = None, timeout: float = 60.0
    ) -> None:
        import httpx

        token = token or os.environ.get("HOTPATCH_TOKEN") or os.environ.get("HOTPATCH_ADMIN_TOKEN")
        if not token:
            raise HotpatchError(
                "the control plane needs a token: pass --token or set HOTPATCH_TOKEN"
            )
        bundle = ca or (
            Path(os.environ["HOTPATCH_CA_BUNDLE"]) if os.environ.get("HOTPATCH_CA_BUNDLE") else None
        )
        self._httpx = httpx
        self.client = httpx.Client(
            base_url=server.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(bundle)) if bundle else True,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The server's answer; an ``ApiCallError`` for a refusal or an unreachable server."""
        try:
            response = self.client.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise ApiCallError(
                0, "ConnectionFailed", f"cannot reach {self.client.base_url}: {exc}", []
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    def close(self) -> None:
        """Let go of the connection."""
        self.client.close()


def _error(response: Any) -> ApiCallError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details = [str(d.get("message", d)) for d in error.get("details") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, details = f"HTTP{response.status_code}", response.text[:500], []
    return ApiCallError(response.status_code, code, message, details)
