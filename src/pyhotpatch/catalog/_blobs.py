"""A content-addressed store for release artifacts on disk.

Each blob is stored once under its sha256 (``sha256/ab/abcd…``), written to a
temporary file, flushed and renamed into place, so a crash never leaves a partial
blob under a valid name and concurrent writers of the same content agree.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pyhotpatch.catalog._model import SHA256_RE
from pyhotpatch.errors import CatalogError

_CHUNK = 1 << 20


class BlobStore:
    """Artifacts by digest under ``root``; directories are created 0700 on first use."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it is there)."""
        if not SHA256_RE.match(sha256):
            raise CatalogError(f"{sha256!r} is not a sha256 digest (64 lowercase hex digits)")
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path(sha256).is_file()

    def put(self, chunks: Iterable[bytes], *, expect: str | None = None) -> tuple[str, int]:
        """Store a stream; its digest and size. With ``expect``, a different digest is refused."""
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            if expect is not None and sha != expect:
                raise CatalogError(f"content has sha256 {sha}, not {expect}: upload refused")
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(tmp, final)
            tmp = ""
            return sha, size
        finally:
            if tmp:
                os.unlink(tmp)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; its digest and size."""
        return self.put([data])

    def put_file(
        self, path: str | os.PathLike[str], *, expect: str | None = None
    ) -> tuple[str, int]:
        """Store a copy of the file at ``path``; its digest and size."""
        with open(path, "rb") as handle:
            return self.put(iter(lambda: handle.read(_CHUNK), b""), expect=expect)

    def read(self, sha256: str) -> bytes:
        """The blob's bytes, checked against its digest on the way out."""
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise CatalogError(f"no artifact with sha256 {sha256} in the store") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CatalogError(f"stored artifact {sha256} is corrupt (its content changed on disk)")
        return data
