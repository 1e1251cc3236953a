"""Durable small files: written whole or not at all, and private when they hold secrets.

The agent's state must survive ``SIGKILL`` and power loss at any instant, so every
file is written to a temporary sibling, flushed to disk, renamed over the old one
and the directory entry flushed too: a reader sees the old content or the new,
never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step that survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Flush a directory's entries (a rename is durable only once its directory is)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, value: Any, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically."""
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), mode=mode)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` if there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
