"""CVE-2023-30861 (flask 2.3.1 -> 2.3.2): refreshed session cookie sent without ``Vary: Cookie``.

With a permanent session and ``SESSION_REFRESH_EACH_REQUEST`` (the default), Flask re-sends the
session cookie on every response. Before 2.3.2 it added ``Vary: Cookie`` only when the view had
touched the session, so a caching proxy could store a response carrying one user's session
cookie and serve it to others. The check logs in on the app built in ``prepare()`` and then
fetches a page that ignores the session: the bug is ``Set-Cookie`` without ``Vary: Cookie``. It
drives the app with werkzeug's own test ``Client`` (Flask 2.3's client breaks on werkzeug 3).
"""

from __future__ import annotations

import flask
from werkzeug.test import Client


def prepare() -> object:
    app = flask.Flask(__name__)
    app.secret_key = "corpus-check-secret"

    @app.get("/login")
    def login() -> str:
        flask.session["user"] = "alice"
        flask.session.permanent = True
        return "in"

    @app.get("/public")
    def public() -> str:
        return "public page"

    return app


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, flask.Flask)
    client = Client(ctx)
    if "Cookie" not in client.get("/login").headers.get("Vary", ""):
        raise RuntimeError("login response should vary on Cookie")
    response = client.get("/public")
    if "Set-Cookie" not in response.headers:
        raise RuntimeError("permanent session cookie was not refreshed")
    return "Cookie" not in response.headers.get("Vary", "")
