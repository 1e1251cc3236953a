"""The demo stack's wheels: deterministic, installable, pinned by a lock the catalog reads."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from pyhotpatch.catalog._lock import parse_lock
from pyhotpatch.demo.stack import APP, demo_wheels, lock_text, write_wheel
from support import run_json


def test_wheels_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    first, second = demo_wheels(tmp_path / "a"), demo_wheels(tmp_path / "b")
    assert sorted(first) == ["1.0.0", "1.0.1", "1.1.0"]
    for version in first:
        assert first[version].name == f"pyhotpatch_demo_app-{version}-py3-none-any.whl"
        assert first[version].read_bytes() == second[version].read_bytes()


def test_the_lock_pins_each_wheel_by_its_digest(tmp_path: Path) -> None:
    wheel = demo_wheels(tmp_path)["1.0.0"]
    pins = parse_lock(lock_text([wheel]))
    assert list(pins) == [APP]
    assert pins[APP].version == "1.0.0"
    assert pins[APP].hashes == (hashlib.sha256(wheel.read_bytes()).hexdigest(),)


def test_an_installed_release_serves_its_routes(tmp_path: Path) -> None:
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    wheels = demo_wheels(tmp_path / "wheels")
    answers = {}
    for version in ("1.0.0", "1.0.1", "1.1.0"):
        target = tmp_path / version
        scheme = {key: str(target) for key in ("purelib", "platlib", "scripts", "data", "headers")}
        destination = SchemeDictionaryDestination(scheme, sys.executable, "posix")
        with WheelFile.open(wheels[version]) as source:
            install(source, destination, {"INSTALLER": b"tests"})
        answers[version] = run_json(
            sys.executable,
            """
            import json
            from importlib import metadata
            from demoapp.web import handle
            print(json.dumps({
                "dist": metadata.version("pyhotpatch-demo-app"),
                "version": handle("GET", "/version", {})[1]["version"],
                "public": handle("GET", "/files?name=readme.txt", {})[0],
                "traversal": handle("GET", "/files?name=../secrets/token", {})[0],
                "absolute": handle("GET", "/files?name=/secrets/token", {})[0],
                "missing": handle("GET", "/files?name=nope.txt", {})[0],
                "post": handle("POST", "/version", {})[0],
            }))
            """,
            [target],
        )
    assert answers["1.0.0"] == {
        "dist": "1.0.0",
        "version": "1.0.0",
        "public": 200,
        "traversal": 200,  # the vulnerability: a document outside public/
        "absolute": 404,
        "missing": 404,
        "post": 405,
    }
    for fixed in ("1.0.1", "1.1.0"):
        assert answers[fixed] == {
            **answers["1.0.0"],
            "dist": fixed,
            "version": fixed,
            "traversal": 403,
            "absolute": 403,
        }


@pytest.mark.parametrize(
    ("name", "version", "files"),
    [
        ("bad name!", "1.0", {}),
        ("ok", "not a version", {}),
        ("ok", "1.0", {"../escape.py": ""}),
        ("ok", "1.0", {"/abs.py": ""}),
        ("ok", "1.0", {"ok-1.0.dist-info/RECORD": ""}),
    ],
)
def test_write_wheel_refuses_bad_input(
    tmp_path: Path, name: str, version: str, files: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        write_wheel(tmp_path, name, version, files)
