"""Bearer tokens: who may call the control plane.

For now one administrator token, taken from ``HOTPATCH_ADMIN_TOKEN`` or, when
that is unset, generated on first start and kept 0600 in the data directory, so a
fresh control plane is never open to anyone who can reach its port.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import Request

from pyhotpatch.server._errors import ApiError

TOKEN_FILE = "admin-token"


def admin_token(data_dir: Path) -> str:
    """The administrator token: the environment's, else the one kept in ``data_dir``."""
    explicit = os.environ.get("HOTPATCH_ADMIN_TOKEN")
    if explicit:
        return explicit
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


class BearerAuth:
    """A FastAPI dependency that admits requests carrying the administrator token."""

    def __init__(self, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the administrator token must be at least 16 characters")
        self._token = token.encode()

    def __call__(self, request: Request) -> None:
        """Refuse the request unless it carries the token."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise ApiError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or not a Bearer token.",
            )
        if not hmac.compare_digest(value.strip().encode(), self._token):
            raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid.")
