"""One control-plane command's conversation with the server, and how it ends.

Every ``hotpatch feature|provider|group|vm|rollout|compliance`` command opens a
``Session`` from its options and the profile, makes its calls, follows long-running ARM
operations to the end (with a progress display on stderr, or not at all with
``--no-wait``) and prints the result with ``-o``/``--query``. A refusal ends the command
with one line, ``error: <server's code>: <message>``, and the exit code below.

Exit codes: 0 success; 1 the server refused or the operation failed; 2 usage (a bad
option, no server or subscription known); 3 the resource was not found (as az); 5 the
server could not be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer

from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.cli._app import err, out
from pyhotpatch.cli._output import FORMATS, UsageError, render
from pyhotpatch.cli._profile import Profile, resolve
from pyhotpatch.errors import HotpatchError

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 5

#: api-versions the commands send, per ARM family; all are ones Azure's own clients send
COMPUTE = "2024-11-01"
RESOURCES = "2022-09-01"
FEATURES = "2021-07-01"
#: a long-running operation is given up on (and reported, not cancelled) after this long
PATIENCE_SECONDS = 3 * 3600.0

OutputOption = Annotated[
    str | None,
    typer.Option("--output", "-o", help="json, table or tsv (default: the profile's, else json)."),
]
QueryOption = Annotated[
    str | None, typer.Option("--query", help="JMESPath applied to the answer, as with az.")
]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Control plane URL (HOTPATCH_SERVER; default: the profile's)."),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Bearer token (HOTPATCH_TOKEN; default: the profile's).", show_default=False
    ),
]
SubscriptionOption = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        help="Subscription id (HOTPATCH_SUBSCRIPTION; default: the profile's).",
    ),
]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Return once the server accepted; do not follow.")
]


def fail(exc: HotpatchError) -> NoReturn:
    """End the command with ``exc`` on one line and its exit code."""
    if isinstance(exc, ApiCallError):
        details = "; ".join(d for d in exc.details if d and d != str(exc))
        line = f"{exc.code}: {exc}" + (f" ({details})" if details else "")
        code = (
            EXIT_UNREACHABLE
            if exc.status == 0
            else EXIT_NOT_FOUND
            if exc.status == 404
            else EXIT_REFUSED
        )
    else:
        line = str(exc)
        code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_REFUSED
    err.print(f"[bold red]error[/]: {line}", markup=True, highlight=False)
    raise typer.Exit(code)


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Turn the project's errors inside the block into the one-line exit above."""
    try:
        yield
    except HotpatchError as exc:
        fail(exc)


@dataclass
class Session:
    """A signed-in conversation with one control plane."""

    profile: Profile
    plane: ControlPlane
    output: str
    query: str | None

    @classmethod
    def open(
        cls,
        server: str | None,
        token: str | None,
        subscription: str | None = None,
        output: str | None = None,
        query: str | None = None,
    ) -> Session:
        """A session from the options given, the environment and the profile."""
        profile = resolve(server, token, subscription)
        if not profile.server:
            raise UsageError("no control plane: run `hotpatch login --server URL` or pass --server")
        if not profile.token:
            raise UsageError("no token: run `hotpatch login` or pass --token")
        chosen = output or profile.output
        if chosen not in FORMATS:
            raise UsageError(f"--output must be one of {', '.join(FORMATS)}, not {chosen!r}")
        plane = ControlPlane(
            profile.server, profile.token, Path(profile.ca) if profile.ca else None
        )
        return cls(profile, plane, chosen, query)

    @property
    def subscription(self) -> str:
        """The subscription commands act in; a usage error when none is known."""
        if not self.profile.subscription:
            raise UsageError(
                "no subscription: pass --subscription or set one with `hotpatch account set`"
            )
        return self.profile.subscription

    def call(self, method: str, path: str, version: str | None = None, body: Any = None) -> Any:
        """The server's response to one request (ARM paths get their ``api-version``)."""
        params = {"api-version": version} if version else None
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        return self.plane.call(method, path, **kwargs)

    def json(self, method: str, path: str, version: str | None = None, body: Any = None) -> Any:
        """The decoded JSON answer of one request (None for an empty body)."""
        response = self.call(method, path, version, body)
        return response.json() if response.content else None

    def listed(self, path: str, version: str | None = None) -> list[Any]:
        """Every item of an ARM list, following ``nextLink`` pages."""
        page = self.json("GET", path, version)
        items = list(page.get("value", []))
        while page.get("nextLink"):
            page = self.plane.call("GET", page["nextLink"]).json()
            items.extend(page.get("value", []))
        return items

    def show(self, value: Any, table: Callable[[Any], Any] | None = None) -> None:
        """Print ``value`` as the command line asked (``table`` picks table columns)."""
        render(value, self.output, self.query, out, table)

    def follow(self, response: Any, what: str, *, no_wait: bool) -> Any:
        """The result of a long-running ARM operation ``response`` started.

        ``Azure-AsyncOperation`` is polled (honouring ``Retry-After``) until the operation
        is ``Succeeded``, ``Failed`` or ``Canceled``; a failure is raised as the server's error.
        """
        status_url = response.headers.get("Azure-AsyncOperation")
        if not status_url:
            return response.json() if response.content else None
        if no_wait:
            err.print(f"accepted: {what}; follow it at {status_url}", highlight=False)
            return None
        return _poll(self.plane, status_url, what, _delay(response))

    def close(self) -> None:
        """Let go of the connection."""
        self.plane.close()


def _delay(response: Any) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.2), 10.0)
    except ValueError:
        return 1.0


@contextmanager
def spinner(description: str) -> Iterator[Callable[[str], None]]:
    """A spinner with ``description`` and the elapsed time on stderr; yields its updater."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda text: progress.update(task, description=text)


def _poll(plane: ControlPlane, url: str, what: str, delay: float) -> Any:
    began = time.monotonic()
    with spinner(f"{what}: InProgress") as show:
        while True:
            answer = plane.call("GET", url)
            status = answer.json()
            state = status.get("status", "InProgress")
            show(f"{what}: {state}")
            if state == "Succeeded":
                return (status.get("properties") or {}).get("output", status)
            if state in ("Failed", "Canceled"):
                error = status.get("error") or {}
                raise ApiCallError(
                    409,
                    str(error.get("code") or f"Operation{state}"),
                    str(error.get("message") or f"{what} {state.lower()}"),
                    [str(d.get("message", d)) for d in error.get("details") or []],
                )
            if time.monotonic() - began > PATIENCE_SECONDS:
                raise HotpatchError(f"{what} still running after {PATIENCE_SECONDS:.0f} s: {url}")
            time.sleep(_delay(answer) if "Retry-After" in answer.headers else delay)


def run(
    body: Callable[[Session], Any],
    *,
    server: str | None,
    token: str | None,
    subscription: str | None = None,
    output: str | None = None,
    query: str | None = None,
    table: Callable[[Any], Any] | None = None,
) -> None:
    """Open a session, run ``body``, print what it returned (unless None), close."""
    with failing_cleanly():
        session = Session.open(server, token, subscription, output, query)
        try:
            value = body(session)
            if value is not None:
                session.show(value, table)
        finally:
            session.close()


def dig(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]…``, or None where a step is missing."""
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def vm_id(subscription: str, group: str, name: str) -> str:
    """A virtual machine's ARM resource id."""
    return (
        f"/subscriptions/{subscription}/resourceGroups/{group}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def machine_path(resource_id: str) -> str:
    """A machine's id as the ``/hotpatch/machines/{vm id}`` routes take it."""
    return quote(resource_id, safe="")
