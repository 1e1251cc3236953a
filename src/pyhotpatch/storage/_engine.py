"""Engines for the control plane's database, migrated on open, and named write locks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from pyhotpatch.errors import HotpatchError
from pyhotpatch.storage._tables import locks

_MIGRATIONS = Path(__file__).with_name("migrations")
#: a fixed key so that concurrent first starts on PostgreSQL migrate one at a time
_PG_MIGRATION_LOCK = 0x70796870
#: statements that leave an SQLite transaction a reader
_READS = frozenset({"SELECT", "WITH", "PRAGMA", "EXPLAIN", "VALUES"})
#: how much of an SQLite database file is read through a memory mapping (address space only)
SQLITE_MMAP_BYTES = 1 << 30


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The embedded SQLite database kept in the control plane's data directory."""
    return f"sqlite:///{Path(data_dir).resolve() / 'control-plane.db'}"


def open_database(url: str, *, migrate: bool = True) -> Engine:
    """An engine for ``url`` with the schema at the newest migration.

    ``postgresql://`` URLs use psycopg 3. SQLite transactions take the write lock
    when they begin, so concurrent writers queue instead of failing halfway.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    elif not parsed.drivername.startswith(("postgresql+", "sqlite+")):
        raise HotpatchError(
            f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        _sqlite_transactions(engine)
    if migrate:
        upgrade(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        # pages are read from a mapping of the file rather than copied in by read calls
        cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        cursor.close()

    # Transactions opened with ``begin()`` write: they take the write lock at once, so
    # writers queue on the busy timeout instead of failing when they upgrade from a
    # read. Transactions that start by themselves on a ``connect()`` read: they begin
    # deferred (WAL readers never wait) unless their first statement writes.
    @event.listens_for(engine, "before_execute")
    def _executing(connection: Connection, *_args: Any) -> None:
        connection.info["sqlite_executing"] = True

    @event.listens_for(engine, "after_execute")
    def _executed(connection: Connection, *_args: Any) -> None:
        connection.info.pop("sqlite_executing", None)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.info["sqlite_pending_begin"] = True
        if not connection.info.get("sqlite_executing"):
            connection.info["sqlite_immediate"] = True

    @event.listens_for(engine, "before_cursor_execute")
    def _first_statement(connection: Connection, cursor: Any, statement: str, *_args: Any) -> None:
        if connection.info.pop("sqlite_pending_begin", False):
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
            immediate = connection.info.pop("sqlite_immediate", False) or verb not in _READS
            cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _end(connection: Connection) -> None:
        for key in ("sqlite_pending_begin", "sqlite_immediate", "sqlite_executing"):
            connection.info.pop(key, None)


def upgrade(engine: Engine) -> None:
    """Run every migration not yet applied, one migrator at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        connection.info["sqlite_immediate"] = True
        if engine.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def serialized(connection: Connection, name: str) -> None:
    """Hold the lock ``name`` until ``connection``'s transaction ends.

    Writers that must not interleave (publishing, signing metadata) take the
    same lock first. On SQLite it takes the database's write lock, which only works
    as the transaction's first statement; later it is a no-op.
    """
    if connection.dialect.name == "sqlite":
        if connection.info.get("sqlite_pending_begin"):
            connection.info["sqlite_immediate"] = True
            connection.execute(select(locks.c.name).where(locks.c.name == name))
        return
    if connection.execute(select(locks.c.name).where(locks.c.name == name)).first() is None:
        try:
            with connection.begin_nested():
                connection.execute(insert(locks).values(name=name))
        except IntegrityError:
            pass
    connection.execute(select(locks.c.name).where(locks.c.name == name).with_for_update())
