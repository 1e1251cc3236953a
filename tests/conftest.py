"""Fixtures: every supported CPython for runtime tests, throwaway releases."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from arm import Arm, start_arm
from databases import postgres_database
from procs.harness import Children, Demo, build_demo
from support import SUPPORTED, find_python


@pytest.fixture(autouse=True, scope="session")
def no_signed_in_profile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the CLI away from whoever runs the tests' own ``hotpatch login`` profile."""
    before = os.environ.get("HOTPATCH_CONFIG_DIR")
    os.environ["HOTPATCH_CONFIG_DIR"] = str(tmp_path_factory.mktemp("no-profile"))
    yield
    if before is None:
        os.environ.pop("HOTPATCH_CONFIG_DIR", None)
    else:
        os.environ["HOTPATCH_CONFIG_DIR"] = before


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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo target's baseline and two cumulative hotpatches, built once per module."""
    return build_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def kids(python: str) -> Iterator[Children]:
    """Child processes of one interpreter sharing a run directory; all ended at teardown."""
    children = Children(python)
    yield children
    children.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database: an SQLite file, then a fresh database on the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'control-plane.db'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def arm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm]:
    """A control plane over HTTPS shared by one test module, on each database in turn.

    Its subscription exists (an Owner token was made for it).
    """
    with contextlib.ExitStack() as stack:
        args: tuple[str, ...] = ()
        if request.param == "postgresql":
            args = ("--db", stack.enter_context(postgres_database()))
        running = start_arm(tmp_path_factory.mktemp("arm"), *args)
        stack.callback(running.server.stop)
        running.token("Owner")
        yield running
