"""The catalog: products, published releases and their artifacts, behind one object.

``Catalog`` keeps its rows in the control plane's database, its artifacts in a
content-addressed store and, for every artifact it publishes, a TUF target signed
in the same transaction as the release row, so a release is either published and
signed or not there at all. Publishing goes through the rules in ``_rules``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from pyhotpatch.catalog import _rules
from pyhotpatch.catalog._blobs import BlobStore
from pyhotpatch.catalog._calendar import (
    DEFAULT_BASELINE_MONTHS,
    MonthEntry,
    calendar,
    check_baseline_months,
    next_baseline_release,
)
from pyhotpatch.catalog._lock import Pin, parse_lock
from pyhotpatch.catalog._model import (
    SEVERITIES,
    Artifact,
    Image,
    Kind,
    Product,
    Release,
    check_advisories,
    check_classifications,
    check_kb,
    utc,
)
from pyhotpatch.catalog._products import DEFAULT_PRODUCTS
from pyhotpatch.catalog._tuf_repo import SigningRepository, TufSettings, target_path, target_spec
from pyhotpatch.clock import Clock, system_clock
from pyhotpatch.errors import CatalogError, NotFound, PackageError, PublishRefused
from pyhotpatch.package import Manifest, read_package
from pyhotpatch.storage import default_url, open_database, serialized
from pyhotpatch.storage._tables import artifacts, products, releases, settings

_REBOOT = {
    Kind.HOTPATCH: "NeverReboots",
    Kind.PLANNED_BASELINE: "AlwaysRequiresReboot",
    Kind.UNPLANNED_BASELINE: "AlwaysRequiresReboot",
    Kind.OTHER_UPDATE: "CanRequestReboot",
}


def default_data_dir() -> Path:
    """Where the control plane keeps its database, artifacts and keys unless told otherwise."""
    explicit = os.environ.get("PYHOTPATCH_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "pyhotpatch"


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact already uploaded to the store, named for a release."""

    name: str
    role: str
    sha256: str


@dataclass(frozen=True)
class PublishRequest:
    """What a publisher asks for.

    A hotpatch's KB id, title, classification and CVEs default to its package's.
    """

    product: str
    kind: Kind
    artifacts: tuple[ArtifactRef, ...]
    kb: str | None = None
    title: str | None = None
    classifications: tuple[str, ...] = ()
    severity: str = "Unspecified"
    cves: tuple[str, ...] = ()
    published: datetime | None = None
    baseline: str | None = None
    reboot_behavior: str | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, body: Any) -> PublishRequest:
        """Validate an API body (``kbId``, ``product``, ``kind``, ``artifacts``…)."""
        if not isinstance(body, dict):
            raise CatalogError("the publish request must be a JSON object")
        allowed = {
            "kbId",
            "product",
            "kind",
            "name",
            "classifications",
            "severity",
            "cves",
            "publishedDate",
            "baseline",
            "rebootBehavior",
            "notes",
            "artifacts",
        }
        extra = sorted(set(body) - allowed)
        if extra:
            raise CatalogError(f"unknown field {extra[0]!r} in the publish request")
        try:
            kind = Kind(body.get("kind"))
        except ValueError:
            raise CatalogError(
                f"kind must be one of {', '.join(k.value for k in Kind)}, not {body.get('kind')!r}"
            ) from None
        refs = []
        for item in _list(body, "artifacts"):
            if not isinstance(item, dict) or set(item) - {"name", "role", "sha256"}:
                raise CatalogError("each artifact is an object with name, role and sha256")
            refs.append(ArtifactRef(_str(item, "name"), _str(item, "role"), _str(item, "sha256")))
        published = body.get("publishedDate")
        when = None
        if published is not None:
            if not isinstance(published, str):
                raise CatalogError("publishedDate must be an ISO 8601 string")
            try:
                when = utc(datetime.fromisoformat(published.replace("Z", "+00:00")))
            except ValueError:
                raise CatalogError(f"publishedDate {published!r} is not ISO 8601") from None
        return cls(
            product=_str(body, "product"),
            kind=kind,
            artifacts=tuple(refs),
            kb=_opt_str(body, "kbId"),
            title=_opt_str(body, "name"),
            classifications=tuple(_list(body, "classifications")),
            severity=_opt_str(body, "severity") or "Unspecified",
            cves=tuple(_list(body, "cves")),
            published=when,
            baseline=_opt_str(body, "baseline"),
            reboot_behavior=_opt_str(body, "rebootBehavior"),
            notes=tuple(_list(body, "notes")),
        )


