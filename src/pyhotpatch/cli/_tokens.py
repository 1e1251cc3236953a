"""``hotpatch token``: create, list and revoke the bearer tokens that reach the control plane.

Against a server (``--server``, or the one ``hotpatch login`` kept, with an administrator's
or a subscription owner's token), or directly on the control plane's data directory
(``--data-dir``), as an administrator on its host.
A token's secret is printed once, when it is made; the server keeps only its digest.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.cli._app import EXIT_FAILED, err, out
from pyhotpatch.cli._profile import Profile, remote
from pyhotpatch.errors import HotpatchError

token_app = typer.Typer(
    name="token", help="Manage the bearer tokens of the control plane.", no_args_is_help=True
)

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Control plane URL (HOTPATCH_SERVER; default: the profile's, else --data-dir).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Your bearer token (HOTPATCH_TOKEN).", show_default=False),
]
CaOption = Annotated[
    Path | None, typer.Option("--ca", help="CA bundle to trust for HTTPS (HOTPATCH_CA_BUNDLE).")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="The control plane's data directory (PYHOTPATCH_HOME)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(method: str, path: str, where: Profile, ca: Path | None, body: Any = None) -> Any:
    try:
        bundle = ca or (Path(where.ca) if where.ca else None)
        assert where.server is not None
        plane = ControlPlane(where.server, where.token, bundle)
        try:
            return plane.call(method, path, json=body).json()
        finally:
            plane.close()
    except ApiCallError as exc:
        err.print(f"[bold red]error[/]: {exc.code}: {exc}")
    except HotpatchError as exc:
        err.print(f"[bold red]error[/]: {exc}")
    raise typer.Exit(EXIT_FAILED)


def _local(data_dir: Path | None) -> Any:
    from pyhotpatch.catalog import Catalog
    from pyhotpatch.server._auth import TokenStore

    catalog = Catalog.open(data_dir)
    return catalog, TokenStore(catalog.engine, catalog.clock)


def _remote(server: str | None, token: str | None, data_dir: Path | None) -> Profile | None:
    found = remote(server, data_dir is not None)
    if found is None:
        return None
    return replace(found, token=token or found.token)


@token_app.command()
def create(
    role: Annotated[
        str, typer.Option("--role", help="Reader, Contributor, Owner, Administrator or Agent.")
    ],
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Subscription id (a GUID).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="What the token is for.")] = None,
    machine: Annotated[
        str | None, typer.Option("--machine", help="VM resource id (Agent tokens).")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, max=3650, help="Lifetime in days.")
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a token; its secret is printed once."""
    body: dict[str, Any] = {"role": role, "name": name or f"{role} token"}
    if subscription:
        body["subscription"] = subscription
    if machine:
        body["machine"] = machine
    if expires_in_days:
        body["expiresInDays"] = expires_in_days
    where = _remote(server, token, data_dir)
    if where is not None:
        made = _call("POST", "/hotpatch/tokens", where, ca, body)
    else:
        made = _create_locally(data_dir, body)
    if as_json:
        print(json.dumps(made, indent=2))
        return
    out.print(
        f"{made['role']} token {made['id']} for {made.get('subscription') or 'every subscription'}:"
    )
    print(made["token"])
    err.print("keep it safe: it is shown only now")


def _create_locally(data_dir: Path | None, body: dict[str, Any]) -> dict[str, Any]:
    from datetime import timedelta

    from pyhotpatch.server._errors import ApiError
    from pyhotpatch.server.arm._subscriptions import ensure_subscription

    catalog, store = _local(data_dir)
    try:
        sub = body.get("subscription")
        if sub:
            with catalog.engine.begin() as conn:
                ensure_subscription(conn, sub, catalog.clock())
        expires = None
        if body.get("expiresInDays"):
            expires = catalog.clock() + timedelta(days=body["expiresInDays"])
        principal, secret = store.create(
            body["name"],
            body["role"],
            subscription=sub.lower() if sub else None,
            machine=body.get("machine"),
            expires=expires,
        )
        return {**principal.to_json(), "token": secret}
    except ApiError as exc:
        err.print(f"[bold red]error[/]: {exc.code}: {exc.message}")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        catalog.close()


@token_app.command("list")
def list_tokens(
    subscription: Annotated[str | None, typer.Option("--subscription")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
    data_dir: DataDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """List live tokens (never their secrets)."""
    where = _remote(server, token, data_dir)
    if where is not None:
        path = "/hotpatch/tokens" + (f"?subscription={subscription}" if subscription else "")
        found = _call("GET", path, where, ca)["value"]
    else:
        catalog, store = _local(data_dir)
        try:
            found = [
                p.to_json() for p in store.list(subscription.lower() if subscription else None)
            ]
        finally:
            catalog.close()
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("Id", "Name", "Role", "Subscription", "Machine"):
        table.add_column(column)
    for t in found:
        table.add_row(t["id"], t["name"], t["role"], t["subscription"] or "*", t["machine"] or "")
    out.print(table if found else "no tokens")


@token_app.command()
def revoke(
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token's id (from `token list`).")
    ],
    server: ServerOption = None,
    token: TokenOption = None,
    ca: CaOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a token at once."""
    where = _remote(server, token, data_dir)
    if where is not None:
        _call("DELETE", f"/hotpatch/tokens/{token_id}", where, ca)
    else:
        catalog, store = _local(data_dir)
        try:
            if not store.revoke(token_id):
                err.print(f"[bold red]error[/]: NotFound: no live token {token_id}")
                raise typer.Exit(EXIT_FAILED)
        finally:
            catalog.close()
    out.print(f"revoked {token_id}")
