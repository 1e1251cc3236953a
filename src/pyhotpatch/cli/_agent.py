"""``hotpatch agent``: connect this machine, run the agent, show its status, collect diagnostics."""

from __future__ import annotations

import json
import shlex
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.cli._app import EXIT_FAILED, err, out
from pyhotpatch.errors import HotpatchError

agent_app = typer.Typer(
    name="agent",
    help="The node agent: enrol this machine, run its service, install releases.",
    no_args_is_help=True,
)

DEMO_IMAGE = "pyhotpatch:python-service:demo-hotpatch"
DEMO_COMMAND = "{python} -m pyhotpatch.demo.worker --app demoapp.web:handle"

StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir", help="Where the agent keeps its state.", envvar="PYHOTPATCH_AGENT_DIR"
    ),
]
_DEFAULT_STATE = Path("/var/lib/pyhotpatch-agent")


def _fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, ApiCallError):
        err.print(f"[bold red]error[/]: {exc.code}: {exc}")
    else:
        err.print(f"[bold red]error[/]: {type(exc).__name__}: {exc}")
    return typer.Exit(EXIT_FAILED)


@agent_app.command()
def connect(
    server: Annotated[str, typer.Option("--server", help="Control plane URL.")],
    subscription: Annotated[str, typer.Option("--subscription", help="Subscription id.")],
    resource_group: Annotated[str, typer.Option("--resource-group", "-g", help="Resource group.")],
    name: Annotated[str, typer.Option("--name", "-n", help="The machine's name.")],
    location: Annotated[str, typer.Option("--location", "-l", help="Region, e.g. westus.")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="A Contributor's or Owner's token (HOTPATCH_TOKEN).", show_default=False
        ),
    ] = None,
    zone: Annotated[str | None, typer.Option("--zone", help="Availability zone.")] = None,
    availability_set: Annotated[
        str | None,
        typer.Option("--availability-set", help="Availability set (created if missing)."),
    ] = None,
    time_zone: Annotated[
        str | None, typer.Option("--time-zone", help="IANA or Windows time zone of the machine.")
    ] = None,
    environment: Annotated[
        str, typer.Option("--environment", help="DevTest or Production.")
    ] = "Production",
    image: Annotated[
        str, typer.Option("--image", help="The stack as publisher:offer:sku.")
    ] = DEMO_IMAGE,
    command: Annotated[
        str,
        typer.Option(
            "--service-command", help="The service's command; {python} is the stack's interpreter."
        ),
    ] = DEMO_COMMAND,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=256, help="Copies of the command.")
    ] = 2,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="host:port the agent binds and hands to every worker."),
    ] = "127.0.0.1:8080",
    probe_url: Annotated[
        str | None, typer.Option("--probe-url", help="Health probe: an HTTP URL.")
    ] = None,
    probe_command: Annotated[
        str | None,
        typer.Option("--probe-command", help="Health probe: a command (exit 0 is healthy)."),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA bundle to trust (HOTPATCH_CA_BUNDLE).")
    ] = None,
    trusted_root: Annotated[
        Path | None, typer.Option("--trusted-root", help="The release feed's root.json to trust.")
    ] = None,
    heartbeat_seconds: Annotated[
        float, typer.Option("--heartbeat-seconds", help="Longest wait between heartbeats.")
    ] = 60.0,
    poll_seconds: Annotated[
        float, typer.Option("--poll-seconds", help="How long each work poll waits.")
    ] = 25.0,
    external: Annotated[
        bool,
        typer.Option(
            "--external-service",
            help="The service is run by its own manager (systemd); --workers counts its processes.",
        ),
    ] = False,
    restart_command: Annotated[
        str | None,
        typer.Option("--restart-command", help="How to restart an external service (baselines)."),
    ] = None,
    python: Annotated[
        str | None,
        typer.Option(
            "--python", help="Interpreter the stack's environments use (default: the agent's)."
        ),
    ] = None,
    no_create: Annotated[
        bool, typer.Option("--no-create", help="Fail rather than create a missing resource.")
    ] = False,
    state_dir: StateDirOption = _DEFAULT_STATE,
) -> None:
    """Bind this machine to its virtualMachines resource and keep the agent's credential."""
    from pyhotpatch.agent._config import AgentConfig
    from pyhotpatch.agent._connect import Placement
    from pyhotpatch.agent._connect import connect as do_connect
    from pyhotpatch.agent._external import ExternalSpec
    from pyhotpatch.agent._health import ProbeSpec
    from pyhotpatch.agent._supervisor import ServiceSpec

    placement = Placement(
        subscription, resource_group, name, location, zone, availability_set, time_zone, environment
    )
    bundle = ca or _env_path("HOTPATCH_CA_BUNDLE")
    try:
        probe = None
        if probe_url or probe_command:
            probe = ProbeSpec(
                url=probe_url, command=tuple(shlex.split(probe_command)) if probe_command else None
            )
        config = AgentConfig(
            server=server.rstrip("/"),
            machine=placement.machine,
            image=image,
            service=ExternalSpec(
                processes=workers,
                restart_command=tuple(shlex.split(restart_command)) if restart_command else None,
            )
            if external
            else ServiceSpec(command=tuple(shlex.split(command)), workers=workers, listen=listen),
            probe=probe,
            ca_bundle=str(bundle.resolve()) if bundle else None,
            heartbeat_seconds=heartbeat_seconds,
            poll_seconds=poll_seconds,
            python=python,
        )
        api = ControlPlane(config.server, token, bundle)
        try:
            root = trusted_root.read_bytes() if trusted_root else None
            answer = do_connect(
                api, config, placement, state_dir, trusted_root=root, create=not no_create
            )
        finally:
            api.close()
    except (HotpatchError, OSError) as exc:
        raise _fail(exc) from None
    verb = "created and enrolled" if answer.get("created") else "enrolled"
    out.print(f"{placement.machine} {verb}; the agent's state is in {state_dir}")
    out.print(f"start it with: hotpatch agent run --state-dir {state_dir}")