class Catalog:
    """Products and releases of one control plane, with rules enforced on publish."""

    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        signing: SigningRepository,
        clock: Clock = system_clock,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.signing = signing
        self.clock = clock
        self._seed()

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        clock: Clock = system_clock,
        tuf: TufSettings | None = None,
    ) -> Catalog:
        """The catalog kept in ``data_dir``, created with fresh signing keys on first use.

        The directory holds the artifacts, the keys and, unless ``url`` names
        another database, the SQLite database.
        """
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = open_database(url or default_url(root))
        signing = SigningRepository(engine, root / "keys", clock, tuf)
        signing.initialize()
        return cls(engine, BlobStore(root / "artifacts"), signing, clock)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def _seed(self) -> None:
        with self.engine.begin() as conn:
            known = set(conn.scalars(select(products.c.name)))
            for product in DEFAULT_PRODUCTS:
                if product.name not in known:
                    conn.execute(insert(products).values(**_product_row(product)))

    # products

    def products(self) -> list[Product]:
        """Every product, by name."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(products).order_by(products.c.name)).mappings()
            return [_product(row) for row in rows]

    def product(self, name: str) -> Product:
        """The product called ``name``."""
        for product in self.products():
            if product.name == name:
                return product
        raise NotFound(f"no product called {name!r}")

    def product_for_image(self, publisher: str, offer: str, sku: str) -> Product | None:
        """The product a machine created from this image runs, if the catalog knows it."""
        for product in self.products():
            if any(image.matches(publisher, offer, sku) for image in product.images):
                return product
        return None

    def add_product(self, product: Product) -> None:
        """Add a product, or replace the one with the same name."""
        with self.engine.begin() as conn:
            serialized(conn, "catalog")
            row = _product_row(product)
            if conn.execute(select(products.c.name).where(products.c.name == product.name)).first():
                conn.execute(update(products).where(products.c.name == product.name).values(**row))
            else:
                conn.execute(insert(products).values(**row))

    # settings

    def baseline_months(self) -> tuple[int, ...]:
        """The months planned baselines ship in (January, April, July, October unless set)."""
        with self.engine.connect() as conn:
            value = conn.scalar(select(settings.c.value).where(settings.c.key == "baselineMonths"))
        return check_baseline_months(value) if value else DEFAULT_BASELINE_MONTHS

    def set_baseline_months(self, months: Iterable[int]) -> tuple[int, ...]:
        """Change the months planned baselines ship in; releases already published stay as they are."""
        checked = check_baseline_months(months)
        with self.engine.begin() as conn:
            serialized(conn, "catalog")
            where = settings.c.key == "baselineMonths"
            if conn.execute(select(settings.c.key).where(where)).first():
                conn.execute(update(settings).where(where).values(value=list(checked)))
            else:
                conn.execute(insert(settings).values(key="baselineMonths", value=list(checked)))
        return checked

    # releases

    def releases(
        self, *, product: str | None = None, kind: Kind | None = None, year: int | None = None
    ) -> list[Release]:
        """Published releases, oldest first, optionally of one product, kind or year."""
        with self.engine.connect() as conn:
            return _releases(conn, product=product, kind=kind, year=year)

    def release(self, kb: str) -> Release:
        """The release with this KB id."""
        with self.engine.connect() as conn:
            found = _releases(conn, kb=check_kb(kb))
        if not found:
            raise NotFound(f"no release {kb}")
        return found[0]

    def current_baseline(self, product: str) -> Release | None:
        """The product's newest baseline: what hotpatches must build on now."""
        with self.engine.connect() as conn:
            return _current_baseline(conn, product)

    def lock(self, kb: str) -> dict[str, Pin]:
        """The pins of a baseline's lock file."""
        release = self.release(kb)
        return self._lock_of(release)

    def calendar(self, year: int, *, product: str | None = None) -> list[MonthEntry]:
        """The year's plan with the releases published in it, month by month."""
        if product is not None:
            self.product(product)
        return calendar(year, self.releases(product=product), self.baseline_months())

    def artifact_path(self, release: Release, name: str) -> Path:
        """Where the named artifact of a release is stored."""
        for artifact in release.artifacts:
            if artifact.name == name:
                return self.blobs.path(artifact.sha256)
        raise NotFound(f"release {release.kb} has no artifact {name!r}")

    # publishing

    def publish(self, request: PublishRequest) -> Release:
        """Publish a release after checking every rule; ``PublishRefused`` lists what is wrong.

        Publishing the same release again returns it unchanged, so a publisher that
        lost the answer can simply retry.
        """
        product = self.product(request.product)
        now = self.clock()
        manifest = self._manifest(request)
        release = self._draft(request, manifest, now)
        pins = self._pins(release) if release.kind.is_baseline else None
        with self.engine.begin() as conn:
            serialized(conn, "catalog")
            existing = _releases(conn, kb=release.kb)
            if existing:
                return self._same_or_refuse(existing[0], release)
            baseline = _current_baseline(conn, product.name)
            previous = _latest_hotpatch(conn, baseline) if baseline else None
            proposal = _rules.Proposal(
                release=release,
                product=product,
                now=now,
                baseline_months=self._months(conn),
                pins=pins,
                manifest=manifest,
                baseline=baseline,
                baseline_pins=self._lock_of(baseline) if baseline else {},
                previous=previous,
                previous_manifest=self._package_manifest(previous) if previous else None,
                older_baselines=self._older_baselines(conn, product.name, baseline),
            )
            reasons = _rules.refusals(proposal)
            if reasons:
                raise PublishRefused(reasons)
            release = self._place(release, baseline, previous, proposal.baseline_months)
            self._insert(conn, release)
            self._supersede(conn, release, baseline, previous)
            self.signing.add_targets(conn, [target_spec(release, a) for a in release.artifacts])
        return self.release(release.kb)

    def _manifest(self, request: PublishRequest) -> Manifest | None:
        if request.kind is not Kind.HOTPATCH:
            return None
        packages = [a for a in request.artifacts if a.role == "hotpatch"]
        if len(packages) != 1:
            raise PublishRefused(
                [
                    f"a hotpatch release carries exactly one artifact of role 'hotpatch', not {len(packages)}"
                ]
            )
        path = self._blob(packages[0].sha256)
        try:
            return read_package(path).manifest
        except PackageError as exc:
            raise PublishRefused(
                [f"{packages[0].name} is not a valid hotpatch package: {exc}"]
            ) from None

    def _blob(self, sha256: str) -> Path:
        path = self.blobs.path(sha256)
        if not path.is_file():
            raise CatalogError(f"artifact {sha256} has not been uploaded")
        return path

    def _draft(self, request: PublishRequest, manifest: Manifest | None, now: datetime) -> Release:
        kb = request.kb or (manifest.id if manifest else None)
        if kb is None:
            raise CatalogError("a release needs a KB id (kbId)")
        check_kb(kb)
        classifications = request.classifications or (
            (manifest.classification,) if manifest else ()
        )
        if request.severity not in SEVERITIES:
            raise CatalogError(f"severity must be one of {', '.join(SEVERITIES)}")
        cves = request.cves or (manifest.cves if manifest else ())
        title = request.title or (manifest.title if manifest else "")
        if not title.strip():
            raise CatalogError(f"{kb} needs a title (name)")
        if len(title) > 400:
            raise CatalogError(f"{kb}'s title is longer than 400 characters")
        reboot = request.reboot_behavior or _REBOOT[request.kind]
        if reboot != _REBOOT[request.kind] and request.kind is not Kind.OTHER_UPDATE:
            raise CatalogError(
                f"a {request.kind.value} release is {_REBOOT[request.kind]}, not {reboot}"
            )
        if reboot not in _REBOOT.values():
            raise CatalogError(f"unknown rebootBehavior {reboot!r}")
        published = utc(request.published) if request.published else now
        arts = tuple(
            Artifact(a.name, a.role, a.sha256, self._blob(a.sha256).stat().st_size)
            for a in request.artifacts
        )
        return Release(
            kb=kb,
            product=request.product,
            kind=request.kind,
            title=title,
            classifications=check_classifications(classifications),
            published=published,
            baseline=request.baseline,
            sequence=0,
            reboot_behavior=reboot,
            severity=request.severity,
            cves=check_advisories(tuple(cves)),
            artifacts=arts,
            notes=tuple(str(n)[:2000] for n in request.notes[:200]),
        )

    def _pins(self, release: Release) -> dict[str, Pin] | None:
        locks = [a for a in release.artifacts if a.role == "lock"]
        if len(locks) != 1:
            return None
        try:
            text = self.blobs.read(locks[0].sha256).decode("utf-8")
        except UnicodeDecodeError:
            raise PublishRefused([f"lock file {locks[0].name} is not UTF-8 text"]) from None
        try:
            return parse_lock(text)
        except CatalogError as exc:
            raise PublishRefused([f"{locks[0].name}: {exc}"]) from None

    def _lock_of(self, release: Release) -> dict[str, Pin]:
        pins = self._pins(release)
        if pins is None:
            raise CatalogError(f"{release.kb} is not a baseline with a lock file")
        return pins

    def _package_manifest(self, release: Release) -> Manifest:
        for artifact in release.artifacts:
            if artifact.role == "hotpatch":
                return read_package(self.blobs.path(artifact.sha256)).manifest
        raise CatalogError(f"{release.kb} has no hotpatch package")

    def _months(self, conn: Connection) -> tuple[int, ...]:
        value = conn.scalar(select(settings.c.value).where(settings.c.key == "baselineMonths"))
        return check_baseline_months(value) if value else DEFAULT_BASELINE_MONTHS

    def _older_baselines(
        self, conn: Connection, product: str, current: Release | None
    ) -> tuple[tuple[Release, dict[str, Pin]], ...]:
        older = [
            r
            for r in reversed(_releases(conn, product=product))
            if r.kind.is_baseline and current is not None and r.kb != current.kb
        ]
        return tuple((r, self._lock_of(r)) for r in older[:12])

    def _same_or_refuse(self, existing: Release, release: Release) -> Release:
        same = (
            existing.product == release.product
            and existing.kind == release.kind
            and sorted((a.name, a.sha256) for a in existing.artifacts)
            == sorted((a.name, a.sha256) for a in release.artifacts)
        )
        if not same:
            raise PublishRefused([f"{release.kb} is already published with other content"])
        return existing

    def _place(
        self,
        release: Release,
        baseline: Release | None,
        previous: Release | None,
        months: Sequence[int],
    ) -> Release:
        published = release.published
        if release.kind is Kind.HOTPATCH:
            assert baseline is not None
            sequence = previous.sequence + 1 if previous else 1
            return replace(release, baseline=baseline.kb, sequence=sequence, available=published)
        if release.kind.is_baseline:
            replaces = None
            if release.kind is Kind.UNPLANNED_BASELINE and published.month not in months:
                replaces = f"{published.year:04d}-{published.month:02d}"
            return replace(release, baseline=release.kb, available=published, replaces=replaces)
        return replace(
            release,
            baseline=baseline.kb if baseline else None,
            available=next_baseline_release(published, months),
        )

    def _insert(self, conn: Connection, release: Release) -> None:
        conn.execute(
            insert(releases).values(
                kb=release.kb,
                product=release.product,
                kind=release.kind.value,
                title=release.title,
                classifications=list(release.classifications),
                severity=release.severity,
                cves=list(release.cves),
                published=release.published,
                available=release.available or release.published,
                baseline=release.baseline,
                sequence=release.sequence,
                reboot_behavior=release.reboot_behavior,
                replaces=release.replaces,
                superseded_by=None,
                notes=list(release.notes),
                created=self.clock(),
            )
        )
        for artifact in release.artifacts:
            conn.execute(
                insert(artifacts).values(
                    release=release.kb,
                    name=artifact.name,
                    role=artifact.role,
                    sha256=artifact.sha256,
                    size=artifact.size,
                    target_path=target_path(release.product, release.kb, artifact.name),
                )
            )

    def _supersede(
        self, conn: Connection, release: Release, baseline: Release | None, previous: Release | None
    ) -> None:
        if release.kind is Kind.HOTPATCH and previous is not None:
            conn.execute(
                update(releases)
                .where(releases.c.kb == previous.kb)
                .values(superseded_by=release.kb)
            )
        elif release.kind.is_baseline and baseline is not None:
            conn.execute(
                update(releases)
                .where(releases.c.product == release.product)
                .where(releases.c.superseded_by.is_(None))
                .where(releases.c.kb != release.kb)
                .where(releases.c.kind != Kind.OTHER_UPDATE.value)
                .values(superseded_by=release.kb)
            )


