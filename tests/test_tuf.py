"""Signed distribution end to end: the TUF repository, its HTTP routes and the agent's feed.

A real uvicorn server on a loopback port serves a real database (SQLite, and
PostgreSQL where noted) and blob store; agents are real ngclient updaters. Every
attack is expected to end in a ``DistributionError`` that says what happened, with
nothing left in the agent's targets cache.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi import FastAPI
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from pyhotpatch.catalog._blobs import BlobStore
from pyhotpatch.catalog._tuf_repo import (
    SigningRepository,
    TargetSpec,
    TufSettings,
    target_path,
)
from pyhotpatch.catalog.tufclient import ReleaseFeed
from pyhotpatch.clock import Clock, ManualClock, system_clock
from pyhotpatch.errors import (
    CatalogError,
    DistributionError,
    ReleaseServerUnreachable,
    WrongBaseline,
)
from pyhotpatch.package import Manifest, Target, package_bytes, read_package
from pyhotpatch.server._tuf_routes import tuf_router
from pyhotpatch.storage._engine import open_database
from pyhotpatch.storage._tables import artifacts, products, releases, tuf_metadata

PRODUCT = "pyhotpatch-demo"
BASELINE = "KB5001000"
SERIALIZER = JSONSerializer(compact=True)


# -- infrastructure ------------------------------------------------------------------------


class Server:
    """A uvicorn server for ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Env:
    """One control plane (database, keys, blobs, HTTP server) and helpers to drive it."""

    tmp: Path
    engine: sa.Engine
    repo: SigningRepository
    blobs: BlobStore
    url: str

    def feed(self, name: str = "agent", trusted_root: bytes | None = None) -> ReleaseFeed:
        root = self.repo.trusted_root() if trusted_root is None else trusted_root
        return ReleaseFeed(self.url, self.tmp / name, trusted_root=root)

    def publish(
        self,
        kb: str,
        data: bytes | None = None,
        *,
        baseline: str = BASELINE,
        name: str = "fix.hotpatch",
        role: str = "hotpatch",
    ) -> str:
        """Store an artifact and publish its release and signed target in one transaction."""
        data = hotpatch(kb) if data is None else data
        sha, size = self.blobs.put_bytes(data)
        path = target_path(PRODUCT, kb, name)
        now = datetime.now(timezone.utc)
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(releases).values(
                    kb=kb,
                    product=PRODUCT,
                    kind="hotpatch",
                    title=f"Hotpatch {kb}",
                    classifications=["Security"],
                    severity="Important",
                    cves=[],
                    published=now,
                    available=now,
                    baseline=baseline,
                    sequence=1,
                    reboot_behavior="NeverReboots",
                    notes=[],
                    created=now,
                )
            )
            connection.execute(
                sa.insert(artifacts).values(
                    release=kb, name=name, role=role, sha256=sha, size=size, target_path=path
                )
            )
            self.repo.add_targets(
                connection,
                [
                    TargetSpec(
                        path=path,
                        length=size,
                        sha256=sha,
                        custom={
                            "kbId": kb,
                            "product": PRODUCT,
                            "kind": "hotpatch",
                            "baseline": baseline,
                            "sequence": 1,
                            "classifications": ["Security"],
                            "role": role,
                        },
                    )
                ],
            )
        return path

    def latest(self, role: str) -> Metadata[Any]:
        """The newest metadata of ``role``, as served."""
        name = "timestamp.json" if role == "timestamp" else f"{self.repo.version(role)}.{role}.json"
        data = self.repo.metadata(name)
        assert data is not None
        return Metadata.from_bytes(data)

    def store(self, md: Metadata[Any]) -> None:
        """Put hand-made metadata in the database, as an attacker with database access could."""
        with self.engine.begin() as connection:
            connection.execute(
                sa.insert(tuf_metadata).values(
                    role=md.signed.type,
                    version=md.signed.version,
                    data=md.to_bytes(SERIALIZER),
                    expires=md.signed.expires,
                    created=datetime.now(timezone.utc),
                )
            )

    def signer(self, keyid: str, folder: Path | None = None) -> CryptoSigner:
        """The repository's signer for ``keyid``, read from its key file."""
        pem = ((folder or self.repo.keys_dir) / f"{keyid}.pem").read_bytes()
        private = load_pem_private_key(pem, password=None)
        assert isinstance(private, Ed25519PrivateKey)
        return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))

    def role_signers(self, role: str) -> list[CryptoSigner]:
        root = self.latest("root").signed
        assert isinstance(root, Root)
        return [self.signer(keyid) for keyid in root.roles[role].keyids]


