"""Child of the latency benchmark: a small Flask app with sessions, served by werkzeug.

``python flask_service.py PORT`` enables the runtime, listens on 127.0.0.1:PORT (threaded) and
prints ``ready``. ``/login`` starts a permanent session, ``/public`` ignores it (the page of
CVE-2023-30861: before Flask 2.3.2 its refreshed cookie went out without ``Vary: Cookie``).
"""

from __future__ import annotations

import sys

import flask
from werkzeug.serving import make_server

import pyhotpatch


def create_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = "benchmark-secret"

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.get("/login")
    def login() -> str:
        flask.session["user"] = "alice"
        flask.session.permanent = True
        return "in"

    @app.get("/public")
    def public() -> str:
        return "public page"

    return app


def main() -> None:
    pyhotpatch.enable()
    server = make_server("127.0.0.1", int(sys.argv[1]), create_app(), threaded=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
