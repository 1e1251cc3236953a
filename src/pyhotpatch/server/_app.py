"""The FastAPI application of the control plane."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from pyhotpatch.catalog import Catalog
from pyhotpatch.server import _errors
from pyhotpatch.server._agent_routes import install_agent_routes
from pyhotpatch.server._auth import Authenticator, TokenStore
from pyhotpatch.server._catalog_routes import catalog_router
from pyhotpatch.server._openapi import document_bodies
from pyhotpatch.server._token_routes import token_router
from pyhotpatch.server._tuf_routes import tuf_router
from pyhotpatch.server.arm._compute import compute_router
from pyhotpatch.server.arm._context import ArmContext, ArmSettings
from pyhotpatch.server.arm._features import features_router
from pyhotpatch.server.arm._groups import groups_router
from pyhotpatch.server.arm._middleware import ArmMiddleware
from pyhotpatch.server.arm._providers import providers_router
from pyhotpatch.server.arm._subscriptions import subscriptions_router
from pyhotpatch.server.orchestrator._fleet import backfill
from pyhotpatch.server.orchestrator._orchestrator import Orchestrator
from pyhotpatch.server.orchestrator._routes import orchestrator_router
from pyhotpatch.server.portal import install_portal

log = logging.getLogger("pyhotpatch.server")


def create_app(
    catalog: Catalog,
    *,
    admin_token: str,
    refresh_seconds: float = 60.0,
    arm: ArmSettings | None = None,
    orchestrate_seconds: float | None = 30.0,
) -> FastAPI:
    """The control plane's API around ``catalog``.

    While it runs, a background thread re-signs TUF metadata before it expires
    (checked every ``refresh_seconds``), so agents never see a frozen repository, and
    another runs the orchestrator's passes at least every ``orchestrate_seconds`` (None:
    only when an administrator asks, ``POST /hotpatch/orchestrator/passes``).
    """
    orchestrator = Orchestrator(catalog.engine, catalog.clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        with catalog.engine.begin() as conn:
            added = backfill(conn, catalog.clock())
        if added:
            log.info("copied %d machines into the orchestrator's fleet", added)
        workers = [
            threading.Thread(
                target=_keep_fresh,
                args=(catalog, stop, refresh_seconds),
                name="tuf-refresh",
                daemon=True,
            )
        ]
        if orchestrate_seconds is not None:
            workers.append(
                threading.Thread(
                    target=_orchestrate,
                    args=(orchestrator, stop, orchestrate_seconds),
                    name="orchestrator",
                    daemon=True,
                )
            )
        for worker in workers:
            worker.start()
        try:
            yield
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=10)

    app = FastAPI(
        title="pyhotpatch control plane",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    _errors.install(app)
    ctx = ArmContext(catalog.engine, catalog, catalog.clock, arm or ArmSettings())
    tokens = TokenStore(catalog.engine, catalog.clock)
    auth = Authenticator(tokens, admin_token)
    app.state.context = ctx
    app.state.tokens = tokens
    app.include_router(catalog_router(catalog, auth))
    app.include_router(token_router(tokens, auth, catalog.clock))
    app.include_router(tuf_router(catalog.signing, catalog.blobs, catalog.engine))
    app.include_router(subscriptions_router(ctx, auth))
    app.include_router(compute_router(ctx, auth))
    app.include_router(features_router(ctx, auth))  # before providers: more specific paths
    app.include_router(providers_router(ctx, auth))
    app.include_router(groups_router(ctx, auth))
    install_agent_routes(app, ctx, auth)  # agent protocol, patch operations; heartbeat first
    app.include_router(orchestrator_router(ctx, auth, orchestrator))
    app.state.orchestrator = orchestrator
    install_portal(app, catalog.clock)  # pages over this app's own API, with the user's token
    document_bodies(app)
    app.add_middleware(ArmMiddleware, engine=catalog.engine, clock=catalog.clock)
    return app


def _orchestrate(orchestrator: Orchestrator, stop: threading.Event, every: float) -> None:
    failing = False
    while True:
        wait = every
        try:
            upcoming = orchestrator.tick()
            wait = min(every, max((upcoming - orchestrator.clock()).total_seconds(), 1.0))
            if failing:
                log.info("orchestrator passes work again")
            failing = False
        except Exception:
            if not failing:
                log.exception("an orchestrator pass failed; retrying every %.0f s", every)
            failing = True
        if stop.wait(wait):
            return


def _keep_fresh(catalog: Catalog, stop: threading.Event, every: float) -> None:
    while True:
        try:
            renewed = catalog.signing.refresh()
            if renewed:
                log.info("re-signed TUF metadata: %s", ", ".join(renewed))
        except Exception:
            log.exception("re-signing TUF metadata failed; retrying in %.0f s", every)
        if stop.wait(every):
            return
