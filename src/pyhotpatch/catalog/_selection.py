"""Which available patches an ``installPatches`` request selects, as Windows Update decides.

Azure's install parameters choose patches by classification and KB id, exclude KB ids,
can leave out patches that need a restart and can ignore patches published after a
date. The node agent applies these rules to what it assessed; every machine in a fleet
must decide the same way, so the rules live here, once, as a pure function.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

#: Azure's PatchInstallationState values that a selection produces
SELECTED, EXCLUDED, NOT_SELECTED = "Pending", "Excluded", "NotSelected"

_DURATION_RE = re.compile(
    r"^P(?!$)(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta | None:
    """An ISO 8601 duration in weeks, days, hours, minutes and seconds (``PT4H``), else None.

    ``maximumDuration`` is read with it by the server, which refuses a bad one, and by
    the agent, which must stop starting new work when it runs out.
    """
    match = _DURATION_RE.match(text)
    if match is None:
        return None
    parts = {key: float(value) if value else 0.0 for key, value in match.groupdict().items()}
    return timedelta(
        weeks=parts["w"], days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"]
    )


def kb_digits(kb: str) -> str:
    """A KB id without its ``KB`` prefix, as Azure reports ``kbId``."""
    kb = kb.strip()
    return kb[2:] if kb[:2].upper() == "KB" else kb


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def select(patches: Iterable[Mapping[str, Any]], windows: Mapping[str, Any]) -> list[str]:
    """The installation state each patch starts with under ``windowsParameters``.

    Exclusions win over inclusions: a KB excluded by id, or one that always needs a
    restart when ``excludeKbsRequiringReboot`` is set, is ``Excluded``. Otherwise a
    patch published after ``maxPatchPublishDate`` is ``NotSelected``; one whose KB id
    is included, or which has an included classification, is selected (``Pending``);
    the rest are ``NotSelected``.
    """
    classes = set(windows.get("classificationsToInclude") or ())
    include = {kb_digits(k) for k in windows.get("kbNumbersToInclude") or ()}
    exclude = {kb_digits(k) for k in windows.get("kbNumbersToExclude") or ()}
    no_restart = bool(windows.get("excludeKbsRequiringReboot"))
    latest = windows.get("maxPatchPublishDate")
    cutoff = _moment(latest) if latest else None
    states = []
    for patch in patches:
        kb = kb_digits(str(patch.get("kbId", "")))
        published = patch.get("publishedDate")
        if kb in exclude or (no_restart and patch.get("rebootBehavior") == "AlwaysRequiresReboot"):
            states.append(EXCLUDED)
        elif cutoff is not None and published and _moment(str(published)) > cutoff:
            states.append(NOT_SELECTED)
        elif kb in include or classes & set(patch.get("classifications") or ()):
            states.append(SELECTED)
        else:
            states.append(NOT_SELECTED)
    return states


def reboot_status(needs_restart: bool, reboot_setting: str) -> str:
    """Azure's ``rebootStatus`` after installing: whether the setting let the restart happen."""
    if reboot_setting == "Always":
        return "Completed"
    if not needs_restart:
        return "NotNeeded"
    return "Required" if reboot_setting == "Never" else "Completed"
