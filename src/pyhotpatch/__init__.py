"""pyhotpatch: security fixes applied to the in-memory code of running Python services.

The public API of the runtime lives here; importing it is cheap and pulls in
no third-party package. ``build``, ``package`` and ``cli`` are separate.
"""

from __future__ import annotations

from pyhotpatch.errors import (
    ApplyError,
    BaselineMismatch,
    BusyError,
    HotpatchError,
    NotActive,
    NotHotpatchable,
    PackageError,
    SourceError,
    TransportError,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = [
    "ApplyError",
    "BaselineMismatch",
    "BusyError",
    "HotpatchError",
    "NotActive",
    "NotHotpatchable",
    "PackageError",
    "SourceError",
    "TransportError",
    "apply",
    "enable",
    "revert",
    "status",
]


def enable(**kwargs: Any) -> None:
    """Make this process hotpatchable (see ``pyhotpatch.runtime.enable``)."""
    from pyhotpatch import runtime

    runtime.enable(**kwargs)


def apply(package: Any) -> dict[str, Any]:
    """Apply a hotpatch package to this process (see ``pyhotpatch.runtime.apply``)."""
    from pyhotpatch import runtime

    return runtime.apply(package)


def revert(patch_id: str) -> dict[str, Any]:
    """Revert the active hotpatch (see ``pyhotpatch.runtime.revert``)."""
    from pyhotpatch import runtime

    return runtime.revert(patch_id)


def status() -> dict[str, Any]:
    """Report this process's hotpatch state (see ``pyhotpatch.runtime.status``)."""
    from pyhotpatch import runtime

    return runtime.status()
