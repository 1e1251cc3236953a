"""``hotpatch``: build, inspect and apply hotpatches; list patchable processes.

Exit codes: 0 success; 1 an operation failed (bad package, baseline mismatch,
apply rolled back, process unreachable); 2 usage; 3 not hotpatchable (the
release must ship as a baseline; every reason printed as ``path:line: reason``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pyhotpatch.errors import HotpatchError, NotHotpatchable

app = typer.Typer(
    name="hotpatch",
    help="Security fixes for running Python services, applied in memory without a restart.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: options shared by the commands that act on running processes
PidOption = Annotated[
    list[int] | None, typer.Option("--pid", help="Target process; repeat for several.")
]
AllOption = Annotated[bool, typer.Option("--all", help="Every process with the runtime enabled.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print reports as JSON.")]

EXIT_FAILED = 1
EXIT_NOT_HOTPATCHABLE = 3


def main() -> None:
    """Entry point of the ``hotpatch`` console script."""
    from pyhotpatch.cli._vm import spread_arguments

    app(args=spread_arguments(sys.argv[1:]))


def _fail(exc: HotpatchError) -> typer.Exit:
    err.print(f"[bold red]error[/]: {type(exc).__name__}: {exc}")
    return typer.Exit(EXIT_FAILED)


@app.command()
def build(
    old: Annotated[
        str,
        typer.Argument(metavar="FROM", help="Baseline: directory, sdist, wheel or name==version."),
    ],
    new: Annotated[str, typer.Argument(metavar="TO", help="Fixed release, in the same forms.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Package file to write.")
    ] = None,
    patch_id: Annotated[
        str | None, typer.Option("--id", help="Release id such as KB5031001.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Human title of the hotpatch.")] = None,
    classification: Annotated[
        str, typer.Option(help="Critical, Security, Updates, ...")
    ] = "Security",
    cve: Annotated[
        list[str] | None, typer.Option("--cve", help="Advisory id; repeat for several.")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Print what would be swapped, added, rebuilt, ignored and refused."
        ),
    ] = False,
) -> None:
    """Diff two releases and write a hotpatch package (exit 3 if it cannot be hotpatched)."""
    from pyhotpatch import build as builder
    from pyhotpatch.package import CLASSIFICATIONS

    if classification not in CLASSIFICATIONS:
        raise typer.BadParameter(
            f"must be one of {', '.join(CLASSIFICATIONS)}", param_hint="--classification"
        )
    if output is None and not explain:
        raise typer.BadParameter("give -o OUT (or --explain to only look)", param_hint="-o")
    try:
        if explain:
            report = builder.explain(old, new)
            for key in ("swapped", "added", "rebuilt", "ignored", "refused"):
                lines = getattr(report, key)
                out.print(f"[bold]{key}[/] ({len(lines)})")
                for line in lines:
                    out.print(f"  {line}")
            if output is None:
                raise typer.Exit(EXIT_NOT_HOTPATCHABLE if report.refused else 0)
        result = builder.build(
            old,
            new,
            patch_id=patch_id,
            title=title,
            classification=classification,
            cves=tuple(cve or ()),
        )
        assert output is not None
        digest = result.write(output)
    except NotHotpatchable as exc:
        err.print(
            f"[bold red]not hotpatchable[/]: {len(exc.reasons)} change(s) need a baseline release:"
        )
        for reason in exc.reasons:
            print(reason, file=sys.stderr)
        raise typer.Exit(EXIT_NOT_HOTPATCHABLE) from None
    except HotpatchError as exc:
        raise _fail(exc) from None
    m = result.manifest
    functions = sum(
        1 for t in m.targets for mod in t.modules for a in mod.actions if a.kind == "function"
    )
    out.print(
        f"wrote {output} ({output.stat().st_size} bytes, sha256 {digest[:16]}…): {m.id} "
        f"{functions} function(s) in {sum(len(t.modules) for t in m.targets)} module(s)"
    )


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A .hotpatch package.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Validate a package and show its manifest."""
    from pyhotpatch.package import read_package

    try:
        package = read_package(file)
    except HotpatchError as exc:
        raise _fail(exc) from None
    m = package.manifest
    if as_json:
        print(json.dumps({**m.to_json(), "sha256": package.digest, "size": package.size}, indent=2))
        return
    out.print(f"[bold]{m.id}[/] {m.title}")
    out.print(
        f"classification {m.classification}; CVEs {', '.join(m.cves) or '-'}; "
        f"{package.size} bytes; sha256 {package.digest}"
    )
    table = Table("distribution", "baseline", "fixes to", "module", "action", "object")
    for t in m.targets:
        for mod in t.modules:
            for a in mod.actions:
                table.add_row(
                    t.distribution,
                    t.baseline_version,
                    t.fixed_version,
                    mod.name,
                    a.kind,
                    a.qualname or ", ".join(a.names),
                )
    out.print(table)


