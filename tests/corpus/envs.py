"""Install dirs for corpus releases: one ``pip install --target`` dir per release.

The cache root is ``$PYHOTPATCH_CACHE`` or ``~/.cache/pyhotpatch``; dirs live under
``<cache>/corpus-envs/<distribution>-<version>`` (plus a suffix naming any extra requirements).
pip installs into a temporary sibling that is renamed into place only after it succeeded, so an
interrupted install is never mistaken for a complete one.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

_MARKER = ".complete"


def cache_root() -> pathlib.Path:
    """Return the pyhotpatch cache dir (it may not exist yet)."""
    env = os.environ.get("PYHOTPATCH_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "pyhotpatch"


def env_dir(distribution: str, version: str, extra: tuple[str, ...] = ()) -> pathlib.Path:
    """Return where ``distribution==version`` (plus ``extra``) is, or will be, installed."""
    name = f"{distribution}-{version}"
    if extra:
        name += "+" + "+".join(re.sub(r"[^A-Za-z0-9.-]+", "-", req) for req in sorted(extra))
    return cache_root() / "corpus-envs" / name


def ensure_env(distribution: str, version: str, extra: tuple[str, ...] = ()) -> pathlib.Path:
    """Install ``distribution==version`` and ``extra`` requirements once; return the dir.

    Idempotent and safe to call concurrently: a finished dir is reused as is.
    """
    target = env_dir(distribution, version, extra)
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            str(tmp),
            f"{distribution}=={version}",
            *extra,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
        (tmp / _MARKER).write_text(" ".join([f"{distribution}=={version}", *extra]) + "\n")
        if target.exists() and not (target / _MARKER).is_file():
            shutil.rmtree(target)  # a leftover from an older, non-atomic layout
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _MARKER).is_file():  # lost a race to a broken dir: give up loudly
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