def _current_baseline(conn: Connection, product: str) -> Release | None:
    found = [r for r in _releases(conn, product=product) if r.kind.is_baseline]
    return found[-1] if found else None


def _latest_hotpatch(conn: Connection, baseline: Release) -> Release | None:
    found = [
        r
        for r in _releases(conn, product=baseline.product, kind=Kind.HOTPATCH)
        if r.baseline == baseline.kb
    ]
    return found[-1] if found else None


def _releases(
    conn: Connection,
    *,
    kb: str | None = None,
    product: str | None = None,
    kind: Kind | None = None,
    year: int | None = None,
) -> list[Release]:
    query = select(releases).order_by(releases.c.published, releases.c.kb)
    if kb is not None:
        query = query.where(releases.c.kb == kb)
    if product is not None:
        query = query.where(releases.c.product == product)
    if kind is not None:
        query = query.where(releases.c.kind == kind.value)
    rows = list(conn.execute(query).mappings())
    if year is not None:
        rows = [r for r in rows if r["published"].year == year or r["available"].year == year]
    files: dict[str, list[Artifact]] = {}
    wanted = [r["kb"] for r in rows]
    if wanted:
        query = select(artifacts).where(artifacts.c.release.in_(wanted)).order_by(artifacts.c.name)
        for a in conn.execute(query).mappings():
            files.setdefault(a["release"], []).append(
                Artifact(a["name"], a["role"], a["sha256"], a["size"])
            )
    return [
        Release(
            kb=r["kb"],
            product=r["product"],
            kind=Kind(r["kind"]),
            title=r["title"],
            classifications=tuple(r["classifications"]),
            published=r["published"],
            baseline=r["baseline"],
            sequence=r["sequence"],
            reboot_behavior=r["reboot_behavior"],
            severity=r["severity"],
            cves=tuple(r["cves"]),
            artifacts=tuple(files.get(r["kb"], ())),
            available=r["available"],
            replaces=r["replaces"],
            superseded_by=r["superseded_by"],
            notes=tuple(r["notes"]),
            halted=r["halted"],
            halt_reason=r["halt_reason"],
        )
        for r in rows
    ]


def _product_row(product: Product) -> dict[str, Any]:
    return {
        "name": product.name,
        "title": product.title,
        "hotpatch": product.hotpatch,
        "upgrade_to": product.upgrade_to,
        "images": [image.to_json() for image in product.images],
    }


def _product(row: Any) -> Product:
    return Product(
        name=row["name"],
        title=row["title"],
        images=tuple(Image(i["publisher"], i["offer"], i["sku"]) for i in row["images"]),
        hotpatch=bool(row["hotpatch"]),
        upgrade_to=row["upgrade_to"],
    )


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
        raise CatalogError(f"{key} must be a list")
    if len(value) > 1000:
        raise CatalogError(f"{key} has more than 1000 items")
    return value


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogError(f"{key} must be a non-empty string")
    return value


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise CatalogError(f"{key} must be a string")
    return value
