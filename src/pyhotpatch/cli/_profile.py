"""The profile ``hotpatch login`` keeps: which control plane, as whom, in which subscription.

Like ``az login``, signing in once spares every later command its ``--server`` and
``--token``. The profile is one JSON file readable only by its owner, in
``$HOTPATCH_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/pyhotpatch`` (``~/.config``). It
holds the token in the clear, as az's token cache does; ``hotpatch logout`` deletes it.
Options win over the environment (``HOTPATCH_SERVER``, ``HOTPATCH_TOKEN``,
``HOTPATCH_CA_BUNDLE``, ``HOTPATCH_SUBSCRIPTION``), which wins over the profile.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pyhotpatch.errors import HotpatchError

FILE = "profile.json"
OUTPUTS = ("json", "table", "tsv")


@dataclass(frozen=True)
class Profile:
    """Where and as whom the CLI talks to a control plane."""

    server: str | None = None
    token: str | None = None
    ca: str | None = None
    subscription: str | None = None
    output: str = "json"

    def public(self) -> dict[str, Any]:
        """The profile as ``hotpatch account show`` prints it: never the token itself."""
        shown = asdict(self)
        shown["token"] = "(kept)" if self.token else None
        return shown


def directory() -> Path:
    """Where the profile lives."""
    explicit = os.environ.get("HOTPATCH_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pyhotpatch"


def load() -> Profile:
    """The saved profile, or an empty one when nobody has signed in."""
    path = directory() / FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Profile()
    except (OSError, ValueError) as exc:
        raise HotpatchError(f"cannot read the profile {path}: {exc}") from None
    known = {k: v for k, v in raw.items() if k in Profile.__dataclass_fields__}
    profile = Profile(**known)
    return profile if profile.output in OUTPUTS else replace(profile, output="json")


def save(profile: Profile) -> Path:
    """Write ``profile`` where only its owner can read it; its path."""
    folder = directory()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / FILE
    partial = path.with_suffix(".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(asdict(profile), handle, indent=2)
        handle.write("\n")
    os.replace(partial, path)
    return path


def forget() -> bool:
    """Delete the profile; whether there was one."""
    try:
        (directory() / FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(
    server: str | None = None,
    token: str | None = None,
    subscription: str | None = None,
) -> Profile:
    """The profile a command runs with: its options, then the environment, then the saved one.

    The saved token and CA go only to the saved server: naming another server never sends
    it the profile's token.
    """
    saved = load()
    chosen = server or os.environ.get("HOTPATCH_SERVER") or saved.server
    own = chosen is not None and saved.server is not None and chosen.rstrip("/") == saved.server
    return Profile(
        server=chosen,
        token=token or os.environ.get("HOTPATCH_TOKEN") or (saved.token if own else None),
        ca=os.environ.get("HOTPATCH_CA_BUNDLE") or (saved.ca if own else None),
        subscription=subscription or os.environ.get("HOTPATCH_SUBSCRIPTION") or saved.subscription,
        output=saved.output,
    )


def remote(server: str | None, local: bool) -> Profile | None:
    """Where a command that can also act on a local data directory should go, if anywhere.

    ``--server`` or ``HOTPATCH_SERVER`` send it to that server; otherwise, unless a data
    directory or database was named (``local``), to the signed-in profile's server.
    """
    if server or os.environ.get("HOTPATCH_SERVER"):
        return resolve(server)
    if local or os.environ.get("PYHOTPATCH_HOME"):
        return None
    found = resolve()
    return found if found.server else None
