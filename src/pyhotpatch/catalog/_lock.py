"""A baseline's lock file and wheel names: the exact environment a baseline installs.

The lock is pip's requirements format restricted to pins: one ``name==version``
per distribution, optionally with ``--hash=sha256:…`` options, comments and line
continuations. Anything looser (ranges, URLs, extras, markers) is refused, since
a baseline must name one environment and no other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from pyhotpatch.errors import CatalogError

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_HASH = re.compile(r"^--hash=sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class Pin:
    """One locked distribution: canonical name, exact version, allowed wheel digests."""

    name: str
    version: str
    hashes: tuple[str, ...] = ()


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a lock file by canonical name; a ``CatalogError`` names the bad line."""
    pins: dict[str, Pin] = {}
    logical = text.replace("\\\r\n", " ").replace("\\\n", " ")
    for number, raw in enumerate(logical.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        match = _PIN.match(words[0])
        if match is None:
            raise CatalogError(
                f"lock line {number}: {words[0]!r} is not an exact pin (expected name==version)"
            )
        hashes = []
        for option in words[1:]:
            found = _HASH.match(option)
            if found is None:
                raise CatalogError(
                    f"lock line {number}: unsupported option {option!r} (only --hash=sha256:…)"
                )
            hashes.append(found.group(1))
        name = canonicalize_name(match.group(1))
        if name in pins:
            raise CatalogError(f"lock line {number}: {name} is pinned twice")
        pins[name] = Pin(name, normal_version(match.group(2)), tuple(hashes))
    if not pins:
        raise CatalogError("the lock file pins no distribution")
    return pins


def normal_version(version: str) -> str:
    """``version`` in PEP 440 normal form where it parses, so pins and wheel names compare equal."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def wheel_pin(filename: str) -> tuple[str, str]:
    """The canonical name and version a wheel's file name declares."""
    try:
        name, version, _build, _tags = parse_wheel_filename(filename)
    except InvalidWheelFilename as exc:
        raise CatalogError(f"{filename!r} is not a wheel file name: {exc}") from None
    return canonicalize_name(name), str(version)
