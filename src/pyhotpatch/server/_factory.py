"""The application of one worker process, when ``hotpatch server --workers N`` runs several.

uvicorn starts each worker by importing ``create_from_environment`` and calling it. The
settings come from the parent as JSON in an environment variable; the parent has already
migrated the database and created the TUF repository, so a worker only opens them. Each
worker keeps its own token cache, work notifier and heartbeat writer, and its own TUF
refresh thread (re-signing is serialized in the database, so they never sign twice).
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from pyhotpatch.catalog import Catalog, SigningRepository
from pyhotpatch.catalog._blobs import BlobStore
from pyhotpatch.server._app import create_app
from pyhotpatch.server._auth import admin_token
from pyhotpatch.server._serve import SETTINGS_VARIABLE, ServerSettings
from pyhotpatch.storage import default_url, open_database


def create_from_environment() -> FastAPI:
    """The control plane's application, built from the settings ``serve`` left in the environment."""
    text = os.environ.get(SETTINGS_VARIABLE)
    if not text:
        raise RuntimeError(f"{SETTINGS_VARIABLE} is not set: start workers with `hotpatch server`")
    settings = ServerSettings.from_json(text)
    root = settings.data_dir
    engine = open_database(settings.db_url or default_url(root), migrate=False)
    signing = SigningRepository(engine, root / "keys", settings=settings.tuf)
    catalog = Catalog(engine, BlobStore(root / "artifacts"), signing)
    return create_app(
        catalog,
        admin_token=admin_token(root),
        arm=settings.arm,
        orchestrate_seconds=settings.orchestrate_seconds or None,
    )
