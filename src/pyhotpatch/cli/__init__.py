"""The ``hotpatch`` command line."""

from pyhotpatch.cli import _server  # noqa: F401  (registers ``hotpatch server``)
from pyhotpatch.cli._app import app, main
from pyhotpatch.cli._release import release_app

app.add_typer(release_app)

__all__ = ["app", "main"]
