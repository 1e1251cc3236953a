"""``hotpatch login``, ``logout`` and ``account``: sign in to a control plane once.

``login`` checks the token against the server (listing the subscriptions it can read)
before anything is saved, so a typo never becomes the profile; with exactly one
subscription visible it becomes the default, as ``az login`` does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from pyhotpatch.apiclient import ControlPlane
from pyhotpatch.cli import _profile
from pyhotpatch.cli._app import app, err, out
from pyhotpatch.cli._output import FORMATS, UsageError, render
from pyhotpatch.cli._session import RESOURCES, OutputOption, QueryOption, fail, failing_cleanly

account_app = typer.Typer(
    name="account", help="Show or change the signed-in profile.", no_args_is_help=True
)


def _subscriptions(server: str, token: str, ca: Path | None) -> list[dict[str, Any]]:
    plane = ControlPlane(server, token, ca)
    try:
        answer = plane.call("GET", "/subscriptions", params={"api-version": RESOURCES}).json()
    finally:
        plane.close()
    return list(answer.get("value", []))


@app.command()
def login(
    server: Annotated[
        str, typer.Option("--server", help="Control plane URL, http(s)://host:port.")
    ],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Bearer token (HOTPATCH_TOKEN; asked for when omitted on a terminal).",
            show_default=False,
        ),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA bundle to trust for HTTPS.", exists=True)
    ] = None,
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Default subscription id.")
    ] = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Check a token against a control plane and keep it as the profile (like az login)."""
    with failing_cleanly():
        token = token or os.environ.get("HOTPATCH_TOKEN")
        if not token:
            if not sys.stdin.isatty():
                raise UsageError("no token: pass --token or set HOTPATCH_TOKEN")
            token = typer.prompt("Token", hide_input=True)
        if output is not None and output not in FORMATS:
            raise UsageError(f"--output must be one of {', '.join(FORMATS)}, not {output!r}")
        visible = _subscriptions(server, token, ca)
        ids = [s["subscriptionId"] for s in visible]
        if subscription is not None and subscription.lower() not in {i.lower() for i in ids}:
            raise UsageError(f"subscription {subscription} is not visible to this token")
        chosen = subscription or (ids[0] if len(ids) == 1 else None)
        profile = _profile.Profile(
            server=server.rstrip("/"),
            token=token,
            ca=str(ca.resolve()) if ca else None,
            subscription=chosen,
            output=output or _profile.load().output,
        )
        path = _profile.save(profile)
        err.print(f"signed in to {profile.server}; profile kept in {path}", highlight=False)
        render(
            [
                {
                    "subscriptionId": s["subscriptionId"],
                    "name": s.get("displayName"),
                    "state": s.get("state"),
                    "isDefault": s["subscriptionId"] == chosen,
                }
                for s in visible
            ],
            output or profile.output,
            query,
            out,
        )


@app.command()
def logout() -> None:
    """Forget the profile and its token."""
    if _profile.forget():
        err.print("signed out; the profile is deleted")
    else:
        err.print("no profile to delete")


@account_app.command("show")
def account_show(output: OutputOption = None, query: QueryOption = None) -> None:
    """The profile commands use (the token itself is never printed)."""
    with failing_cleanly():
        profile = _profile.load()
        if not profile.server:
            raise UsageError("not signed in: run `hotpatch login --server URL`")
        render(profile.public(), output or profile.output, query, out)


@account_app.command("set")
def account_set(
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="The default subscription id.")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="The default output: json, table, tsv.")
    ] = None,
) -> None:
    """Change the profile's default subscription or output format."""
    with failing_cleanly():
        profile = _profile.load()
        if not profile.server or not profile.token:
            raise UsageError("not signed in: run `hotpatch login --server URL`")
        if output is not None and output not in FORMATS:
            raise UsageError(f"--output must be one of {', '.join(FORMATS)}, not {output!r}")
        if subscription is not None:
            ca = Path(profile.ca) if profile.ca else None
            ids = {
                s["subscriptionId"].lower()
                for s in _subscriptions(profile.server, profile.token, ca)
            }
            if subscription.lower() not in ids:
                fail(UsageError(f"subscription {subscription} is not visible to this token"))
        profile = replace(
            profile,
            subscription=subscription or profile.subscription,
            output=output or profile.output,
        )
        _profile.save(profile)
        render(profile.public(), profile.output, None, out)
