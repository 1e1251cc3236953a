"""How the CLI reaches a catalog: over HTTP to a control plane, or directly on its data.

``hotpatch release …`` talks to the server named by ``--server`` (or
``HOTPATCH_SERVER``) with a bearer token; without one, it opens the control
plane's own data directory, as an administrator on the control-plane host would.
Both answer with the API's JSON, so the commands render one shape.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.cli._profile import remote
from pyhotpatch.errors import HotpatchError


class CatalogAccess(Protocol):
    """What the release commands need from a catalog."""

    def products(self) -> list[dict[str, Any]]:
        """Every product."""

    def releases(
        self, *, product: str | None = None, kind: str | None = None, year: int | None = None
    ) -> list[dict[str, Any]]:
        """Published releases, oldest first."""

    def release(self, kb: str) -> dict[str, Any]:
        """One release."""

    def upload(self, path: Path) -> str:
        """Store a file as an artifact; its sha256."""

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a release whose artifacts are uploaded."""

    def calendar(self, year: int, product: str | None) -> dict[str, Any]:
        """The year's calendar as the API's JSON."""

    def calendar_svg(self, year: int, product: str | None) -> str:
        """The year's calendar as an SVG picture."""

    def fetch(self, sha256: str, dest: Path) -> Path:
        """Save an artifact to ``dest``."""

    def root(self) -> bytes:
        """The trusted TUF root agents bootstrap from."""

    def settings(self, baseline_months: list[int] | None) -> dict[str, Any]:
        """The catalog's settings, after changing the baseline months if given."""

    def close(self) -> None:
        """Let go of connections."""


def open_access(
    server: str | None, token: str | None, data_dir: Path | None, db: str | None
) -> CatalogAccess:
    """Remote access when a server is named or signed in to, else the local data directory."""
    local = data_dir is not None or db is not None
    if local and (server or os.environ.get("HOTPATCH_SERVER")):
        raise HotpatchError("give either --server or --data-dir/--db, not both")
    found = remote(server, local)
    if found is not None and found.server:
        return RemoteAccess(found.server, token or found.token, found.ca)
    return LocalAccess(data_dir, db)


class LocalAccess:
    """The catalog in a data directory, opened in this process."""

    def __init__(self, data_dir: Path | None, db: str | None) -> None:
        from pyhotpatch.catalog import Catalog

        self.catalog = Catalog.open(data_dir, url=db)

    def products(self) -> list[dict[str, Any]]:
        """Every product."""
        return [p.to_json() for p in self.catalog.products()]

    def releases(
        self, *, product: str | None = None, kind: str | None = None, year: int | None = None
    ) -> list[dict[str, Any]]:
        """Published releases, oldest first."""
        from pyhotpatch.catalog import Kind

        if product is not None:
            self.catalog.product(product)
        chosen = Kind(kind) if kind else None
        return [r.to_json() for r in self.catalog.releases(product=product, kind=chosen, year=year)]

    def release(self, kb: str) -> dict[str, Any]:
        """One release."""
        return self.catalog.release(kb).to_json()

    def upload(self, path: Path) -> str:
        """Store a file as an artifact; its sha256."""
        return self.catalog.blobs.put_file(path)[0]

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a release whose artifacts are uploaded."""
        from pyhotpatch.catalog import PublishRequest

        return self.catalog.publish(PublishRequest.from_json(body)).to_json()

    def calendar(self, year: int, product: str | None) -> dict[str, Any]:
        """The year's calendar as the API's JSON."""
        entries = self.catalog.calendar(year, product=product)
        return {
            "year": year,
            "baselineMonths": list(self.catalog.baseline_months()),
            "value": [e.to_json() for e in entries],
        }

    def calendar_svg(self, year: int, product: str | None) -> str:
        """The year's calendar as an SVG picture."""
        from pyhotpatch.catalog import render_svg

        entries = self.catalog.calendar(year, product=product)
        title = f"Hotpatch release calendar {year}" + (f" · {product}" if product else "")
        return render_svg(year, entries, title=title)

    def fetch(self, sha256: str, dest: Path) -> Path:
        """Save an artifact to ``dest``."""
        dest.write_bytes(self.catalog.blobs.read(sha256))
        return dest

    def root(self) -> bytes:
        """The trusted TUF root agents bootstrap from."""
        return self.catalog.signing.trusted_root()

    def settings(self, baseline_months: list[int] | None) -> dict[str, Any]:
        """The catalog's settings, after changing the baseline months if given."""
        if baseline_months is not None:
            self.catalog.set_baseline_months(baseline_months)
        return {"baselineMonths": list(self.catalog.baseline_months())}

    def close(self) -> None:
        """Let go of connections."""
        self.catalog.close()


class RemoteAccess:
    """A control plane's ``/hotpatch`` API over HTTP."""

    def __init__(self, server: str, token: str | None, ca: str | None = None) -> None:
        self.plane = ControlPlane(server, token, Path(ca) if ca else None)
        self._call = self.plane.call

    def products(self) -> list[dict[str, Any]]:
        """Every product."""
        return list(self._call("GET", "/hotpatch/products").json()["value"])

    def releases(
        self, *, product: str | None = None, kind: str | None = None, year: int | None = None
    ) -> list[dict[str, Any]]:
        """Published releases, oldest first."""
        params = {k: v for k, v in (("product", product), ("kind", kind), ("year", year)) if v}
        return list(self._call("GET", "/hotpatch/releases", params=params).json()["value"])

    def release(self, kb: str) -> dict[str, Any]:
        """One release."""
        return dict(self._call("GET", f"/hotpatch/releases/{kb}").json())

    def upload(self, path: Path) -> str:
        """Store a file as an artifact; its sha256."""
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        sha = digest.hexdigest()
        with open(path, "rb") as handle:
            self._call(
                "PUT",
                f"/hotpatch/artifacts/{sha}",
                content=handle,
                headers={"Content-Type": "application/octet-stream"},
            )
        return sha

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish a release whose artifacts are uploaded."""
        return dict(self._call("POST", "/hotpatch/releases", json=body).json())

    def calendar(self, year: int, product: str | None) -> dict[str, Any]:
        """The year's calendar as the API's JSON."""
        params: dict[str, Any] = {"year": year, **({"product": product} if product else {})}
        return dict(self._call("GET", "/hotpatch/calendar", params=params).json())

    def calendar_svg(self, year: int, product: str | None) -> str:
        """The year's calendar as an SVG picture."""
        params: dict[str, Any] = {"year": year, "format": "svg"}
        if product:
            params["product"] = product
        return str(self._call("GET", "/hotpatch/calendar", params=params).text)

    def fetch(self, sha256: str, dest: Path) -> Path:
        """Save an artifact to ``dest``, checking its digest."""
        data = self._call("GET", f"/hotpatch/artifacts/{sha256}").content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ApiCallError(0, "DigestMismatch", f"artifact {sha256} arrived corrupted", [])
        dest.write_bytes(data)
        return dest

    def root(self) -> bytes:
        """The TUF root the server serves (verify it out of band before trusting it)."""
        return bytes(self._call("GET", "/hotpatch/tuf/metadata/root.json").content)

    def settings(self, baseline_months: list[int] | None) -> dict[str, Any]:
        """The catalog's settings, after changing the baseline months if given."""
        if baseline_months is None:
            return dict(self._call("GET", "/hotpatch/settings").json())
        body = {"baselineMonths": baseline_months}
        return dict(self._call("PATCH", "/hotpatch/settings", json=body).json())

    def close(self) -> None:
        """Let go of connections."""
        self.plane.close()
