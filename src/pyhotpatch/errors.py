"""The error hierarchy every part of pyhotpatch raises.

Errors are split by whose fault they are, so callers can catch exactly what they
handle: a bad package file, a process that is not at the package's baseline, a
change the builder cannot ship as a hotpatch, an apply that failed and was rolled
back, or a broken channel to a process. This module is stdlib-only and imports
nothing else from pyhotpatch, so the runtime and the package format can share it.
"""

from __future__ import annotations


class HotpatchError(Exception):
    """Base class of every error pyhotpatch raises on purpose."""


class PackageError(HotpatchError):
    """A ``.hotpatch`` file is malformed, truncated, oversized or tampered with."""


class BaselineMismatch(HotpatchError):
    """The running code is not the baseline the package was built against.

    Nothing was changed in the process when this is raised.
    """


class NotHotpatchable(HotpatchError):
    """A change between two releases cannot be applied safely to live code.

    ``reasons`` holds one ``path:line: reason`` string per refused change.
    """

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__(
            f"{len(self.reasons)} change(s) cannot be hotpatched:\n" + "\n".join(self.reasons)
        )


class ApplyError(HotpatchError):
    """Applying or reverting failed; the process was left exactly as it was."""


class BusyError(ApplyError):
    """Another apply or revert is running in this process; try again when it ends."""


class NotActive(HotpatchError):
    """The hotpatch named for revert is not the active one in this process."""


class TransportError(HotpatchError):
    """The control channel to a process failed (no socket, refused, bad reply)."""


class SourceError(HotpatchError):
    """A release given to the builder cannot be read or fetched."""


class CatalogError(HotpatchError):
    """A catalog request is malformed or names a product or release that does not exist."""


class PublishRefused(CatalogError):
    """Publishing a release would break the catalog's rules; nothing was published.

    ``reasons`` holds one sentence per broken rule.
    """

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


class DistributionError(HotpatchError):
    """A release could not be fetched with its signatures verified; nothing was installed.

    Raised for tampered, replayed, expired or wrongly signed metadata and artifacts,
    and for a server that cannot be reached.
    """


class ReleaseServerUnreachable(DistributionError):
    """The release feed could not be read because its server did not answer in time or at all.

    Unlike a refusal, trying again later may succeed.
    """


class WrongBaseline(DistributionError):
    """A verified hotpatch was built for another baseline than the one the machine runs."""


class NotFound(CatalogError):
    """A product, release or artifact named in a request does not exist."""


class AgentError(HotpatchError):
    """The node agent cannot do what was asked: bad configuration, state or service command."""
