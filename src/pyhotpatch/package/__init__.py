"""The ``.hotpatch`` package format: read, write, validate (stdlib only).

A package binds a set of actions on live modules to one baseline release. See
``docs/engine.md`` for the layout and what each action means.
"""

from pyhotpatch.package._manifest import (
    ACTION_KINDS,
    CLASSIFICATIONS,
    FORMAT,
    Action,
    Manifest,
    ModulePatch,
    SourceRef,
    Target,
)
from pyhotpatch.package._zipformat import (
    DEFAULT_LIMITS,
    Limits,
    Package,
    dumps_manifest,
    package_bytes,
    read_package,
    source_digest,
    write_package,
)

__all__ = [
    "ACTION_KINDS",
    "CLASSIFICATIONS",
    "DEFAULT_LIMITS",
    "FORMAT",
    "Action",
    "Limits",
    "Manifest",
    "ModulePatch",
    "Package",
    "SourceRef",
    "Target",
    "dumps_manifest",
    "package_bytes",
    "read_package",
    "source_digest",
    "write_package",
]
