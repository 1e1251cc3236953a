"""Helpers shared by the tests: interpreters, throwaway releases, subprocesses."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def find_python(version: str) -> str | None:
    """A working interpreter for ``version`` (pyenv's versions, then PATH), or None."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    found = shutil.which(f"python{version}")
    for candidate in [*candidates, *([found] if found else [])]:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(
            tuple(map(int, version.split(".")))
        ):
            return candidate
    return None


def make_release(root: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """Write a release directory with a ``pyproject.toml`` and the given files."""
    release = root / f"{name}-{version}"
    release.mkdir(parents=True)
    (release / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "{version}"\n')
    for rel, text in files.items():
        path = release / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return release


def make_wheel(root: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """Write a pure-Python wheel of ``files`` (paths inside site-packages), pip-installable."""
    from pyhotpatch.demo.stack import write_wheel

    return write_wheel(
        root, name, version, {rel: textwrap.dedent(text) for rel, text in files.items()}
    )


def run_python(
    python: str,
    code: str,
    paths: list[Path | str] = (),  # type: ignore[assignment]
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``src`` and ``paths`` on ``sys.path``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    environ["PYTHONPATH"] = os.pathsep.join([str(SRC), *map(str, paths)])
    environ.update(env or {})
    return subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        check=False,
    )


def run_json(python: str, code: str, paths: list[Path | str] = (), **kw: object) -> object:  # type: ignore[assignment]
    """Run ``code`` (which prints one JSON document last) and return the parsed document."""
    done = run_python(python, code, paths, **kw)  # type: ignore[arg-type]
    if done.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])