def hotpatch(kb: str, manifest_id: str | None = None) -> bytes:
    """A small valid ``.hotpatch`` whose manifest says it is ``manifest_id`` (default ``kb``)."""
    manifest = Manifest(
        id=manifest_id or kb,
        title=f"Security fix {kb}",
        classification="Security",
        targets=(Target(PRODUCT, "1.0.0", "1.0.1"),),
    )
    return package_bytes(manifest, {})


def cache_is_empty(feed: ReleaseFeed) -> bool:
    return list(feed.targets_dir.iterdir()) == []


def rogue_signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def successor_timestamp(env: Env) -> Metadata[Timestamp]:
    """The next timestamp version with unchanged content, not yet signed."""
    current = env.latest("timestamp").signed
    assert isinstance(current, Timestamp)
    return Metadata(
        Timestamp(
            version=current.version + 1,
            expires=datetime.now(timezone.utc) + timedelta(days=1),
            snapshot_meta=current.snapshot_meta,
        )
    )


@contextmanager
def make_env(
    tmp_path: Path,
    url: str | None = None,
    clock: Clock = system_clock,
    settings: TufSettings | None = None,
) -> Iterator[Env]:
    engine = open_database(url or f"sqlite:///{tmp_path / 'db'}")
    server: Server | None = None
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(products).values(
                    name=PRODUCT, title="Demo service", hotpatch=True, images=[]
                )
            )
        repo = SigningRepository(engine, tmp_path / "keys", clock=clock, settings=settings)
        blobs = BlobStore(tmp_path / "blobs")
        app = FastAPI()
        app.include_router(tuf_router(repo, blobs, engine))
        server = Server(app)
        yield Env(tmp_path, engine, repo, blobs, server.url)
    finally:
        if server is not None:
            server.close()
        engine.dispose()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """An initialized control plane on SQLite."""
    with make_env(tmp_path) as made:
        assert made.repo.initialize()
        yield made


@pytest.fixture
def any_env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    """An initialized control plane on each supported database (``database_url`` in conftest)."""
    with make_env(tmp_path, database_url) as made:
        assert made.repo.initialize()
        yield made


# -- the happy path ------------------------------------------------------------------------


def test_publish_refresh_and_download(any_env: Env) -> None:
    env = any_env
    feed = env.feed()
    feed.refresh()
    assert feed.targets() == {}

    first = env.publish("KB5001001")
    feed.refresh()
    listed = feed.targets()
    assert list(listed) == [first]
    info = listed[first]
    assert info.length == len(hotpatch("KB5001001"))
    assert info.custom["kbId"] == "KB5001001"
    assert info.custom["baseline"] == BASELINE
    assert info.custom["classifications"] == ["Security"]
    file = feed.download(first)
    assert file.read_bytes() == hotpatch("KB5001001")
    assert feed.download(first) == file  # served from the verified cache

    second = env.publish("KB5001002")
    feed.refresh()
    assert set(feed.targets()) == {first, second}
    assert feed.download(second).read_bytes() == hotpatch("KB5001002")
    assert env.repo.version("targets") == 3
    assert env.repo.version("timestamp") == 3

    # a new process on the same state directory needs no trusted root any more
    again = ReleaseFeed(env.url, env.tmp / "agent")
    assert set(again.targets()) == {first, second}


def test_fetch_hotpatch_checks_id_and_returns_the_package(env: Env) -> None:
    env.publish("KB5001001")
    feed = env.feed()
    file = feed.fetch_hotpatch("KB5001001", running_baseline=BASELINE)
    assert read_package(file).manifest.id == "KB5001001"


def test_http_routes(env: Env) -> None:
    import httpx

    path = env.publish("KB5001001")
    sha = env.repo.signed_targets()[path].hashes["sha256"]
    with httpx.Client(base_url=env.url) as client:
        timestamp = client.get("/hotpatch/tuf/metadata/timestamp.json")
        assert timestamp.status_code == 200
        assert timestamp.headers["content-type"] == "application/json"
        assert timestamp.headers["cache-control"] == "no-store"
        versioned = client.get("/hotpatch/tuf/metadata/2.snapshot.json")
        assert "immutable" in versioned.headers["cache-control"]
        for missing in ("9.snapshot.json", "snapshot.json", "0.root.json", "1.timestamp.json"):
            answer = client.get(f"/hotpatch/tuf/metadata/{missing}")
            assert answer.status_code == 404, missing
            assert answer.json()["error"]["code"] == "NotFound"
        folder, _, name = path.rpartition("/")
        artifact = client.get(f"/hotpatch/tuf/targets/{folder}/{sha}.{name}")
        assert artifact.status_code == 200
        assert artifact.content == hotpatch("KB5001001")
        assert "immutable" in artifact.headers["cache-control"]
        assert client.get(f"/hotpatch/tuf/targets/{path}").status_code == 404
        other = "0" * 64
        assert client.get(f"/hotpatch/tuf/targets/{folder}/{other}.{name}").status_code == 404


