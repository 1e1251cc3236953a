"""``hotpatch rollout`` and ``hotpatch compliance``: automatic patching as operators watch it.

Rollouts are the orchestrator's (``/hotpatch/rollouts``); pausing, resuming and cancelling
them needs an administrator, and a refusal names the rule that refused.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pyhotpatch.cli._session import (
    OutputOption,
    QueryOption,
    ServerOption,
    Session,
    SubscriptionOption,
    TokenOption,
    machine_path,
    run,
    vm_id,
)

rollout_app = typer.Typer(
    name="rollout",
    help="Automatic rollouts: progress, pause, resume, cancel.",
    no_args_is_help=True,
)
compliance_app = typer.Typer(
    name="compliance", help="Update compliance of the fleet or one machine.", no_args_is_help=True
)

RolloutArgument = Annotated[int, typer.Argument(help="Rollout id.")]


@rollout_app.command("list")
def rollout_list(
    state: Annotated[
        str | None, typer.Option("--state", help="active, paused, halted, completed, …")
    ] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Every automatic rollout, newest first."""

    def body(s: Session) -> Any:
        path = "/hotpatch/rollouts" + (f"?state={state}" if state else "")
        return s.listed(path)

    run(body, server=server, token=token, output=output, query=query, table=rollout_rows)


@rollout_app.command("show")
def rollout_show(
    rollout: RolloutArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """One rollout with its regions, phases and batches (health gates included)."""
    run(
        lambda s: s.json("GET", f"/hotpatch/rollouts/{rollout}"),
        server=server,
        token=token,
        output=output,
        query=query,
        table=batch_rows,
    )


def rollout_rows(value: Any) -> Any:
    """A rollout per row, with how many installs are in each state."""
    return [
        {
            "id": r.get("id"),
            "release": r.get("release"),
            "state": r.get("state"),
            "phase": f"{r.get('phase')}/{r.get('phases')}",
            "batches": r.get("batches"),
            **{f"installs{k.title()}": n for k, n in sorted((r.get("installs") or {}).items())},
            "reason": r.get("reason"),
        }
        for r in (value if isinstance(value, list) else [value])
    ]


def batch_rows(value: Any) -> Any:
    """A rollout's batches, one per row: where, which ring, and its health gate."""
    return [
        {
            "batch": b.get("number"),
            "region": b.get("region"),
            "ring": b.get("ring"),
            "zone": b.get("zone"),
            "updateDomains": ",".join(
                sorted(
                    {
                        f"{m['availabilitySet']}:{m['updateDomain']}"
                        for m in b.get("machines") or []
                        if m.get("availabilitySet")
                    }
                )
            ),
            "machines": ",".join(m["name"] for m in b.get("machines") or []),
            "state": b.get("state"),
            "size": b.get("size"),
            "failed": b.get("failed"),
            "unhealthy": b.get("unhealthy"),
            "reason": b.get("reason"),
        }
        for b in value.get("batchList") or []
    ]


def _act(action: str, rollout: int, **options: Any) -> None:
    run(
        lambda s: s.json("POST", f"/hotpatch/rollouts/{rollout}/{action}"),
        table=rollout_rows,
        **options,
    )


@rollout_app.command("pause")
def rollout_pause(
    rollout: RolloutArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Pause a rollout: batches in flight finish, no new one starts."""
    _act("pause", rollout, server=server, token=token, output=output, query=query)


@rollout_app.command("resume")
def rollout_resume(
    rollout: RolloutArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Resume a paused rollout."""
    _act("resume", rollout, server=server, token=token, output=output, query=query)


@rollout_app.command("cancel")
def rollout_cancel(
    rollout: RolloutArgument,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Cancel a rollout for good."""
    _act("cancel", rollout, server=server, token=token, output=output, query=query)


@rollout_app.command("notices")
def rollout_notices(
    release: Annotated[str | None, typer.Option("--release", help="Only this KB id's.")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """What operators were told: halted rollouts, failed reverts."""

    def body(s: Session) -> Any:
        return s.listed("/hotpatch/notices" + (f"?release={release}" if release else ""))

    run(body, server=server, token=token, output=output, query=query)


@compliance_app.command("show")
def compliance_show(
    group: Annotated[
        str | None, typer.Option("--resource-group", "-g", help="The machine's group.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="One machine instead of the fleet.")
    ] = None,
    subscription: SubscriptionOption = None,
    server: ServerOption = None,
    token: TokenOption = None,
    output: OutputOption = None,
    query: QueryOption = None,
) -> None:
    """Compliance of the subscription's fleet, or of one machine with -g and -n."""

    def body(s: Session) -> Any:
        if name:
            if not group:
                from pyhotpatch.cli._output import UsageError

                raise UsageError("--name needs --resource-group")
            resource = vm_id(s.subscription, group, name)
            return s.json("GET", f"/hotpatch/machines/{machine_path(resource)}/compliance")
        sub = s.profile.subscription
        return s.json("GET", "/hotpatch/compliance" + (f"?subscription={sub}" if sub else ""))

    run(body, server=server, token=token, subscription=subscription, output=output, query=query)
