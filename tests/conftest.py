"""Fixtures: every supported CPython for runtime tests, throwaway releases."""

from __future__ import annotations

import os

import pytest

from support import SUPPORTED, find_python


def _required() -> set[str]:
    return set(os.environ.get("PYHOTPATCH_REQUIRE_PYTHONS", "").replace(",", " ").split())


@pytest.fixture(params=SUPPORTED, ids=lambda v: f"py{v}")
def python(request: pytest.FixtureRequest) -> str:
    """Each supported CPython in turn; skipped where absent unless CI requires it."""
    version = request.param
    exe = find_python(version)
    if exe is None:
        if version in _required():
            pytest.fail(f"CPython {version} is required (PYHOTPATCH_REQUIRE_PYTHONS) but not found")
        pytest.skip(f"CPython {version} not installed")
    return exe
