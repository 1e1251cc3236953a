"""The control plane's HTTP server: catalog API, signed distribution, and what follows.

``create_app`` builds the FastAPI application around an open ``Catalog``; ``serve``
runs it under uvicorn the way ``hotpatch server`` does. Everything outside Azure's
own API lives under ``/hotpatch/…`` and answers errors in ARM's shape.
"""

from __future__ import annotations

from pyhotpatch.server._app import create_app
from pyhotpatch.server._serve import ServerSettings, serve

__all__ = ["ServerSettings", "create_app", "serve"]
