"""HTTP routes that serve the signed TUF repository to node agents.

Agents download metadata and artifacts here without authenticating: integrity and
freshness come from the TUF signatures they verify, not from the channel. Metadata
comes from ``SigningRepository``; artifacts come from the ``BlobStore`` under the
consistent-snapshot names ngclient asks for (``<dirs>/<sha256>.<basename>``).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import Engine, select

from pyhotpatch.catalog._blobs import BlobStore
from pyhotpatch.catalog._model import SHA256_RE
from pyhotpatch.catalog._tuf_repo import SigningRepository
from pyhotpatch.storage._tables import artifacts

#: the URL prefix of the signed metadata; agents append the file name
METADATA_PREFIX = "/hotpatch/tuf/metadata/"
#: the URL prefix of the signed artifacts; agents append ``<dirs>/<sha256>.<basename>``
TARGETS_PREFIX = "/hotpatch/tuf/targets/"

_MUTABLE = frozenset({"root.json", "timestamp.json"})
_NO_STORE = "no-store"
_IMMUTABLE = "public, max-age=31536000, immutable"


def tuf_router(repository: SigningRepository, blobs: BlobStore, engine: Engine) -> APIRouter:
    """A router serving ``repository``'s metadata and the artifacts it signs."""
    router = APIRouter()

    @router.get(METADATA_PREFIX + "{name}")
    def get_metadata(name: str) -> Response:
        """One metadata file, by the name ngclient asks for."""
        data = repository.metadata(name)
        if data is None:
            return _not_found(f"no TUF metadata file named {name!r}")
        cache = _NO_STORE if name in _MUTABLE else _IMMUTABLE
        return Response(data, media_type="application/json", headers={"Cache-Control": cache})

    @router.get(TARGETS_PREFIX + "{path:path}")
    def get_target(path: str) -> Response:
        """One artifact, by its target path with its sha256 before the file name."""
        folder, slash, basename = path.rpartition("/")
        digest, dot, name = basename.partition(".")
        if not dot or not name or not SHA256_RE.match(digest):
            return _not_found(f"{path!r} is not a signed target name (<dirs>/<sha256>.<name>)")
        target = f"{folder}{slash}{name}"
        with engine.connect() as connection:
            row = connection.execute(
                select(artifacts.c.sha256).where(
                    artifacts.c.target_path == target, artifacts.c.sha256 == digest
                )
            ).first()
        blob = blobs.path(digest)
        if row is None or not blob.is_file():
            return _not_found(f"no artifact {target} with sha256 {digest}")
        return FileResponse(
            blob, media_type="application/octet-stream", headers={"Cache-Control": _IMMUTABLE}
        )

    return router


def _not_found(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "NotFound", "message": message}},
        status_code=404,
        headers={"Cache-Control": _NO_STORE},
    )
