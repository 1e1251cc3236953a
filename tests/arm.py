"""A real control plane over HTTPS for ARM tests, with tokens and Azure SDK client settings."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pyhotpatch.storage import default_url
from servers import TOKEN, ServerProcess

SUB = "11111111-2222-3333-4444-555555555555"
OTHER_SUB = "99999999-8888-7777-6666-555555555555"


class StaticToken:
    """An azure-core credential that hands out one bearer token (far from expiring)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 86400)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self.token, int(time.time()) + 86400)


@dataclass
class Arm:
    """A running ``hotpatch server --dev-tls`` and helpers to call it."""

    server: ServerProcess
    ca: Path
    #: the server's database
    db_url: str
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def http(self, token: str = TOKEN) -> httpx.Client:
        """An HTTP client that trusts the server's development CA."""
        return httpx.Client(
            base_url=self.url,
            verify=ssl.create_default_context(cafile=str(self.ca)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def token(self, role: str, subscription: str = SUB, machine: str | None = None) -> str:
        """A token for ``role`` on ``subscription`` (made once, then reused)."""
        key = (role, f"{subscription}/{machine}")
        if key not in self.tokens:
            body: dict[str, Any] = {
                "role": role,
                "subscription": subscription,
                "name": f"test {role}",
            }
            if machine is not None:
                body["machine"] = machine
            with self.http() as client:
                reply = client.post("/hotpatch/tokens", json=body)
            assert reply.status_code == 201, reply.text
            self.tokens[key] = reply.json()["token"]
        return self.tokens[key]

    def sdk(self, token: str | None = None) -> dict[str, Any]:
        """Keyword arguments that point an azure-mgmt client at this server."""
        return {
            "credential": StaticToken(token or self.token("Owner")),
            "base_url": self.url,
            "credential_scopes": [f"{self.url}/.default"],
            "connection_verify": str(self.ca),
            "polling_interval": 0.2,
        }


def start_arm(data_dir: Path, *args: str) -> Arm:
    """``hotpatch server --dev-tls`` with a one-second registration delay, and its CA."""
    server = ServerProcess(data_dir, "--dev-tls", "--feature-delay", "1", *args)
    db_url = args[args.index("--db") + 1] if "--db" in args else default_url(data_dir)
    return Arm(server, data_dir / "tls" / "ca.pem", db_url)
