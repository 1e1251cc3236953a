"""The database layer: migrations match the declared schema; SQLite writers queue, readers never wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select

from pyhotpatch.storage import metadata, open_database
from pyhotpatch.storage._tables import settings


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = open_database(database_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        engine2 = open_database(database_url)  # a second open finds nothing to do
        engine2.dispose()
    finally:
        engine.dispose()


def test_sqlite_writers_queue_and_readers_do_not_wait(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'db'}")
    holding = threading.Event()
    release = threading.Event()
    failures: list[BaseException] = []

    def writer(name: str, hold: bool) -> None:
        try:
            with engine.begin() as conn:
                conn.execute(select(settings.c.key)).all()  # a read first, then a write
                conn.execute(insert(settings).values(key=name, value=[1]))
                if hold:
                    holding.set()
                    release.wait(10)
        except BaseException as exc:
            failures.append(exc)

    first = threading.Thread(target=writer, args=("first", True))
    first.start()
    assert holding.wait(10)
    second = threading.Thread(target=writer, args=("second", False))
    second.start()
    started = time.monotonic()
    with engine.connect() as conn:  # a reader is not blocked by the writer holding the lock
        assert conn.execute(select(settings.c.key)).all() == []
    assert time.monotonic() - started < 1.0
    release.set()
    first.join(10)
    second.join(10)
    assert failures == []
    with engine.connect() as conn:
        assert sorted(conn.scalars(select(settings.c.key))) == ["first", "second"]
    engine.dispose()
