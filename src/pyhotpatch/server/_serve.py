"""Running the control plane: ``hotpatch server``."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pyhotpatch.catalog import Catalog, TufSettings, default_data_dir
from pyhotpatch.server._app import create_app
from pyhotpatch.server._auth import TOKEN_FILE, admin_token
from pyhotpatch.server._devtls import dev_tls
from pyhotpatch.server.arm._context import ArmSettings


@dataclass(frozen=True)
class ServerSettings:
    """Where the control plane keeps its state and where it listens."""

    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8480
    tls_cert: Path | None = None
    tls_key: Path | None = None
    dev_tls: bool = False
    tuf: TufSettings | None = None
    arm: ArmSettings = field(default_factory=ArmSettings)


def serve(settings: ServerSettings) -> None:
    """Open (or create) the control plane's state and serve the API until interrupted."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    catalog = Catalog.open(settings.data_dir, url=settings.db_url, tuf=settings.tuf)
    cert, key = settings.tls_cert, settings.tls_key
    ca_note = ""
    if settings.dev_tls and cert is None:
        ca, cert, key = dev_tls(settings.data_dir)
        ca_note = f"\n  development CA (trust it in clients): {ca}"
    try:
        token = admin_token(settings.data_dir)
        app = create_app(catalog, admin_token=token, arm=settings.arm)
        scheme = "https" if cert else "http"
        where = (
            "HOTPATCH_ADMIN_TOKEN"
            if token != _stored(settings.data_dir)
            else str(settings.data_dir / TOKEN_FILE)
        )
        print(
            f"pyhotpatch control plane on {scheme}://{settings.host}:{settings.port}\n"
            f"  data: {settings.data_dir}\n"
            f"  administrator token: {where}\n"
            f"  trusted TUF root for agents: {scheme}://{settings.host}:{settings.port}/hotpatch/tuf/metadata/root.json "
            f"(copy it to agents out of band: `hotpatch release root -o root.json`){ca_note}",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
            log_level="info",
            timeout_graceful_shutdown=5,
        )
    finally:
        catalog.close()


def _stored(data_dir: Path) -> str | None:
    try:
        return (data_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
