"""The in-process hotpatch runtime (stdlib only; imports nothing at import time beyond itself).

``enable()`` installs the import hook and the control socket; ``apply``,
``revert`` and ``status`` act on this process. See ``docs/engine.md``.
"""

from __future__ import annotations

import os
import threading

from pyhotpatch.runtime import _config, _importhook
from pyhotpatch.runtime._control import ControlServer
from pyhotpatch.runtime._engine import ENGINE
from pyhotpatch.runtime._log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyhotpatch.package import Package

__all__ = ["apply", "enable", "enabled", "revert", "status"]
_state: dict[str, Any] = {"enabled": False, "server": None, "run_dir": None, "control": True}
_locks = {"enable": threading.Lock()}


def enable(*, control: bool = True, run_dir: str | os.PathLike[str] | None = None) -> None:
    """Make this process hotpatchable; idempotent.

    Installs the import hook that patches target modules imported later,
    serves the control socket (unless ``control`` is false) that ``hotpatch
    apply --pid`` and the agent use, keeps forked children serving their own
    socket, and applies the package named by ``PYHOTPATCH_PACKAGE`` if any.
    Raises ``TransportError`` if the run directory belongs to another user.
    """
    with _locks["enable"]:
        if _state["enabled"]:
            return
        _importhook.install(ENGINE)
        _state["control"] = control
        _state["run_dir"] = os.fspath(run_dir) if run_dir is not None else None
        # The installed package goes in before the socket appears, so that whoever
        # finds the socket (the agent, mid-install) finds the process already patched.
        installed = _config.installed_package()
        if installed is not None and ENGINE.active is None:
            try:
                ENGINE.apply(installed)
            except Exception:
                logger().exception("could not apply installed hotpatch %s", installed)
        if control:
            _start_server()
        os.register_at_fork(
            before=ENGINE.before_fork,
            after_in_parent=ENGINE.after_fork_in_parent,
            after_in_child=_after_fork,
        )
        _state["enabled"] = True


def enabled() -> bool:
    """Whether ``enable()`` has run in this process."""
    return bool(_state["enabled"])


def apply(package: str | os.PathLike[str] | bytes | Package) -> dict[str, Any]:
    """Apply a hotpatch package to this process and return a report.

    Raises ``PackageError`` (bad file), ``BaselineMismatch`` (not this
    baseline; nothing changed), ``ApplyError`` (rolled back) or ``BusyError``.
    """
    return ENGINE.apply(package)


def revert(patch_id: str) -> dict[str, Any]:
    """Undo the active hotpatch, returning to the baseline; raises ``NotActive`` otherwise."""
    return ENGINE.revert(patch_id)


def status() -> dict[str, Any]:
    """The active hotpatch, pending modules, errors and transition state of this process."""
    info = ENGINE.status()
    info["enabled"] = enabled()
    server = _state["server"]
    info["socket"] = str(server.path) if server is not None else None
    return info


def _start_server() -> None:
    server = ControlServer(ENGINE, _state["run_dir"])
    server.start()
    _state["server"] = server


def _after_fork() -> None:
    _locks["enable"] = threading.Lock()
    ENGINE.reset_after_fork()
    if _state["control"]:
        try:
            _start_server()
        except Exception:
            logger().exception("could not serve the control socket in forked child %d", os.getpid())