@agent_app.command()
def run(
    state_dir: StateDirOption = _DEFAULT_STATE,
    stop_service: Annotated[
        bool, typer.Option("--stop-service", help="Stop the service when the agent stops.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Serve as the machine's agent until SIGTERM: heartbeats, work, the service's workers."""
    from pyhotpatch.agent._daemon import Agent, setup_logging
    from pyhotpatch.clock import from_environment

    try:
        setup_logging(state_dir, verbose=verbose)
        agent = Agent(state_dir, stop_service=stop_service, clock=from_environment())
        code = agent.run()
    except (HotpatchError, OSError, ValueError) as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@agent_app.command()
def status(
    state_dir: StateDirOption = _DEFAULT_STATE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What this machine runs: baseline, active hotpatch, workers and their patch state."""
    from pyhotpatch.agent._diagnose import processes
    from pyhotpatch.agent._files import read_json

    state = read_json(state_dir / "state.json")
    if state is None:
        err.print(
            f"[bold red]error[/]: {state_dir} holds no agent state: connect and run the agent first"
        )
        raise typer.Exit(EXIT_FAILED)
    found = processes(state_dir / "run")
    summary = {
        "product": state.get("product"),
        "image": state.get("image"),
        "baseline": state.get("baseline"),
        "pendingBaseline": state.get("pending_baseline"),
        "activeHotpatch": state.get("active_hotpatch"),
        "operation": (state.get("journal") or {}).get("op"),
        "undelivered": len(state.get("outbox") or []),
        "processes": [
            {
                "pid": p.get("pid"),
                "active": (p.get("active") or {}).get("id"),
                "transitionComplete": (p.get("transition") or {}).get("complete"),
                "error": p.get("error"),
            }
            for p in found
        ],
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    for key in ("product", "image", "baseline", "pendingBaseline", "activeHotpatch", "operation"):
        out.print(f"{key:16} {summary[key] if summary[key] is not None else '-'}")
    table = Table("pid", "active hotpatch", "transition", title="service processes")
    for p in summary["processes"]:
        transition = "complete" if p["transitionComplete"] else p["error"] or "in progress"
        table.add_row(str(p["pid"]), p["active"] or "-", transition)
    out.print(table)


@agent_app.command()
def diagnose(
    state_dir: StateDirOption = _DEFAULT_STATE,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Archive to write (.tar.gz).")
    ] = Path("pyhotpatch-diagnostics.tar.gz"),
) -> None:
    """Write one archive for a support case: state, logs, patch status, configuration (no secrets)."""
    from pyhotpatch.agent._diagnose import diagnose as write

    try:
        members = write(state_dir, output)
    except (HotpatchError, OSError) as exc:
        raise _fail(exc) from None
    out.print(f"wrote {output} ({len(members)} files)")


@agent_app.command("systemd-unit")
def systemd_unit() -> None:
    """Print a systemd unit that runs the agent as a service."""
    out.print(
        resources.files("pyhotpatch.agent").joinpath("pyhotpatch-agent.service").read_text(), end=""
    )


def _env_path(name: str) -> Path | None:
    import os

    value = os.environ.get(name)
    return Path(value) if value else None
