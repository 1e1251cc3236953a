"""Feature and resource-provider registration states, moving on with the clock.

Azure registers a preview feature or a provider asynchronously: ``Registering`` becomes
``Registered`` some minutes later. Here the row records the state and when it is due to
move on; reading resolves it against the injected clock, so a restarted server, or one
running on simulated time, gives the same answer without a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from pyhotpatch.server._errors import ApiError
from pyhotpatch.storage._tables import features, providers

#: the seed's hotpatch preview features, all under Microsoft.Compute
PREVIEW_FEATURES = (
    "InGuestHotPatchVMPreview",
    "InGuestAutoPatchVMPreview",
    "InGuestPatchVMPreview",
)
#: the namespaces this server knows; registering another is refused as ARM refuses unknown ones
KNOWN_PROVIDERS = ("Microsoft.Compute", "Microsoft.Features", "Microsoft.Resources")
_NEXT = {"Registering": "Registered", "Unregistering": "Unregistered"}


@dataclass(frozen=True)
class Registration:
    """A feature's or provider's state as of now."""

    namespace: str
    name: str | None
    state: str


def _settle(state: str, due: datetime | None, now: datetime) -> str:
    if state in _NEXT and due is not None and due <= now:
        return _NEXT[state]
    return state


def feature_state(
    conn: Connection, subscription: str, namespace: str, name: str, now: datetime
) -> str:
    """``NotRegistered`` until asked; then ``Registering`` → ``Registered`` (and back on unregister)."""
    row = conn.execute(
        select(features.c.state, features.c.due).where(
            features.c.subscription == subscription,
            features.c.namespace == namespace.lower(),
            features.c.name == name.lower(),
        )
    ).first()
    return "NotRegistered" if row is None else _settle(row.state, row.due, now)


def set_feature(
    conn: Connection,
    subscription: str,
    namespace: str,
    name: str,
    state: str,
    due: datetime | None,
    now: datetime,
) -> None:
    """Record a feature's new state and when it moves on."""
    where = (
        features.c.subscription == subscription,
        features.c.namespace == namespace.lower(),
        features.c.name == name.lower(),
    )
    values = {"state": state, "due": due, "changed": now}
    if conn.execute(select(features.c.state).where(*where)).first() is None:
        conn.execute(
            insert(features).values(
                subscription=subscription, namespace=namespace.lower(), name=name.lower(), **values
            )
        )
    else:
        conn.execute(update(features).where(*where).values(**values))


def provider_state(conn: Connection, subscription: str, namespace: str, now: datetime) -> str:
    """``NotRegistered`` until registered; then ``Registering`` → ``Registered``."""
    row = conn.execute(
        select(providers.c.state, providers.c.due).where(
            providers.c.subscription == subscription, providers.c.namespace == namespace.lower()
        )
    ).first()
    return "NotRegistered" if row is None else _settle(row.state, row.due, now)


def set_provider(
    conn: Connection,
    subscription: str,
    namespace: str,
    state: str,
    due: datetime | None,
    now: datetime,
) -> None:
    """Record a provider's new state and when it moves on."""
    where = (providers.c.subscription == subscription, providers.c.namespace == namespace.lower())
    values = {"state": state, "due": due, "changed": now}
    if conn.execute(select(providers.c.state).where(*where)).first() is None:
        conn.execute(
            insert(providers).values(
                subscription=subscription, namespace=namespace.lower(), **values
            )
        )
    else:
        conn.execute(update(providers).where(*where).values(**values))


def require_provider(conn: Connection, subscription: str, namespace: str, now: datetime) -> None:
    """Refuse with ARM's 409 unless the subscription is registered for ``namespace``.

    The Azure SDK parses this message (the namespace between quotes) and registers the
    provider by itself, so the wording must stay exactly Azure's.
    """
    if namespace.lower() in ("microsoft.resources", "microsoft.features"):
        return  # registration-free, as in Azure
    if provider_state(conn, subscription, namespace, now) != "Registered":
        raise ApiError(
            409,
            "MissingSubscriptionRegistration",
            f"The subscription is not registered to use namespace '{namespace}'. "
            "See https://aka.ms/rps-not-found for how to register subscriptions.",
        )