# -- attacks and failures ------------------------------------------------------------------


@pytest.mark.parametrize("tamper", ["same-length", "longer"])
def test_tampered_artifact_is_refused(env: Env, tamper: str) -> None:
    path = env.publish("KB5001001")
    sha = env.repo.signed_targets()[path].hashes["sha256"]
    blob = env.blobs.path(sha)
    data = blob.read_bytes()
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if tamper == "same-length" else data + b"x")
    feed = env.feed()
    with pytest.raises(DistributionError, match="artifact does not match its signed digest") as err:
        feed.download(path)
    assert path in str(err.value)
    assert err.value.__cause__ is not None
    assert cache_is_empty(feed)


def test_rollback_is_refused(env: Env) -> None:
    feed = env.feed()
    feed.refresh()
    path = env.publish("KB5001001")
    feed.refresh()
    assert env.repo.version("timestamp") == 2
    # the server's state is replaced by an older copy that still has valid signatures
    with env.engine.begin() as connection:
        connection.execute(
            sa.delete(tuf_metadata).where(tuf_metadata.c.role != "root", tuf_metadata.c.version > 1)
        )
    stale = env.feed("stale-agent")
    stale.refresh()  # a new agent cannot tell, but the one that saw version 2 can
    with pytest.raises(
        DistributionError,
        match="rollback refused: timestamp version 1 is older than the trusted version 2",
    ) as err:
        feed.refresh()
    assert err.value.__cause__ is not None
    with pytest.raises(DistributionError, match="rollback refused"):
        feed.download(path)
    assert cache_is_empty(feed)


def test_frozen_metadata_is_refused_until_the_server_resigns(tmp_path: Path) -> None:
    real_now = datetime.now(timezone.utc)
    clock = ManualClock(real_now - timedelta(days=2))
    with make_env(tmp_path, clock=clock) as env:
        env.repo.initialize()
        path = env.publish("KB5001001")
        expires = (real_now - timedelta(days=1)).replace(microsecond=0)
        feed = env.feed()
        with pytest.raises(
            DistributionError, match="metadata expired: timestamp expired at"
        ) as err:
            feed.refresh()
        assert expires.strftime("%Y-%m-%dT%H:%M:%SZ") in str(err.value)
        with pytest.raises(DistributionError, match="metadata expired"):
            feed.download(path)
        assert cache_is_empty(feed)

        assert env.repo.refresh() == []  # by the server's frozen clock nothing is due
        clock.set(real_now)
        assert env.repo.refresh() == ["timestamp"]
        assert env.repo.refresh() == []
        feed.refresh()
        assert feed.download(path).read_bytes() == hotpatch("KB5001001")


def test_refresh_resigns_what_is_due_and_what_depends_on_it(tmp_path: Path) -> None:
    clock = ManualClock(datetime.now(timezone.utc))
    with make_env(tmp_path, clock=clock) as env:
        env.repo.initialize()
        env.publish("KB5001001")
        versions = {role: env.repo.version(role) for role in ("root", "targets", "snapshot")}
        clock.advance(timedelta(days=4))  # snapshot (7 days) and timestamp (1 day) are due
        assert env.repo.refresh() == ["snapshot", "timestamp"]
        clock.advance(timedelta(days=46))  # targets (90 days) is due
        assert env.repo.refresh() == ["targets", "snapshot", "timestamp"]
        clock.advance(timedelta(days=150))  # root (365 days) and targets again are due
        assert env.repo.refresh() == ["root", "targets", "snapshot", "timestamp"]
        clock.advance(timedelta(days=1))
        assert env.repo.refresh() == ["timestamp"]
        assert env.repo.version("root") == versions["root"] + 1
        assert env.repo.version("targets") == versions["targets"] + 2
        assert env.repo.version("snapshot") == versions["snapshot"] + 3
        timestamp = env.latest("timestamp").signed
        assert isinstance(timestamp, Timestamp)
        assert timestamp.expires == clock().replace(microsecond=0) + timedelta(days=1)


def test_timestamp_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    feed = env.feed()
    feed.refresh()
    forged = successor_timestamp(env)
    forged.sign(rogue_signer())
    env.store(forged)
    with pytest.raises(
        DistributionError,
        match=r"signature check failed for timestamp: not signed by enough trusted keys \(0 of the 1 required\)",
    ):
        feed.refresh()
    assert cache_is_empty(feed)


