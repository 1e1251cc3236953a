"""The control plane's side of signed distribution: a TUF repository kept in the database.

Agents trust a release only if it is listed in TUF metadata signed by keys that
chain back to the root they shipped with. This module holds that repository: it
generates the signing keys (one PEM file per key in a private directory), writes
every version of ``root``, ``targets``, ``snapshot`` and ``timestamp`` into the
``tuf_metadata`` table, adds targets inside the transaction that publishes their
release (so a release and the metadata listing it commit together), re-signs
metadata before it expires and rotates keys. Old versions are kept forever, because
agents walk the ``N.root.json`` chain and consistent snapshots name versions.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

# both packages document these import paths but re-export the names without ``__all__``,
# which mypy --strict reads as private
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from sqlalchemy import Connection, Engine, insert, select
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from pyhotpatch.catalog._model import SHA256_RE, Artifact, Release, iso
from pyhotpatch.clock import Clock, system_clock
from pyhotpatch.errors import CatalogError
from pyhotpatch.storage._engine import serialized
from pyhotpatch.storage._tables import tuf_metadata

ROLES = ("root", "targets", "snapshot", "timestamp")
#: the name of the write lock every change to the signed metadata takes
LOCK = "tuf"

_DEFAULT_EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
_SERIALIZER = JSONSerializer(compact=True)
_NAME_RE = re.compile(r"^(?:([1-9][0-9]{0,9})\.)?(root|timestamp|snapshot|targets)\.json$")
_RETIRED = "retired"

_S = TypeVar("_S", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class TufSettings:
    """How many keys sign each role and how long each role's metadata stays valid.

    Roles left out of either mapping take the defaults: one key per role, and
    root 365 days, targets 90, snapshot 7, timestamp 1. A role is re-signed by
    ``SigningRepository.refresh`` once less than half of its lifetime remains.
    """

    thresholds: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 1))
    expiry: Mapping[str, timedelta] = field(default_factory=lambda: dict(_DEFAULT_EXPIRY))

    def __post_init__(self) -> None:
        for name, mapping in (("thresholds", self.thresholds), ("expiry", self.expiry)):
            unknown = set(mapping) - set(ROLES)
            if unknown:
                raise CatalogError(
                    f"TUF {name}: unknown role(s) {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}"
                )
        for role, count in self.thresholds.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise CatalogError(f"TUF threshold for {role} must be a positive integer")
        for role, lifetime in self.expiry.items():
            if lifetime <= timedelta(0):
                raise CatalogError(f"TUF expiry for {role} must be positive")

    def threshold(self, role: str) -> int:
        """The number of keys generated for ``role``, all of which must sign it."""
        return self.thresholds.get(role, 1)

    def lifetime(self, role: str) -> timedelta:
        """How long a freshly signed version of ``role`` stays valid."""
        return self.expiry.get(role, _DEFAULT_EXPIRY[role])


@dataclass(frozen=True)
class TargetSpec:
    """A file to list in the signed targets metadata, and the release fields agents act on.

    ``path`` is ``product/kb/filename``; ``custom`` is signed along with the digest,
    so an agent can trust fields such as the release's ``baseline``.
    """

    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any] = field(default_factory=dict)


def target_path(product: str, kb: str, name: str) -> str:
    """The TUF target path of artifact ``name`` of release ``kb`` of ``product``."""
    return f"{product}/{kb}/{name}"


def target_custom(release: Release, artifact: Artifact) -> dict[str, Any]:
    """The release fields signed with one of its artifacts, in the API's spelling.

    They are everything an agent needs to assess a machine (title, dates, classifications,
    baseline), so that an assessment rests on verified metadata alone.
    """
    return {
        "kbId": release.kb,
        "product": release.product,
        "kind": release.kind.value,
        "title": release.title,
        "publishedDate": iso(release.published),
        "availableDate": iso(release.available or release.published),
        "baseline": release.baseline,
        "sequence": release.sequence,
        "classifications": list(release.classifications),
        "severity": release.severity,
        "cves": list(release.cves),
        "rebootBehavior": release.reboot_behavior,
        "role": artifact.role,
        "name": artifact.name,
    }


def target_spec(release: Release, artifact: Artifact) -> TargetSpec:
    """The target that signs ``artifact`` of ``release``."""
    return TargetSpec(
        path=target_path(release.product, release.kb, artifact.name),
        length=artifact.size,
        sha256=artifact.sha256,
        custom=target_custom(release, artifact),
    )


class SigningRepository:
    """The TUF repository of the control plane: keys on disk, metadata in the database.

    Every write runs in a database transaction holding the ``tuf`` lock, so several
    threads or processes can publish and re-sign without losing a version.
    """

    def __init__(
        self,
        engine: Engine,
        keys_dir: Path,
        clock: Clock = system_clock,
        settings: TufSettings | None = None,
    ) -> None:
        self._engine = engine
        self.keys_dir = Path(keys_dir)
        self._clock = clock
        self.settings = settings or TufSettings()

    # -- lifecycle ---------------------------------------------------------------------

    def initialize(self) -> bool:
        """Create the keys and the first version of every role; False if already done.

        On a repository that already exists nothing changes, but every signing key
        the current root names must be present in ``keys_dir``: a missing one is a
        ``CatalogError`` now rather than at the first publish.
        """
        created: list[Path] = []
        try:
            with self._engine.begin() as connection:
                serialized(connection, LOCK)
                existing = self._latest(connection, Root)
                if existing is not None:
                    for role in ROLES:
                        self._signers(existing.signed, role)
                    return False
                now = self._now()
                root = Root(
                    version=1,
                    expires=now + self.settings.lifetime("root"),
                    consistent_snapshot=True,
                )
                for role in ROLES:
                    count = self.settings.threshold(role)
                    for _ in range(count):
                        root.add_key(self._new_key(created).public_key, role)
                    root.roles[role].threshold = count
                self._store(connection, self._signed(Metadata(root), root, "root"), now)
                targets = Targets(version=1, expires=now + self.settings.lifetime("targets"))
                self._store(connection, self._signed(Metadata(targets), root, "targets"), now)
                self._resign_snapshot(connection, root, now)
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise
        return True

    def add_targets(self, connection: Connection, targets: Sequence[TargetSpec]) -> None:
        """List ``targets`` in new signed metadata, inside the caller's transaction.

        The release rows and the metadata that lists them commit or roll back
        together. Signed targets are immutable: a path already signed with another
        digest or length is a ``CatalogError``. The same content again only updates
        its signed ``custom`` fields (and adding nothing new writes nothing).
        """
        serialized(connection, LOCK)
        now = self._now()
        root = self._require(connection, Root).signed
        previous = self._require(connection, Targets).signed
        listed = dict(previous.targets)
        changed = False
        for spec in targets:
            new = _target_file(spec)
            old = listed.get(spec.path)
            if old is not None and (
                old.length != new.length or old.hashes.get("sha256") != spec.sha256
            ):
                raise CatalogError(
                    f"target {spec.path} is already signed with sha256 {old.hashes.get('sha256')} "
                    f"and {old.length} bytes; signed targets are immutable, publish the new content "
                    "under a new path"
                )
            if old != new:
                listed[spec.path] = new
                changed = True
        if not changed:
            return
        successor = Targets(
            version=previous.version + 1,
            expires=now + self.settings.lifetime("targets"),
            targets=listed,
            delegations=previous.delegations,
        )
        self._store(connection, self._signed(Metadata(successor), root, "targets"), now)
        self._resign_snapshot(connection, root, now)

    def refresh(self) -> list[str]:
        """Re-sign every role with less than half of its lifetime left; the roles re-signed.

        A new targets version also needs a new snapshot and timestamp, and a new
        snapshot a new timestamp; those are included in the answer.
        """
        with self._engine.begin() as connection:
            serialized(connection, LOCK)
            now = self._now()
            due = {role for role in ROLES if self._due(connection, role, now)}
            done: list[str] = []
            root_md = self._require(connection, Root)
            root = root_md.signed
            if "root" in due:
                successor = copy.deepcopy(root)
                successor.version = root.version + 1
                successor.expires = now + self.settings.lifetime("root")
                self._store(connection, self._signed(Metadata(successor), root, "root"), now)
                root = successor
                done.append("root")
            if "targets" in due:
                self._resign_targets(connection, root, now)
                done += ["targets", "snapshot", "timestamp"]
            elif "snapshot" in due:
                self._resign_snapshot(connection, root, now)
                done += ["snapshot", "timestamp"]
            elif "timestamp" in due:
                self._resign_timestamp(connection, root, now)
                done.append("timestamp")
            return done

    def rotate(self, role: str, *, threshold: int | None = None) -> list[str]:
        """Replace the keys of ``role`` with ``threshold`` new ones; their keyids.

        A new root lists the new keys. It is signed by the previous root's keys (so
        agents trusting the old root accept it) and, when root itself rotates, by
        the new root keys too. The role's metadata, and what depends on it, is then
        re-signed with the new keys. The old private keys move to ``keys_dir/retired``.
        ``threshold`` defaults to the role's current threshold.
        """
        if role not in ROLES:
            raise CatalogError(f"cannot rotate keys of {role!r}: roles are {', '.join(ROLES)}")
        if threshold is not None and (
            not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1
        ):
            raise CatalogError(
                f"threshold for {role} must be a positive integer, not {threshold!r}"
            )
        created: list[Path] = []
        try:
            with self._engine.begin() as connection:
                serialized(connection, LOCK)
                now = self._now()
                old_root = self._require(connection, Root).signed
                count = threshold or old_root.roles[role].threshold
                old_signers = self._signers(old_root, "root")
                new_signers = [self._new_key(created) for _ in range(count)]
                root = copy.deepcopy(old_root)
                old_keyids = list(root.roles[role].keyids)
                for keyid in old_keyids:
                    root.revoke_key(keyid, role)
                for signer in new_signers:
                    root.add_key(signer.public_key, role)
                root.roles[role].threshold = count
                root.version = old_root.version + 1
                root.expires = now + self.settings.lifetime("root")
                root_md = Metadata(root)
                for signer in old_signers + (new_signers if role == "root" else []):
                    root_md.sign(signer, append=True)
                self._store(connection, root_md, now)
                if role == "targets":
                    self._resign_targets(connection, root, now)
                elif role == "snapshot":
                    self._resign_snapshot(connection, root, now)
                elif role == "timestamp":
                    self._resign_timestamp(connection, root, now)
                still_used = {k for r in root.roles.values() for k in r.keyids}
                retired = [k for k in old_keyids if k not in still_used]
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise
        self._retire(retired)
        return [signer.public_key.keyid for signer in new_signers]

    # -- reading -----------------------------------------------------------------------

    def metadata(self, name: str) -> bytes | None:
        """The bytes served for metadata file ``name``; None if there is no such file.

        Served names are ``root.json`` (the newest root), ``N.root.json``,
        ``timestamp.json``, ``N.snapshot.json`` and ``N.targets.json``.
        """
        match = _NAME_RE.match(name)
        if match is None:
            return None
        version_text, role = match.groups()
        if version_text is None and role not in ("root", "timestamp"):
            return None
        if version_text is not None and role == "timestamp":
            return None
        query = select(tuf_metadata.c.data).where(tuf_metadata.c.role == role)
        if version_text is None:
            query = query.order_by(tuf_metadata.c.version.desc()).limit(1)
        else:
            query = query.where(tuf_metadata.c.version == int(version_text))
        with self._engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else bytes(row[0])

    def trusted_root(self) -> bytes:
        """The current root, which agents ship with and bootstrap their trust from."""
        data = self.metadata("root.json")
        if data is None:
            raise CatalogError("the TUF repository is not initialized: no root metadata yet")
        return data

    def version(self, role: str) -> int:
        """The newest version of ``role``'s metadata (0 before ``initialize``)."""
        if role not in ROLES:
            raise CatalogError(f"unknown TUF role {role!r}: roles are {', '.join(ROLES)}")
        with self._engine.connect() as connection:
            row = connection.execute(
                select(tuf_metadata.c.version)
                .where(tuf_metadata.c.role == role)
                .order_by(tuf_metadata.c.version.desc())
                .limit(1)
            ).first()
        return 0 if row is None else int(row[0])

    def signed_targets(self) -> dict[str, TargetFile]:
        """Every target listed by the newest targets metadata, by path."""
        with self._engine.connect() as connection:
            return dict(self._require(connection, Targets).signed.targets)

    # -- internals ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return self._clock().astimezone(timezone.utc).replace(microsecond=0)

    def _latest_row(self, connection: Connection, role: str) -> tuple[int, bytes]:
        row = connection.execute(
            select(tuf_metadata.c.version, tuf_metadata.c.data)
            .where(tuf_metadata.c.role == role)
            .order_by(tuf_metadata.c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            raise CatalogError(
                f"the TUF repository is not initialized (no {role} metadata): "
                "run SigningRepository.initialize first"
            )
        return int(row[0]), bytes(row[1])

    def _latest(self, connection: Connection, kind: type[_S]) -> Metadata[_S] | None:
        try:
            _, data = self._latest_row(connection, kind.type)
        except CatalogError:
            return None
        md = Metadata[_S].from_bytes(data)
        if not isinstance(md.signed, kind):
            raise CatalogError(f"stored {kind.type} metadata holds {md.signed.type} instead")
        return md

    def _require(self, connection: Connection, kind: type[_S]) -> Metadata[_S]:
        md = self._latest(connection, kind)
        if md is None:
            raise CatalogError(
                f"the TUF repository is not initialized (no {kind.type} metadata): "
                "run SigningRepository.initialize first"
            )
        return md

    def _due(self, connection: Connection, role: str, now: datetime) -> bool:
        row = connection.execute(
            select(tuf_metadata.c.expires)
            .where(tuf_metadata.c.role == role)
            .order_by(tuf_metadata.c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            raise CatalogError(f"the TUF repository is not initialized (no {role} metadata)")
        expires: datetime = row[0]
        return expires - now < self.settings.lifetime(role) / 2

    def _store(self, connection: Connection, md: Metadata[Any], now: datetime) -> None:
        connection.execute(
            insert(tuf_metadata).values(
                role=md.signed.type,
                version=md.signed.version,
                data=md.to_bytes(_SERIALIZER),
                expires=md.signed.expires,
                created=now,
            )
        )

    def _signed(self, md: Metadata[_S], root: Root, role: str) -> Metadata[_S]:
        md.signatures.clear()
        for signer in self._signers(root, role):
            md.sign(signer, append=True)
        return md

    def _resign_targets(self, connection: Connection, root: Root, now: datetime) -> None:
        previous = self._require(connection, Targets).signed
        successor = copy.deepcopy(previous)
        successor.version = previous.version + 1
        successor.expires = now + self.settings.lifetime("targets")
        self._store(connection, self._signed(Metadata(successor), root, "targets"), now)
        self._resign_snapshot(connection, root, now)

    def _resign_snapshot(self, connection: Connection, root: Root, now: datetime) -> None:
        targets_version, targets_data = self._latest_row(connection, "targets")
        previous = self._latest(connection, Snapshot)
        snapshot = Snapshot(
            version=1 if previous is None else previous.signed.version + 1,
            expires=now + self.settings.lifetime("snapshot"),
            meta={"targets.json": _meta(targets_version, targets_data)},
        )
        self._store(connection, self._signed(Metadata(snapshot), root, "snapshot"), now)
        self._resign_timestamp(connection, root, now)

    def _resign_timestamp(self, connection: Connection, root: Root, now: datetime) -> None:
        snapshot_version, snapshot_data = self._latest_row(connection, "snapshot")
        previous = self._latest(connection, Timestamp)
        timestamp = Timestamp(
            version=1 if previous is None else previous.signed.version + 1,
            expires=now + self.settings.lifetime("timestamp"),
            snapshot_meta=_meta(snapshot_version, snapshot_data),
        )
        self._store(connection, self._signed(Metadata(timestamp), root, "timestamp"), now)

    def _key_file(self, keyid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", keyid):
            raise CatalogError(f"keyid {keyid!r} is not a sha256 hex digest")
        return self.keys_dir / f"{keyid}.pem"

    def _private_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)

    def _new_key(self, created: list[Path]) -> CryptoSigner:
        self._private_dir(self.keys_dir)
        private = Ed25519PrivateKey.generate()
        public = SSlibKey.from_crypto(private.public_key())
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        path = self._key_file(public.keyid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created.append(path)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        return CryptoSigner(private, public)

    def _signers(self, root: Root, role: str) -> list[CryptoSigner]:
        signers = []
        for keyid in root.roles[role].keyids:
            path = self._key_file(keyid)
            try:
                pem = path.read_bytes()
            except FileNotFoundError:
                raise CatalogError(
                    f"the private key {keyid} of the TUF {role} role is missing: expected "
                    f"{path}; restore it from backup (or rotate the {role} keys if the root "
                    "keys are still present)"
                ) from None
            private = load_pem_private_key(pem, password=None)
            public = root.keys[keyid]
            if not isinstance(private, Ed25519PrivateKey) or not isinstance(public, SSlibKey):
                raise CatalogError(f"the private key file {path} is not an ed25519 key")
            try:
                signers.append(CryptoSigner(private, public))
            except ValueError as exc:
                raise CatalogError(
                    f"the private key file {path} does not match the public key {keyid} in root"
                ) from exc
        return signers

    def _retire(self, keyids: Sequence[str]) -> None:
        if not keyids:
            return
        retired = self.keys_dir / _RETIRED
        self._private_dir(retired)
        for keyid in keyids:
            source = self._key_file(keyid)
            if source.exists():
                shutil.move(str(source), str(retired / source.name))


def _meta(version: int, data: bytes) -> MetaFile:
    return MetaFile.from_data(version, data, ["sha256"])


def _target_file(spec: TargetSpec) -> TargetFile:
    parts = spec.path.split("/")
    if (
        not spec.path
        or spec.path.startswith("/")
        or "\\" in spec.path
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise CatalogError(f"{spec.path!r} is not a TUF target path (product/kb/filename)")
    if not SHA256_RE.match(spec.sha256):
        raise CatalogError(f"target {spec.path}: {spec.sha256!r} is not a sha256 digest")
    if isinstance(spec.length, bool) or not isinstance(spec.length, int) or spec.length < 0:
        raise CatalogError(f"target {spec.path}: length must be a non-negative integer")
    try:
        custom = json.loads(json.dumps(dict(spec.custom), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"target {spec.path}: custom fields are not plain JSON: {exc}") from exc
    return TargetFile(
        length=spec.length,
        hashes={"sha256": spec.sha256},
        path=spec.path,
        unrecognized_fields={"custom": custom} if custom else None,
    )