@app.command()
def apply(
    file: Annotated[Path, typer.Argument(help="A .hotpatch package.")],
    pid: PidOption = None,
    all_processes: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Apply a package to running processes through their control sockets."""
    from pyhotpatch.runtime import client

    pids = _pids(pid, all_processes)
    data = file.read_bytes() if file.is_file() else None
    if data is None:
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    failed = _each(pids, lambda p: client.apply(p, data), as_json)
    raise typer.Exit(EXIT_FAILED if failed else 0)


@app.command()
def revert(
    patch_id: Annotated[str, typer.Argument(metavar="ID", help="The active hotpatch's id.")],
    pid: PidOption = None,
    all_processes: AllOption = False,
    as_json: JsonOption = False,
) -> None:
    """Revert the active hotpatch in running processes (back to the baseline)."""
    from pyhotpatch.runtime import client

    failed = _each(_pids(pid, all_processes), lambda p: client.revert(p, patch_id), as_json)
    raise typer.Exit(EXIT_FAILED if failed else 0)


@app.command()
def ps(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List processes with the runtime enabled and what each runs."""
    from pyhotpatch.runtime import client

    rows = []
    for p in client.processes():
        try:
            rows.append(client.status(p))
        except HotpatchError as exc:
            rows.append({"pid": p, "error": str(exc)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("pid", "python", "command", "active hotpatch", "transition")
    for row in rows:
        active = row.get("active") or {}
        transition = row.get("transition") or {}
        state = (
            "-"
            if "error" in row
            else (
                "complete"
                if transition.get("complete")
                else f"{len(transition.get('threads', []))} thread(s), "
                f"{transition.get('suspended', 0)} suspended"
            )
        )
        table.add_row(
            str(row.get("pid")),
            row.get("python", "?"),
            " ".join(row.get("argv", []))[:60],
            active.get("id", "-") if active else "-",
            row.get("error", state),
        )
    out.print(table)


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Control plane, machines, releases and logs.")
    ] = Path(".demo"),
    speed: Annotated[
        float,
        typer.Option(
            min=1, max=120, help="How much faster than the wall clock the fleet's time runs."
        ),
    ] = 30.0,
    soak_hours: Annotated[
        float,
        typer.Option(
            min=0, max=24, help="Fleet hours each DevTest ring runs before Production starts."
        ),
    ] = 0.5,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The control plane's port (0: any free one).")
    ] = 0,
    keep_running: Annotated[
        bool, typer.Option("--keep-running", help="Leave everything running until Ctrl-C.")
    ] = False,
    engine: Annotated[
        bool,
        typer.Option(
            "--engine", help="Instead: fix CVE-2024-53861 in one PyJWT service, no control plane."
        ),
    ] = False,
) -> None:
    """Live demo: a fleet hotpatched availability-first by the control plane, under load."""
    if engine:
        from pyhotpatch.demo import story

        raise typer.Exit(story.run(workdir, keep_running=keep_running))
    from pyhotpatch.demo import fleet

    raise typer.Exit(
        fleet.run(
            workdir / "fleet",
            speed=speed,
            soak_hours=soak_hours,
            port=port,
            keep_running=keep_running,
        )
    )


def _pids(pid: list[int] | None, all_processes: bool) -> list[int]:
    from pyhotpatch.runtime import client

    pids = list(pid or [])
    if all_processes:
        pids += [p for p in client.processes() if p not in pids]
    if not pids:
        raise typer.BadParameter("name at least one --pid, or --all", param_hint="--pid")
    return pids


def _each(pids: list[int], action: Any, as_json: bool) -> int:
    failed = 0
    reports = []
    for p in pids:
        try:
            report = action(p)
            reports.append({"pid": p, "ok": True, "report": report})
            if not as_json:
                out.print(f"pid {p}: ok {_summary(report)}")
        except HotpatchError as exc:
            failed += 1
            reports.append(
                {"pid": p, "ok": False, "error": type(exc).__name__, "message": str(exc)}
            )
            if not as_json:
                err.print(f"pid {p}: [bold red]{type(exc).__name__}[/]: {exc}")
    if as_json:
        print(json.dumps(reports, indent=2))
    return failed


def _summary(report: dict[str, Any]) -> str:
    if report.get("already_active"):
        return f"{report['id']} already active"
    if report.get("reverted"):
        return f"{report['id']} reverted (pause {report['pause_ms']} ms)"
    pending = report.get("pending_modules") or []
    return (
        f"{report['id']} applied: {report['functions']} function(s), "
        f"{report['definitions']} definition(s), {report['rebuilt']} rebuilt, "
        f"pause {report['pause_ms']} ms"
        + (f", {len(pending)} module(s) patched on import" if pending else "")
    )
