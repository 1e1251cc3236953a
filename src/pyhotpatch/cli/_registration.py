"""``hotpatch feature`` and ``hotpatch provider``: the seed's registration steps, one to one.

``hotpatch feature register --namespace Microsoft.Compute --name InGuestHotPatchVMPreview``
and ``hotpatch provider register --namespace Microsoft.Compute [--wait]`` do what
``az feature register`` and ``az provider register`` do, against the same ARM routes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from pyhotpatch.cli._session import (
    FEATURES,
    RESOURCES,
    OutputOption,
    QueryOption,
    ServerOption,
    Session,
    SubscriptionOption,
    TokenOption,
    dig,
    run,
    spinner,
)
from pyhotpatch.errors import HotpatchError

feature_app = typer.Typer(
    name="feature", help="Register preview features (az feature).", no_args_is_help=True
)
provider_app = typer.Typer(
    name="provider", help="Register resource providers (az provider).", no_args_is_help=True
)

NamespaceOption = Annotated[
    str, typer.Option("--namespace", help="Resource provider namespace, e.g. Microsoft.Compute.")
]
NameOption = Annotated[str, typer.Option("--name", "-n", help="Feature name.")]
#: how long ``provider register --wait`` waits for ``Registered``
WAIT_SECONDS = 600.0


def _feature_path(sub: str, namespace: str, name: str | None = None) -> str:
    base = f"/subscriptions/{sub}/providers/Microsoft.Features/providers/{namespace}/features"
    return base if name is None else f"{base}/{name}"


@feature_app.command("register")
def feature_register(
    namespace: NamespaceOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Register a preview feature; it moves from Registering to Registered by itself."""

    def body(s: Session) -> Any:
        path = _feature_path(s.subscription, namespace, name) + "/register"
        return s.json("POST", path, FEATURES)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_feature_rows,
    )


@feature_app.command("unregister")
def feature_unregister(
    namespace: NamespaceOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Unregister a preview feature."""

    def body(s: Session) -> Any:
        path = _feature_path(s.subscription, namespace, name) + "/unregister"
        return s.json("POST", path, FEATURES)

    run(body, server=server, token=token, subscription=subscription, output=output, query=query)


@feature_app.command("show")
def feature_show(
    namespace: NamespaceOption,
    name: NameOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """A preview feature and its registration state."""

    def body(s: Session) -> Any:
        return s.json("GET", _feature_path(s.subscription, namespace, name), FEATURES)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_feature_rows,
    )


@feature_app.command("list")
def feature_list(
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Only this provider's features.")
    ] = None,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """The preview features of the subscription and their states."""

    def body(s: Session) -> Any:
        if namespace:
            return s.listed(_feature_path(s.subscription, namespace), FEATURES)
        path = f"/subscriptions/{s.subscription}/providers/Microsoft.Features/features"
        return s.listed(path, FEATURES)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_feature_rows,
    )


def _provider_path(sub: str, namespace: str | None = None) -> str:
    base = f"/subscriptions/{sub}/providers"
    return base if namespace is None else f"{base}/{namespace}"


@provider_app.command("register")
def provider_register(
    namespace: NamespaceOption,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is Registered.")] = False,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Register a resource provider for the subscription (prints it when --wait is given)."""

    def body(s: Session) -> Any:
        path = _provider_path(s.subscription, namespace)
        answer = s.json("POST", path + "/register", RESOURCES)
        if not wait:
            return None
        return _wait_registered(s, path, answer)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_provider_rows,
    )


def _wait_registered(s: Session, path: str, answer: Any) -> Any:
    began = time.monotonic()
    with spinner("registering") as show:
        while (answer or {}).get("registrationState") != "Registered":
            state = (answer or {}).get("registrationState", "?")
            show(f"{path.rsplit('/', 1)[-1]}: {state}")
            if time.monotonic() - began > WAIT_SECONDS:
                raise HotpatchError(f"still {state} after {WAIT_SECONDS:.0f} s")
            time.sleep(1.0)
            answer = s.json("GET", path, RESOURCES)
    return answer


@provider_app.command("unregister")
def provider_unregister(
    namespace: NamespaceOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Unregister a resource provider."""

    def body(s: Session) -> Any:
        s.json("POST", _provider_path(s.subscription, namespace) + "/unregister", RESOURCES)
        return None

    run(body, server=server, token=token, subscription=subscription, output=output, query=query)


@provider_app.command("show")
def provider_show(
    namespace: NamespaceOption,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """A resource provider and its registration state."""

    def body(s: Session) -> Any:
        return s.json("GET", _provider_path(s.subscription, namespace), RESOURCES)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_provider_rows,
    )


@provider_app.command("list")
def provider_list(
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Every resource provider and its registration state."""

    def body(s: Session) -> Any:
        return s.listed(_provider_path(s.subscription), RESOURCES)

    run(
        body,
        server=server,
        token=token,
        subscription=subscription,
        output=output,
        query=query,
        table=_provider_rows,
    )


def _feature_rows(value: Any) -> Any:
    return [
        {"name": f.get("name"), "state": dig(f, "properties", "state")}
        for f in (value if isinstance(value, list) else [value])
    ]


def _provider_rows(value: Any) -> Any:
    return [
        {"namespace": p.get("namespace"), "registrationState": p.get("registrationState")}
        for p in (value if isinstance(value, list) else [value])
    ]
