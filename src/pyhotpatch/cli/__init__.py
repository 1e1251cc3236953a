"""The ``hotpatch`` command line."""

from pyhotpatch.cli._app import app, main

__all__ = ["app", "main"]
