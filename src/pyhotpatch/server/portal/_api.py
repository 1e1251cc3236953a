"""The portal's way to the control plane: its own REST API, called in-process.

Pages never read the database: every figure they show and every change they make goes
through the API with the signed-in user's bearer token, over an ASGI transport into the
same application. So a page can show and do exactly what the API lets that token do, and
a refusal reaches the page as the API worded it (status, ARM error code and message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from starlette.types import ASGIApp

#: the api-versions the portal speaks (current Azure clients send these)
COMPUTE = "2024-11-01"
RESOURCES = "2025-04-01"
FEATURES = "2021-07-01"
#: the most pages of a list the portal follows (``nextLink``) before it says it stopped
MAX_PAGES = 20
_BASE = "http://portal"


@dataclass(frozen=True)
class Problem:
    """A refusal or failure of the API, as a page shows it."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status}, {self.code})"


class ApiRefused(Exception):
    """The API refused a request a page cannot do without."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Reply:
    """An API answer: status, decoded JSON body (or None) and headers."""

    status: int
    body: Any
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        """Whether the API accepted the request (2xx)."""
        return 200 <= self.status < 300

    @property
    def problem(self) -> Problem | None:
        """What went wrong, from the ARM error body; None on success."""
        if self.ok:
            return None
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            return Problem(
                self.status, str(error.get("code", "Error")), str(error.get("message", ""))
            )
        return Problem(self.status, "Error", f"The API answered {self.status}.")

    def json(self) -> Any:
        """The body of a successful answer; ``ApiRefused`` otherwise."""
        problem = self.problem
        if problem is not None:
            raise ApiRefused(problem)
        return self.body


def vm_path(subscription: str, group: str, name: str) -> str:
    """The ARM path of a virtual machine."""
    return (
        f"/subscriptions/{quote(subscription, safe='')}/resourceGroups/{quote(group, safe='')}"
        f"/providers/Microsoft.Compute/virtualMachines/{quote(name, safe='')}"
    )


class Api:
    """The control plane's API for one signed-in token, served in-process by ``app``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=_BASE,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request; the answer whatever its status."""
        answer = await self._client.request(method, path, params=params, json=json, headers=headers)
        try:
            body = answer.json() if answer.content else None
        except ValueError:
            body = None
        return Reply(answer.status_code, body, answer.headers)

    async def get(self, path: str, **params: Any) -> Reply:
        """GET ``path`` with query ``params``."""
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, body: Any = None, **params: Any) -> Reply:
        """POST ``body`` (JSON, if any) to ``path``."""
        return await self.call("POST", path, params=params or None, json=body)

    async def get_all(self, path: str, **params: Any) -> tuple[list[Any], bool]:
        """Every item of an ARM list, following ``nextLink``; (items, whether it was cut short).

        ``ApiRefused`` if a page is refused.
        """
        reply = await self.get(path, **params)
        items: list[Any] = []
        for _ in range(MAX_PAGES):
            body = reply.json()
            items.extend(body.get("value", []))
            link = body.get("nextLink")
            if not link:
                return items, False
            reply = await self.call("GET", str(link))
        return items, True
