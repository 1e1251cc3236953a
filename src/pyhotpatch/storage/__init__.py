"""The control plane's database: opening it, migrating it, and its tables.

``open_database`` is the one way in: it turns a URL (an SQLite file by default,
``postgresql://`` for PostgreSQL through psycopg 3) into an engine whose schema is
at the newest migration, so every caller sees the same tables whatever version of
pyhotpatch created the file.
"""

from __future__ import annotations

from pyhotpatch.storage._engine import default_url, open_database, serialized
from pyhotpatch.storage._tables import metadata

__all__ = ["default_url", "metadata", "open_database", "serialized"]
