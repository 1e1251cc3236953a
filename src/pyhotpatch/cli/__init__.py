"""The ``hotpatch`` command line."""

from pyhotpatch.cli import _server, _simulate  # noqa: F401  (register their commands)
from pyhotpatch.cli._agent import agent_app
from pyhotpatch.cli._app import app, main
from pyhotpatch.cli._release import release_app
from pyhotpatch.cli._tokens import token_app

app.add_typer(release_app)
app.add_typer(token_app)
app.add_typer(agent_app)

__all__ = ["app", "main"]
