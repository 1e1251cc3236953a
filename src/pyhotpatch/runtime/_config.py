"""Where the runtime keeps its sockets and finds installed packages, from the environment.

``PYHOTPATCH=1`` (or ``true``/``yes``/``on``) makes the ``.pth`` hook enable the
runtime in every process of the environment (checked in ``pyhotpatch._autoenable``,
which must not import the runtime when it is off). ``PYHOTPATCH_RUN_DIR`` holds one
control socket per process (default ``$XDG_RUNTIME_DIR/pyhotpatch``, else
``/tmp/pyhotpatch-<uid>``). ``PYHOTPATCH_PACKAGE`` names an installed package that
``enable()`` applies at start-up, so new processes come up patched; the node agent
points it at a file that exists only while a hotpatch is installed. Paths are
plain strings: this module is imported at interpreter start and stays cheap.
"""

from __future__ import annotations

import os


def run_dir() -> str:
    """The directory of control sockets for this user."""
    explicit = os.environ.get("PYHOTPATCH_RUN_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "pyhotpatch")
    return f"/tmp/pyhotpatch-{os.getuid()}"


def installed_package() -> str | None:
    """The package new processes must apply at start-up, if one is installed."""
    path = os.environ.get("PYHOTPATCH_PACKAGE")
    return path if path and os.path.exists(path) else None


def socket_path(pid: int, directory: str | os.PathLike[str] | None = None) -> str:
    """The control socket of process ``pid``."""
    return os.path.join(os.fspath(directory) if directory is not None else run_dir(), f"{pid}.sock")
