"""Running the control plane: ``hotpatch server``, in one process or several.

With ``workers`` above one, uvicorn's supervisor binds the socket and starts that many
worker processes, each building its own application (``_factory``) from the settings,
which reach it as JSON in ``SETTINGS_VARIABLE``. Everything that must happen once (the
database's migrations, the TUF repository's first keys and metadata, the development
certificate, the administrator token's file) happens here in the parent, before any
worker starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyhotpatch.catalog import Catalog, TufSettings, default_data_dir
from pyhotpatch.server._app import create_app
from pyhotpatch.server._auth import TOKEN_FILE, admin_token
from pyhotpatch.server._devtls import dev_tls
from pyhotpatch.server.arm._context import ArmSettings

#: the environment variable that carries a worker's settings (JSON)
SETTINGS_VARIABLE = "PYHOTPATCH_SERVER_SETTINGS"


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
    #: server processes; above one, uvicorn supervises that many workers
    workers: int = 1
    #: the longest time between orchestrator passes; 0: no automatic passes
    orchestrate_seconds: float = 30.0

    def to_json(self) -> str:
        """What a worker process needs to build the application, as JSON."""
        found: dict[str, Any] = {
            "data_dir": str(self.data_dir),
            "db_url": self.db_url,
            "arm": {
                "feature_delay": self.arm.feature_delay.total_seconds(),
                "provider_delay": self.arm.provider_delay.total_seconds(),
                "preview_rules": self.arm.preview_rules,
                "sovereign_regions": sorted(self.arm.sovereign_regions),
            },
            "tuf": None,
            "orchestrate_seconds": self.orchestrate_seconds,
        }
        if self.tuf is not None:
            found["tuf"] = {
                "thresholds": dict(self.tuf.thresholds),
                "expiry": {k: v.total_seconds() for k, v in self.tuf.expiry.items()},
            }
        return json.dumps(found)

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        """The settings ``to_json`` wrote (listening address and TLS left at their defaults)."""
        found = json.loads(text)
        arm = found["arm"]
        tuf = found["tuf"]
        return cls(
            data_dir=Path(found["data_dir"]),
            db_url=found["db_url"],
            tuf=None
            if tuf is None
            else TufSettings(
                thresholds=tuf["thresholds"],
                expiry={k: timedelta(seconds=v) for k, v in tuf["expiry"].items()},
            ),
            arm=ArmSettings(
                feature_delay=timedelta(seconds=arm["feature_delay"]),
                provider_delay=timedelta(seconds=arm["provider_delay"]),
                preview_rules=arm["preview_rules"],
                sovereign_regions=frozenset(arm["sovereign_regions"]),
            ),
            orchestrate_seconds=float(found.get("orchestrate_seconds", 30.0)),
        )


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
        options: dict[str, Any] = {
            "host": settings.host,
            "port": settings.port,
            "ssl_certfile": str(cert) if cert else None,
            "ssl_keyfile": str(key) if key else None,
            "log_level": "info",
            "timeout_graceful_shutdown": 5,
        }
        if settings.workers > 1:
            catalog.close()
            os.environ[SETTINGS_VARIABLE] = settings.to_json()
            _supervise(settings.workers, options)
        else:
            app = create_app(
                catalog,
                admin_token=token,
                arm=settings.arm,
                orchestrate_seconds=settings.orchestrate_seconds or None,
            )
            uvicorn.run(app, **options)
    finally:
        catalog.close()


def _supervise(workers: int, options: dict[str, Any]) -> None:
    """Run ``workers`` worker processes on one socket until interrupted.

    The socket listens before the workers start (uvicorn's own ``run`` leaves that to
    them), so a client that connects as soon as the address is logged waits in the backlog
    instead of being refused.
    """
    from uvicorn import Config
    from uvicorn.supervisors import Multiprocess

    config = Config(
        "pyhotpatch.server._factory:create_from_environment",
        factory=True,
        workers=workers,
        **options,
    )
    sock = config.bind_socket()
    sock.listen(config.backlog)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _stored(data_dir: Path) -> str | None:
    try:
        return (data_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
