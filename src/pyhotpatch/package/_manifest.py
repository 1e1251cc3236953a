"""The manifest of a ``.hotpatch`` package, as typed values, and its validation.

A manifest is plain JSON. ``Manifest.from_json`` accepts only what ``to_json``
could have produced: every field is type-checked, bounded and cross-checked, and
anything unexpected is a ``PackageError`` naming the offending field. Nothing
here touches files; ``_zipformat`` wraps it with I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyhotpatch.errors import PackageError

FORMAT = "pyhotpatch-package/1"
CLASSIFICATIONS = (
    "Critical",
    "Security",
    "UpdateRollUp",
    "FeaturePack",
    "ServicePack",
    "Definition",
    "Tools",
    "Updates",
)
#: What an action does to the live module; see docs/engine.md.
ACTION_KINDS = ("function", "define", "rebuild", "bases", "dataclass", "clear")
ROLES = ("function", "fget", "fset", "fdel")

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_CVE_RE = re.compile(
    r"^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}|[A-Z]+-[A-Za-z0-9-]{1,40})$"
)
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_DIST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,63}$")
_MAX_ITEMS = 10_000
_MAX_TEXT = 4096


@dataclass(frozen=True)
class SourceRef:
    """A piece of source text in the package payload and the line it starts on."""

    digest: str
    line: int


@dataclass(frozen=True)
class Action:
    """One change to one live module, applied in manifest order.

    ``function``: swap the code of the live function ``scope.name`` (in place);
    ``define``: run a definition (new function, class, constant, import) in the
    scope and bind ``names``; ``rebuild``: like ``define`` but run after every
    swap, to rebuild objects made at import time by changed code; ``bases``:
    set the bases of class ``scope`` to ``expression``; ``dataclass``: run the
    fixed dataclass definition ``name`` aside and copy its generated methods and
    field defaults (``names``) onto the live class; ``clear``: empty the caches
    (``lru_cache``, ``cache``) of ``scope.name``, whose results came from changed code.
    """

    kind: str
    scope: tuple[str, ...]
    name: str
    old: SourceRef | None = None
    new: SourceRef | None = None
    fingerprint: str | None = None
    names: tuple[str, ...] = ()
    rebind_defaults: bool = False
    aliases: tuple[tuple[str, str], ...] = ()
    expression: str | None = None
    #: a condition the module evaluated at import; the action applies only where it holds
    guard: str | None = None

    @property
    def qualname(self) -> str:
        """The dotted path of the changed object inside its module."""
        return ".".join((*self.scope, self.name or ",".join(self.names)))


@dataclass(frozen=True)
class ModulePatch:
    """The actions for one module, bound to the sha256 of its baseline source file."""

    name: str
    path: str
    baseline_sha256: str
    future: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    #: names bound by module-level imports in the baseline and in the fixed release; the
    #: compiler emits different bytecode for calls on imported names, so both are needed to
    #: compile a definition exactly as its module would
    imports: tuple[str, ...] = ()
    fixed_imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """One distribution patched by the package: the baseline it binds to, the fix it ships."""

    distribution: str
    baseline_version: str
    fixed_version: str
    modules: tuple[ModulePatch, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to decide whether and how to apply a package."""

    id: str
    title: str
    classification: str
    cves: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    format: str = FORMAT
    notes: tuple[str, ...] = field(default=(), compare=False)

    def source_digests(self) -> set[str]:
        """Every payload digest the manifest refers to."""
        return set(self.source_order())

    def source_order(self) -> list[str]:
        """Payload digests in the order the manifest first mentions them."""
        out: dict[str, None] = {}
        for target in self.targets:
            for module in target.modules:
                for action in module.actions:
                    for ref in (action.old, action.new):
                        if ref is not None:
                            out.setdefault(ref.digest)
        return list(out)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        return {
            "format": self.format,
            "id": self.id,
            "title": self.title,
            "classification": self.classification,
            "cves": list(self.cves),
            "notes": list(self.notes),
            "targets": [_target_json(t) for t in self.targets],
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Validate ``data`` and build a manifest; raise ``PackageError`` on any defect."""
        obj = _mapping(data, "manifest")
        _keys(
            obj, "manifest", {"format", "id", "title", "classification", "cves", "notes", "targets"}
        )
        fmt = _str(obj, "format", "manifest")
        if fmt != FORMAT:
            raise PackageError(f"unsupported package format {fmt!r} (this runtime reads {FORMAT})")
        ident = _str(obj, "id", "manifest")
        if not _ID_RE.match(ident):
            raise PackageError(f"manifest.id {ident!r} is not a valid hotpatch id")
        classification = _str(obj, "classification", "manifest")
        if classification not in CLASSIFICATIONS:
            raise PackageError(
                f"manifest.classification {classification!r} is not one of {CLASSIFICATIONS}"
            )
        cves = tuple(_str_list(obj, "cves", "manifest"))
        for cve in cves:
            if not _CVE_RE.match(cve):
                raise PackageError(f"manifest.cves: {cve!r} is not an advisory id")
        targets = tuple(
            _target_from(t, f"manifest.targets[{i}]")
            for i, t in enumerate(_list(obj, "targets", "manifest"))
        )
        if not targets:
            raise PackageError("manifest.targets is empty: the package patches nothing")
        seen: set[str] = set()
        for target in targets:
            for module in target.modules:
                if module.name in seen:
                    raise PackageError(f"module {module.name} appears twice in the manifest")
                seen.add(module.name)
        return cls(
            id=ident,
            title=_str(obj, "title", "manifest"),
            classification=classification,
            cves=cves,
            targets=targets,
            notes=tuple(_str_list(obj, "notes", "manifest")),
        )


def _target_json(t: Target) -> dict[str, Any]:
    return {
        "distribution": t.distribution,
        "baseline_version": t.baseline_version,
        "fixed_version": t.fixed_version,
        "modules": [
            {
                "name": m.name,
                "path": m.path,
                "baseline_sha256": m.baseline_sha256,
                "future": list(m.future),
                "imports": list(m.imports),
                "fixed_imports": list(m.fixed_imports),
                "actions": [_action_json(a) for a in m.actions],
            }
            for m in t.modules
        ],
    }


def _action_json(a: Action) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": a.kind, "scope": list(a.scope), "name": a.name}
    for key in ("old", "new"):
        ref = getattr(a, key)
        if ref is not None:
            out[key] = {"digest": ref.digest, "line": ref.line}
    if a.fingerprint is not None:
        out["fingerprint"] = a.fingerprint
    if a.names:
        out["names"] = list(a.names)
    if a.rebind_defaults:
        out["rebind_defaults"] = True
    if a.aliases:
        out["aliases"] = [list(p) for p in a.aliases]
    if a.expression is not None:
        out["expression"] = a.expression
    if a.guard is not None:
        out["guard"] = a.guard
    return out


def _target_from(data: object, where: str) -> Target:
    obj = _mapping(data, where)
    _keys(obj, where, {"distribution", "baseline_version", "fixed_version", "modules"})
    dist = _str(obj, "distribution", where)
    if not _DIST_RE.match(dist):
        raise PackageError(f"{where}.distribution {dist!r} is not a distribution name")
    versions = [_str(obj, k, where) for k in ("baseline_version", "fixed_version")]
    for v in versions:
        if not _VERSION_RE.match(v):
            raise PackageError(f"{where}: {v!r} is not a version")
    modules = tuple(
        _module_from(m, f"{where}.modules[{i}]") for i, m in enumerate(_list(obj, "modules", where))
    )
    return Target(dist, versions[0], versions[1], modules)


def _module_from(data: object, where: str) -> ModulePatch:
    obj = _mapping(data, where)
    _keys(
        obj,
        where,
        {"name", "path", "baseline_sha256", "future", "imports", "fixed_imports", "actions"},
    )
    name = _str(obj, "name", where)
    if not all(part.isidentifier() for part in name.split(".")):
        raise PackageError(f"{where}.name {name!r} is not a module name")
    path = _str(obj, "path", where)
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "" in parts or not path.endswith(".py"):
        raise PackageError(
            f"{where}.path {path!r} must be a relative .py path inside the distribution"
        )
    future = tuple(_str_list(obj, "future", where))
    for feature in future:
        if not feature.isidentifier():
            raise PackageError(f"{where}.future: {feature!r} is not a __future__ feature")
    actions = tuple(
        _action_from(a, f"{where}.actions[{i}]") for i, a in enumerate(_list(obj, "actions", where))
    )
    imports = tuple(_str_list(obj, "imports", where))
    fixed_imports = tuple(_str_list(obj, "fixed_imports", where))
    if not all(n.isidentifier() for n in (*imports, *fixed_imports)):
        raise PackageError(f"{where}: imported names must be identifiers")
    return ModulePatch(
        name, path, _digest(obj, "baseline_sha256", where), future, actions, imports, fixed_imports
    )


def _action_from(data: object, where: str) -> Action:
    obj = _mapping(data, where)
    _keys(
        obj,
        where,
        {
            "kind",
            "scope",
            "name",
            "old",
            "new",
            "fingerprint",
            "names",
            "rebind_defaults",
            "aliases",
            "expression",
            "guard",
        },
    )
    kind = _str(obj, "kind", where)
    if kind not in ACTION_KINDS:
        raise PackageError(f"{where}.kind {kind!r} is not one of {ACTION_KINDS}")
    scope = tuple(_str_list(obj, "scope", where))
    name = _str(obj, "name", where)
    for ident in (*scope, *([name] if name else [])):
        if not ident.isidentifier():
            raise PackageError(f"{where}: {ident!r} is not an identifier")
    old = _ref(obj.get("old"), f"{where}.old")
    new = _ref(obj.get("new"), f"{where}.new")
    fingerprint = obj.get("fingerprint")
    if fingerprint is not None and (
        not isinstance(fingerprint, str) or not _DIGEST_RE.match(fingerprint)
    ):
        raise PackageError(f"{where}.fingerprint must be a sha256 hex digest")
    names = tuple(_str_list(obj, "names", where)) if "names" in obj else ()
    if not all(n.isidentifier() for n in names):
        raise PackageError(f"{where}.names must be identifiers")
    rebind = obj.get("rebind_defaults", False)
    if not isinstance(rebind, bool):
        raise PackageError(f"{where}.rebind_defaults must be a boolean")
    aliases: list[tuple[str, str]] = []
    for i, pair in enumerate(_list(obj, "aliases", where) if "aliases" in obj else []):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(p, str) for p in pair)
            or not all(part.isidentifier() for part in pair[0].split("."))
            or not pair[1].isidentifier()
        ):
            raise PackageError(f"{where}.aliases[{i}] must be [module, name]")
        aliases.append((pair[0], pair[1]))
    expression = obj.get("expression")
    if expression is not None and (not isinstance(expression, str) or len(expression) > _MAX_TEXT):
        raise PackageError(f"{where}.expression must be a short string")
    guard = obj.get("guard")
    if guard is not None and (not isinstance(guard, str) or not guard or len(guard) > _MAX_TEXT):
        raise PackageError(f"{where}.guard must be a short string")
    needs = {
        "function": (
            old is not None and new is not None and fingerprint is not None and bool(name)
        ),
        "define": new is not None and bool(names),
        "rebuild": (new is not None) != (expression is not None) and bool(names),
        "bases": expression is not None and bool(scope) and not name,
        "dataclass": new is not None and bool(name) and bool(names),
        "clear": bool(name),
    }
    if not needs[kind]:
        raise PackageError(f"{where}: a {kind!r} action is missing required fields")
    return Action(
        kind, scope, name, old, new, fingerprint, names, rebind, tuple(aliases), expression, guard
    )


def _ref(data: object, where: str) -> SourceRef | None:
    if data is None:
        return None
    obj = _mapping(data, where)
    _keys(obj, where, {"digest", "line"})
    line = obj.get("line")
    if not isinstance(line, int) or isinstance(line, bool) or not 1 <= line <= 10_000_000:
        raise PackageError(f"{where}.line must be a positive line number")
    return SourceRef(_digest(obj, "digest", where), line)


def _mapping(data: object, where: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise PackageError(f"{where} must be a JSON object")
    return data


def _keys(obj: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    extra = set(obj) - allowed
    if extra:
        raise PackageError(f"{where} has unknown field(s): {', '.join(sorted(extra))}")


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise PackageError(f"{where}.{key} must be a string of at most {_MAX_TEXT} characters")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = obj.get(key)
    if not isinstance(value, list) or len(value) > _MAX_ITEMS:
        raise PackageError(f"{where}.{key} must be a list of at most {_MAX_ITEMS} items")
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    items = _list(obj, key, where)
    if not all(isinstance(i, str) and len(i) <= _MAX_TEXT for i in items):
        raise PackageError(f"{where}.{key} must be a list of strings")
    return list(items)


def _digest(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(obj, key, where)
    if not _DIGEST_RE.match(value):
        raise PackageError(f"{where}.{key} must be a sha256 hex digest")
    return value
