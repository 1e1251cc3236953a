"""Releases for catalog tests: a small service stack's wheels, locks and hotpatches."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from pyhotpatch.build import build
from pyhotpatch.catalog import ArtifactRef, Catalog, Kind, PublishRequest
from support import make_wheel


def when(text: str) -> datetime:
    """An aware UTC datetime from ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM``."""
    fmt = "%Y-%m-%dT%H:%M" if "T" in text else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def svc(root: Path, version: str, body: str = "return x") -> Path:
    """A wheel of the ``svc`` service: one function whose body the fixes change."""
    code = f"def handle(x):\n    {body}\n\nclass Box:\n    __slots__ = ('a',)\n"
    return make_wheel(root, "svc", version, {"svc/__init__.py": code})


def dep(root: Path, version: str, body: str = "return s") -> Path:
    """A wheel of ``dep``, a library the service depends on."""
    return make_wheel(root, "dep", version, {"dep/__init__.py": f"def parse(s):\n    {body}\n"})


def svc_new_layout(root: Path, version: str) -> Path:
    """A fix to ``svc`` that changes a class layout: the builder refuses it."""
    code = "def handle(x):\n    return x\n\nclass Box:\n    __slots__ = ('a', 'b')\n"
    return make_wheel(root, "svc", version, {"svc/__init__.py": code})


class Publisher:
    """Uploads files to a catalog and publishes them, the way the API does."""

    def __init__(self, catalog: Catalog, root: Path) -> None:
        self.catalog = catalog
        self.root = root

    def ref(self, path: Path, role: str) -> ArtifactRef:
        sha, _ = self.catalog.blobs.put_file(path)
        return ArtifactRef(path.name, role, sha)

    def baseline(
        self,
        kb: str,
        wheels: list[Path],
        at: str,
        kind: Kind = Kind.PLANNED_BASELINE,
        classifications: tuple[str, ...] = ("UpdateRollUp",),
        lock_text: str | None = None,
    ) -> PublishRequest:
        lines = []
        for wheel in wheels:
            name, version = wheel.name.split("-")[:2]
            lines.append(
                f"{name}=={version} --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
            )
        lock = self.root / f"{kb}.lock"
        lock.write_text(lock_text if lock_text is not None else "\n".join(lines) + "\n")
        refs = (self.ref(lock, "lock"), *(self.ref(w, "wheel") for w in wheels))
        return PublishRequest(
            product="pyhotpatch-demo",
            kind=kind,
            artifacts=refs,
            kb=kb,
            title=f"{kb} baseline",
            classifications=classifications,
            published=when(at),
        )

    def hotpatch(
        self, kb: str, pairs: list[tuple[Path, Path]], at: str, classification: str = "Security"
    ) -> PublishRequest:
        from pyhotpatch.package import Manifest, write_package

        targets = []
        sources: dict[str, str] = {}
        for old, new in pairs:
            result = build(str(old), str(new), patch_id=kb, classification=classification)
            targets.extend(result.manifest.targets)
            sources.update(result.sources)
        manifest = Manifest(
            id=kb, title=f"{kb} fix", classification=classification, targets=tuple(targets)
        )
        package = self.root / f"{kb}.hotpatch"
        write_package(package, manifest, sources)
        return PublishRequest(
            product="pyhotpatch-demo",
            kind=Kind.HOTPATCH,
            artifacts=(self.ref(package, "hotpatch"),),
            published=when(at),
        )
