"""Fingerprints of code objects that ignore line numbers and file names.

Two code objects have the same fingerprint when they would behave the same:
same bytecode, constants (nested code compared recursively), names, variables,
argument counts and flags. Line tables, ``co_firstlineno`` and ``co_filename``
are left out, so a function compiled from the baseline source on its own
matches the one the module defined at import. Fingerprints are only compared
within one interpreter: bytecode differs between CPython versions.
"""

from __future__ import annotations

import hashlib
from types import CodeType

_ATTRS = (
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_flags",
    "co_name",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
)


def fingerprint(code: CodeType) -> str:
    """A hex digest identifying what ``code`` does, independent of where it sits in a file."""
    h = hashlib.sha256()
    _feed(h, code)
    return h.hexdigest()


def _feed(h: hashlib._Hash, code: CodeType) -> None:
    h.update(code.co_code)
    for attr in _ATTRS:
        h.update(repr(getattr(code, attr)).encode())
        h.update(b"\0")
    h.update(repr(getattr(code, "co_qualname", "")).encode())
    h.update(repr(getattr(code, "co_exceptiontable", b"")).encode())
    for const in code.co_consts:
        if isinstance(const, CodeType):
            h.update(b"<code>")
            _feed(h, const)
        else:
            h.update(_const_repr(const).encode())
        h.update(b"\1")


def _const_repr(value: object) -> str:
    if isinstance(value, frozenset):
        return "frozenset{" + ",".join(sorted(_const_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_const_repr(v) for v in value) + ")"
    return f"{type(value).__name__}:{value!r}"
