"""The migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pyhotpatch.storage import metadata, open_database


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = open_database(database_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        engine2 = open_database(database_url)  # a second open finds nothing to do
        engine2.dispose()
    finally:
        engine.dispose()
