"""Who may call the control plane: bearer tokens with roles, scoped to subscriptions or machines.

Roles follow Azure's built-in ones: ``Reader`` reads a subscription, ``Contributor`` also
changes it, ``Owner`` also manages its tokens. ``Administrator`` reaches everything, the
catalog's publishing included; ``HOTPATCH_ADMIN_TOKEN`` (or a token generated on first
start) is the first one. ``Agent`` credentials reach one machine's work and nothing else.
Tokens are random, shown once, and stored only as sha256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, insert, select, update

from pyhotpatch.clock import Clock
from pyhotpatch.server._errors import ApiError
from pyhotpatch.storage._tables import tokens

TOKEN_FILE = "admin-token"
ROLES = ("Reader", "Contributor", "Owner", "Administrator", "Agent")
_RANK = {"Reader": 1, "Contributor": 2, "Owner": 3}
#: what each action needs, at least
ACTIONS = {"read": 1, "write": 2, "own": 3}
#: how long a looked-up token is trusted without reading the database again
CACHE_SECONDS = 60.0
#: the most tokens remembered at once (a fleet's agents and its users)
CACHE_SIZE = 1_000_000


def admin_token(data_dir: Path) -> str:
    """The first administrator's token: the environment's, else the one kept in ``data_dir``."""
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


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for."""

    id: str
    name: str
    role: str
    subscription: str | None = None
    machine: str | None = None

    def allows(self, action: str, subscription: str) -> bool:
        """Whether this caller may ``read``, ``write`` or ``own`` (manage tokens of) a subscription."""
        if self.role == "Administrator":
            return True
        if self.role == "Agent" or self.subscription != subscription.lower():
            return False
        return _RANK.get(self.role, 0) >= ACTIONS[action]

    def to_json(self) -> dict[str, Any]:
        """The API's representation (never the secret)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "subscription": self.subscription,
            "machine": self.machine,
        }


def digest(secret: str) -> str:
    """How a token is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Tokens in the database, looked up by digest, and remembered for ``CACHE_SECONDS``.

    Agents authenticate every heartbeat, so a lookup that reads the database each time would
    cost a query per heartbeat; the cache keeps each token's answer (valid or not) for a
    minute. A revocation clears the cache of the process that made it, so there it takes
    effect at once; other server processes (``hotpatch server --workers N``, or several
    hosts on one database) see it when their cached answer expires, within
    ``CACHE_SECONDS``. An expiry time is checked on every use, cached or not.
    """

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal | None, datetime | None]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        role: str,
        *,
        subscription: str | None = None,
        machine: str | None = None,
        expires: datetime | None = None,
    ) -> tuple[Principal, str]:
        """A new token; the secret is returned once and never stored."""
        if role not in ROLES:
            raise ApiError(
                400, "InvalidParameter", f"role must be one of {', '.join(ROLES)}", target="role"
            )
        if role in _RANK and subscription is None:
            raise ApiError(
                400,
                "InvalidParameter",
                f"a {role} token needs a subscription",
                target="subscription",
            )
        if role == "Agent" and machine is None:
            raise ApiError(
                400, "InvalidParameter", "an Agent token needs a machine", target="machine"
            )
        secret = "hp_" + secrets.token_urlsafe(32)
        principal = Principal(str(uuid.uuid4()), name, role, subscription, machine)
        with self.engine.begin() as conn:
            conn.execute(
                insert(tokens).values(
                    id=principal.id,
                    name=name,
                    digest=digest(secret),
                    role=role,
                    subscription=subscription,
                    machine=machine.lower() if machine else None,
                    created=self.clock(),
                    expires=expires,
                    revoked=None,
                )
            )
        return principal, secret

    def list(self, subscription: str | None = None) -> list[Principal]:
        """Live tokens, optionally of one subscription."""
        query = select(tokens).where(tokens.c.revoked.is_(None)).order_by(tokens.c.created)
        if subscription is not None:
            query = query.where(tokens.c.subscription == subscription)
        with self.engine.connect() as conn:
            return [_principal(row) for row in conn.execute(query).mappings()]

    def get(self, token_id: str) -> Principal | None:
        """One live token by id."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(tokens).where(tokens.c.id == token_id, tokens.c.revoked.is_(None))
                )
                .mappings()
                .first()
            )
        return _principal(row) if row else None

    def revoke(self, token_id: str) -> bool:
        """Revoke a token at once; False if there was no such live token."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(tokens)
                .where(tokens.c.id == token_id, tokens.c.revoked.is_(None))
                .values(revoked=self.clock())
            )
        with self._lock:
            self._cache.clear()
        return done.rowcount > 0

    def revoke_machine(self, machine: str) -> None:
        """Revoke every credential of a machine (when its resource is deleted)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(tokens)
                .where(tokens.c.machine == machine.lower(), tokens.c.revoked.is_(None))
                .values(revoked=self.clock())
            )
        with self._lock:
            self._cache.clear()

    def cached(self, secret: str) -> tuple[bool, Principal | None]:
        """(True, what ``lookup`` would answer) if the cache knows; (False, None) if not.

        Never touches the database, so it may run on the event loop.
        """
        key = digest(secret)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached[0] <= time.monotonic():
            return False, None
        _, found, expires = cached
        if found is not None and expires is not None and expires <= self.clock():
            return True, None
        return True, found

    def lookup(self, secret: str) -> Principal | None:
        """The live, unexpired token with this secret."""
        known, found = self.cached(secret)
        if known:
            return found
        key = digest(secret)
        now = time.monotonic()
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.digest == key)).mappings().first()
        found = None
        expires = None
        if (
            row is not None
            and row["revoked"] is None
            and (row["expires"] is None or row["expires"] > self.clock())
        ):
            found = _principal(row)
            expires = row["expires"]
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._forget_expired(now)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (now + CACHE_SECONDS, found, expires)
        return found

    def _forget_expired(self, now: float) -> None:
        for key in [key for key, entry in self._cache.items() if entry[0] <= now]:
            del self._cache[key]


