"""``hotpatch simulate``: the orchestrator on a simulated fleet and a virtual clock."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pyhotpatch.cli._app import app

err = Console(stderr=True, highlight=False, soft_wrap=True)
_KB = re.compile(r"^KB[0-9]{4,10}$")
_START = "2026-01-01"


@app.command(name="simulate")
def simulate_command(
    machines: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Machines in the fleet.")
    ] = 1000,
    regions: Annotated[int, typer.Option(min=1, max=28, help="Regions they are spread over.")] = 6,
    days: Annotated[int, typer.Option(min=1, max=3660, help="Simulated days.")] = 90,
    seed: Annotated[int, typer.Option(help="Seed of the fleet, releases and failures.")] = 1,
    events: Annotated[
        Path, typer.Option(help="Write every install event here, one JSON object per line.")
    ] = Path("events.jsonl"),
    bad_release: Annotated[
        list[str] | None,
        typer.Option(
            "--bad-release",
            help="Also publish this hotpatch KB id, which makes every "
            "machine it reaches unhealthy; repeat for several.",
        ),
    ] = None,
    start: Annotated[str, typer.Option(help="First simulated day (UTC), YYYY-MM-DD.")] = _START,
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: SQLite in a scratch directory).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also write the progress plots as an SVG file.")
    ] = None,
) -> None:
    """Run the real orchestrator against simulated agents on a virtual clock.

    Prints restarts taken against restart-based patching, time to 100% compliance,
    halted rollouts and progress per region and zone.
    """
    # the simulator pulls in the whole control plane: import it only when it runs
    from pyhotpatch.simulation._engine import Options, simulate
    from pyhotpatch.simulation._report import (
        read_events,
        render_svg,
        render_text,
        render_times,
        summarize,
    )

    bad = tuple(bad_release or ())
    for kb in bad:
        if not _KB.match(kb):
            raise typer.BadParameter(
                f"{kb!r} is not a KB id such as KB5099999", param_hint="--bad-release"
            )
    try:
        first = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    except ValueError:
        raise typer.BadParameter(
            f"{start!r} is not a date YYYY-MM-DD", param_hint="--start"
        ) from None
    options = Options(
        machines=machines,
        regions=regions,
        days=days,
        seed=seed,
        bad_releases=bad,
        start=first,
        database=db,
    )
    events.parent.mkdir(parents=True, exist_ok=True)
    with events.open("w", encoding="utf-8") as sink, err.status("simulating…") as status:

        def write(event: dict[str, object]) -> None:
            sink.write(json.dumps(event, separators=(",", ":")) + "\n")

        def show(moment: datetime) -> None:
            status.update(f"simulating… {moment:%Y-%m-%d} ({(moment - first).days} of {days} days)")

        outcome = simulate(options, write, progress=show)
    summary = summarize(
        read_events(events),
        outcome.releases,
        machines=outcome.machines,
        start=outcome.start,
        end=outcome.end,
    )
    typer.echo(render_text(summary))
    typer.echo(
        f"{outcome.events} events written to {events}; {outcome.passes} orchestrator "
        f"passes in {outcome.wall_seconds:.1f} s"
    )
    typer.echo(
        render_times(outcome.orchestrator_times, outcome.simulation_times, outcome.wall_seconds),
        nl=False,
    )
    if plot is not None:
        plot.write_text(render_svg(summary), encoding="utf-8")
        typer.echo(f"plots written to {plot}")
