"""Throwaway databases for tests: an SQLite file, or a fresh database on the local PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES = os.environ.get("PYHOTPATCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"pyhotpatch_test_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(f"{POSTGRES}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("PYHOTPATCH_REQUIRE_POSTGRES"):
            pytest.fail(
                f"PostgreSQL is required (PYHOTPATCH_REQUIRE_POSTGRES) but unreachable: {exc}"
            )
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{POSTGRES}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