def _principal(row: Any) -> Principal:
    return Principal(row["id"], row["name"], row["role"], row["subscription"], row["machine"])


class Authenticator:
    """A FastAPI dependency: the request's ``Principal``, or 401 in ARM's words."""

    def __init__(self, store: TokenStore, admin: str) -> None:
        if len(admin) < 16:
            raise ValueError("the administrator token must be at least 16 characters")
        self.store = store
        self._admin = admin.encode()

    def __call__(self, request: Request) -> Principal:
        """Who is calling."""
        value = self._bearer(request)
        if hmac.compare_digest(value.encode(), self._admin):
            return self._found(
                request, Principal("administrator", "administrator", "Administrator")
            )
        return self._found(request, self.store.lookup(value))

    async def resolve(self, request: Request) -> Principal:
        """Who is calling, for a route outside FastAPI's dependencies (the same answers).

        A cached token is answered on the event loop; only a database lookup takes a thread.
        """
        value = self._bearer(request)
        if hmac.compare_digest(value.encode(), self._admin):
            return self._found(
                request, Principal("administrator", "administrator", "Administrator")
            )
        known, found = self.store.cached(value)
        if not known:
            found = await run_in_threadpool(self.store.lookup, value)
        return self._found(request, found)

    @staticmethod
    def _bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise ApiError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or not a Bearer token.",
            )
        return value

    @staticmethod
    def _found(request: Request, principal: Principal | None) -> Principal:
        if principal is None:
            raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        request.state.principal = principal
        return principal


def forbid(principal: Principal, action: str, scope: str) -> ApiError:
    """ARM's refusal for a caller without the right on ``scope``."""
    return ApiError(
        403,
        "AuthorizationFailed",
        f"The client '{principal.name}' with object id '{principal.id}' does not have authorization "
        f"to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials.",
    )


def require(principal: Principal, action: str, subscription: str, operation: str) -> None:
    """Refuse unless ``principal`` may perform ``action`` on ``subscription``."""
    if not principal.allows(action, subscription):
        raise forbid(principal, operation, f"/subscriptions/{subscription}")


def require_admin(principal: Principal, operation: str) -> None:
    """Refuse unless ``principal`` is an administrator."""
    if principal.role != "Administrator":
        raise forbid(principal, operation, "/")
