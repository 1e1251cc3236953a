"""``hotpatch server``: run the control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pyhotpatch.cli._app import app


def _thresholds(values: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for value in values:
        role, _, number = value.partition("=")
        if role not in ("root", "targets", "snapshot", "timestamp") or not number.isdigit():
            raise typer.BadParameter(f"expected ROLE=N with a TUF role, not {value!r}")
        found[role] = int(number)
    return found


@app.command()
def server(
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL; default an SQLite file in the data directory."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8480,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="State: database, artifacts, keys (PYHOTPATCH_HOME)."),
    ] = None,
    dev_tls: Annotated[
        bool,
        typer.Option(
            "--dev-tls", help="Serve HTTPS with a self-signed certificate made for local use."
        ),
    ] = False,
    feature_delay: Annotated[
        float,
        typer.Option(
            min=0, help="Seconds a feature or provider stays Registering (Azure: up to 15 min)."
        ),
    ] = 3.0,
    preview_rules: Annotated[
        bool,
        typer.Option(
            "--preview-rules", help="Hotpatch needs the seed's preview features registered."
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Server processes; more than one spreads requests over several cores."
        ),
    ] = 1,
    orchestrate_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="Longest time between orchestrator passes (automatic assessment and "
            "patching); 0 turns automatic passes off.",
        ),
    ] = 30.0,
    tuf_threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--tuf-threshold",
            help="ROLE=N signatures a TUF role needs, set when its keys are made.",
        ),
    ] = None,
) -> None:
    """Run the control plane: catalog API and signed distribution (TUF) over HTTP."""
    from datetime import timedelta

    from pyhotpatch.catalog import TufSettings, default_data_dir
    from pyhotpatch.server import ServerSettings, serve
    from pyhotpatch.server.arm._context import ArmSettings

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key")
    if dev_tls and tls_cert is not None:
        raise typer.BadParameter(
            "--dev-tls makes its own certificate: drop --tls-cert and --tls-key"
        )
    delay = timedelta(seconds=feature_delay)
    arm = ArmSettings(feature_delay=delay, provider_delay=delay, preview_rules=preview_rules)
    tuf = TufSettings(thresholds=_thresholds(tuf_threshold or [])) if tuf_threshold else None
    serve(
        ServerSettings(
            data_dir=data_dir or default_data_dir(),
            db_url=db,
            host=host,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            dev_tls=dev_tls,
            tuf=tuf,
            arm=arm,
            workers=workers,
            orchestrate_seconds=orchestrate_seconds,
        )
    )