def test_targets_signed_by_an_unknown_key_is_refused(env: Env) -> None:
    path = env.publish("KB5001001")
    feed = env.feed()
    feed.refresh()
    # the attacker lists a different artifact and signs targets with their own key; the
    # snapshot and timestamp keys (online keys) are assumed stolen too
    current = env.latest("targets").signed
    assert isinstance(current, Targets)
    evil = b"evil payload"
    sha, size = env.blobs.put_bytes(evil)
    current.targets[path].hashes = {"sha256": sha}
    current.targets[path].length = size
    current.version += 1
    targets_md = Metadata(current)
    targets_md.sign(rogue_signer())
    env.store(targets_md)
    snapshot = env.latest("snapshot").signed
    assert isinstance(snapshot, Snapshot)
    snapshot.version += 1
    snapshot.meta["targets.json"] = MetaFile(current.version)
    snapshot_md = Metadata(snapshot)
    for signer in env.role_signers("snapshot"):
        snapshot_md.sign(signer, append=True)
    env.store(snapshot_md)
    timestamp_md = successor_timestamp(env)
    timestamp_md.signed.snapshot_meta = MetaFile(snapshot.version)
    for signer in env.role_signers("timestamp"):
        timestamp_md.sign(signer, append=True)
    env.store(timestamp_md)
    with env.engine.begin() as connection:
        connection.execute(sa.update(artifacts).values(sha256=sha, size=size))
    with pytest.raises(
        DistributionError,
        match=r"signature check failed for targets: not signed by enough trusted keys \(0 of the 1 required\)",
    ):
        feed.refresh()
    with pytest.raises(DistributionError, match="signature check failed for targets"):
        feed.download(path)
    assert cache_is_empty(feed)


def test_wrong_baseline_is_refused_before_download(env: Env) -> None:
    env.publish("KB5001002", baseline="KB5001000")
    feed = env.feed()
    with pytest.raises(WrongBaseline) as err:
        feed.fetch_hotpatch("KB5001002", running_baseline="KB0000001")
    assert "KB5001000" in str(err.value)
    assert "KB0000001" in str(err.value)
    assert cache_is_empty(feed)


def test_package_with_another_id_is_refused(env: Env) -> None:
    env.publish("KB5001003", hotpatch("KB5001003", manifest_id="KB5009999"))
    feed = env.feed()
    with pytest.raises(DistributionError, match="holds hotpatch KB5009999, not KB5001003"):
        feed.fetch_hotpatch("KB5001003", running_baseline=BASELINE)
    assert cache_is_empty(feed)
    with pytest.raises(DistributionError, match="no signed hotpatch"):
        feed.fetch_hotpatch("KB5001999", running_baseline=BASELINE)


def test_unreachable_server_and_missing_root(env: Env) -> None:
    with pytest.raises(DistributionError, match="no trusted root: "):
        ReleaseFeed(env.url, env.tmp / "fresh")
    with pytest.raises(DistributionError, match="no trusted root: "):
        ReleaseFeed(env.url, env.tmp / "garbage", trusted_root=b"{not json")
    feed = ReleaseFeed(
        "http://127.0.0.1:1", env.tmp / "offline", trusted_root=env.repo.trusted_root()
    )
    with pytest.raises(
        DistributionError, match=r"cannot reach the release server at http://127\.0\.0\.1:1: "
    ) as err:
        feed.refresh()
    assert err.value.__cause__ is not None
    assert isinstance(err.value, ReleaseServerUnreachable)  # worth trying again later
    with pytest.raises(DistributionError, match="no signed target") as refused:
        env.feed().download("pyhotpatch-demo/KB5009999/fix.hotpatch")
    assert not isinstance(refused.value, ReleaseServerUnreachable)


# -- keys ----------------------------------------------------------------------------------


