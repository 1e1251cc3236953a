"""The runtime's logger, created on first use so that enabling the runtime stays cheap."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging


def logger() -> logging.Logger:
    """The ``pyhotpatch`` logger (imports ``logging`` the first time it is needed)."""
    import logging

    return logging.getLogger("pyhotpatch")