def test_key_rotation(any_env: Env) -> None:
    env = any_env
    root_v1 = env.repo.trusted_root()
    early = env.feed("early")
    early.refresh()
    old_root = env.latest("root").signed
    assert isinstance(old_root, Root)
    old_timestamp_keys = list(old_root.roles["timestamp"].keyids)
    old_root_keys = list(old_root.roles["root"].keyids)

    new_timestamp_keys = env.repo.rotate("timestamp")
    new_root_keys = env.repo.rotate("root", threshold=2)
    new_targets_keys = env.repo.rotate("targets")
    assert env.repo.version("root") == 4
    root = env.latest("root").signed
    assert isinstance(root, Root)
    assert root.roles["timestamp"].keyids == new_timestamp_keys
    assert root.roles["root"].keyids == new_root_keys
    assert root.roles["root"].threshold == 2
    assert root.roles["targets"].keyids == new_targets_keys
    retired = env.repo.keys_dir / "retired"
    for keyid in old_timestamp_keys + old_root_keys:
        assert not (env.repo.keys_dir / f"{keyid}.pem").exists()
        assert (retired / f"{keyid}.pem").is_file()

    path = env.publish("KB5001001")
    early.refresh()  # walks 2.root.json .. 4.root.json from root v1
    assert early.download(path).read_bytes() == hotpatch("KB5001001")
    late = env.feed("late", trusted_root=root_v1)
    assert late.fetch_hotpatch("KB5001001", running_baseline=BASELINE).is_file()

    # signatures by the retired timestamp key no longer count
    forged = successor_timestamp(env)
    forged.sign(env.signer(old_timestamp_keys[0], retired))
    env.store(forged)
    with pytest.raises(DistributionError, match="signature check failed for timestamp"):
        late.refresh()


def test_keys_are_private_files_and_initialize_is_idempotent(env: Env) -> None:
    keys_dir = env.repo.keys_dir
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    files = sorted(keys_dir.glob("*.pem"))
    assert len(files) == 4
    root = env.latest("root").signed
    assert isinstance(root, Root)
    assert {f.stem for f in files} == set(root.keys)
    assert root.consistent_snapshot is True
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    with env.engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(tuf_metadata)).scalar()
    assert rows == 4
    before = env.repo.trusted_root()
    assert env.repo.initialize() is False
    assert env.repo.trusted_root() == before
    assert sorted(keys_dir.glob("*.pem")) == files

    files[0].unlink()
    with pytest.raises(CatalogError, match=f"private key {files[0].stem} .* is missing"):
        env.repo.initialize()


def test_signed_targets_are_immutable(env: Env) -> None:
    path = env.publish("KB5001001")
    info = env.repo.signed_targets()[path]
    with env.engine.begin() as connection, pytest.raises(CatalogError, match="immutable"):
        env.repo.add_targets(connection, [TargetSpec(path, info.length + 1, "a" * 64, {})])
    before = env.repo.version("targets")
    with env.engine.begin() as connection:
        env.repo.add_targets(
            connection, [TargetSpec(path, info.length, info.hashes["sha256"], info.custom)]
        )
    assert env.repo.version("targets") == before  # nothing new, nothing signed
    with env.engine.begin() as connection, pytest.raises(CatalogError, match="target path"):
        env.repo.add_targets(connection, [TargetSpec("../x", 1, "a" * 64, {})])


def test_root_threshold_two(tmp_path: Path) -> None:
    settings = TufSettings(thresholds={"root": 2})
    with make_env(tmp_path, settings=settings) as env:
        assert env.repo.initialize()
        root = env.latest("root").signed
        assert isinstance(root, Root)
        assert len(root.roles["root"].keyids) == 2
        assert root.roles["root"].threshold == 2
        root_v1 = env.repo.trusted_root()
        assert len(Metadata.from_bytes(root_v1).signatures) == 2
        path = env.publish("KB5001001")
        feed = env.feed()
        assert feed.download(path).is_file()

        # a root carrying only one of the two root signatures is refused
        successor = env.latest("root")
        assert isinstance(successor.signed, Root)
        successor.signed.version += 1
        successor.signatures.clear()
        successor.sign(env.signer(root.roles["root"].keyids[0]))
        env.store(successor)
        feed = env.feed("second", trusted_root=root_v1)
        with pytest.raises(
            DistributionError,
            match=r"signature check failed for root: not signed by enough trusted keys \(1 of the 2 required\)",
        ):
            feed.refresh()
        assert cache_is_empty(feed)


# -- concurrency ---------------------------------------------------------------------------


def test_concurrent_publishers_lose_no_target(any_env: Env) -> None:
    env = any_env
    errors: list[BaseException] = []

    def publisher(first: int) -> None:
        try:
            for n in range(first, first + 5):
                env.publish(f"KB50020{n:02d}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in (0, 50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(env.repo.signed_targets()) == 10
    assert env.repo.version("targets") == 11
    assert env.repo.version("snapshot") == 11
    assert env.repo.version("timestamp") == 11
    with env.engine.connect() as connection:
        versions = connection.execute(
            sa.select(tuf_metadata.c.version)
            .where(tuf_metadata.c.role == "targets")
            .order_by(tuf_metadata.c.version)
        ).scalars()
        assert list(versions) == list(range(1, 12))
    feed = env.feed()
    assert len(feed.targets()) == 10
