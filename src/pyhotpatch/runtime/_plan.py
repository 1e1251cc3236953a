"""Planning an apply: from a package and the live process to a list of assignments.

Planning reads the process and changes nothing. It resolves every action of a
module to live objects, compiles the baseline and the fixed code with the
running interpreter, checks the live code against the baseline fingerprint,
evaluates new definitions, and returns ``Assign`` records (object, attribute,
new value, old value) that ``_engine`` later commits in one batch. Any problem
raises ``BaselineMismatch`` or ``ApplyError`` before the process is touched.

A ``View`` shows the process as it was at its baseline while another hotpatch
is active, so a cumulative package is always planned against the baseline.
"""

from __future__ import annotations

import ast
import functools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import Any

from pyhotpatch.errors import ApplyError, BaselineMismatch
from pyhotpatch.package import Action, ModulePatch, Package, SourceRef
from pyhotpatch.runtime import _compile
from pyhotpatch.runtime._fingerprint import fingerprint


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


#: Marks an attribute that does not exist (before an addition, or after a removal).
MISSING: Any = _Missing()


@dataclass
class Assign:
    """Set ``target.attr`` to ``new``; ``old`` is what it held before (or ``MISSING``)."""

    target: Any
    attr: str
    new: Any
    old: Any

    @property
    def key(self) -> tuple[int, str]:
        """Identity of the slot this assignment writes."""
        return (id(self.target), self.attr)


@dataclass
class Rebuild:
    """A definition re-run after the swap, because import-time objects depend on changed code."""

    module: ModuleType
    owner: Any
    code: CodeType
    names: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...]
    view: View
    label: str
    expression: bool = False

    def run(self) -> list[Assign]:
        """Run the definition against the patched code; return the assignments it makes."""
        ns = _scope_namespace(self.owner, self.module)
        try:
            if self.expression:
                ns = {self.names[0]: eval(self.code, self.module.__dict__, ns)}
            else:
                exec(self.code, self.module.__dict__, ns)
        except Exception as exc:
            raise ApplyError(f"{self.label}: rebuilding failed: {exc!r}") from exc
        return _bind(self.owner, self.names, ns, self.aliases, self.view, self.label)


@dataclass(frozen=True)
class _Where:
    """The module being planned and what compiling its package sources needs."""

    module: ModuleType
    patch: ModulePatch
    package: Package
    view: View
    filename: str
    flags: int

    def source(self, ref: SourceRef | None) -> str:
        """The package text ``ref`` points at."""
        assert ref is not None
        return self.package.source(ref.digest)

    def statement(self, action: Action) -> ast.stmt:
        """The fixed release's statement an action runs."""
        assert action.new is not None
        return _compile.parse_unit(self.source(action.new), action.new.line)

    def in_scope(self, action: Action, stmt: ast.stmt | None = None) -> CodeType:
        """Code running the action's statement (parsed already, or not) where the module would."""
        return _compile.compile_in_scope(
            stmt or self.statement(action),
            action.scope,
            self.filename,
            self.flags,
            self.patch.fixed_imports,
        )


def _rebuild_code(where: _Where, action: Action) -> CodeType:
    """Code for a rebuild: a statement run in the scope, or an expression bound to one name."""
    if action.expression is not None:
        return _compile.compile_expression(action.expression, where.filename, where.flags)
    return where.in_scope(action)


@dataclass
class ModulePlan:
    """Everything needed to patch one module, ready to commit."""

    name: str
    assigns: list[Assign] = field(default_factory=list)
    rebuilds: list[Rebuild] = field(default_factory=list)
    caches: list[Any] = field(default_factory=list)
    functions: int = 0
    skipped: int = 0
    #: (baseline, fixed) code of nested functions, to find closures made later
    nested: list[tuple[CodeType, CodeType]] = field(default_factory=list)


_SLOTS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__bases__"})


class View:
    """The process seen at its baseline: live values, except slots an active patch changed."""

    def __init__(self, assigns: Iterable[Assign] = ()) -> None:
        self._orig: dict[tuple[int, str], Any] = {}
        for a in assigns:
            self._orig.setdefault(a.key, a.old)

    def get(self, target: Any, attr: str) -> Any:
        """The baseline value of ``target.attr`` (``MISSING`` if it had none)."""
        key = (id(target), attr)
        if key in self._orig:
            return self._orig[key]
        if attr in _SLOTS:
            return getattr(target, attr)
        return target.__dict__.get(attr, MISSING)


def plan_module(
    module: ModuleType,
    patch: ModulePatch,
    package: Package,
    view: View,
    yield_gil: bool = True,
    shared: dict[str, dict[str, Any]] | None = None,
) -> ModulePlan:
    """Plan every action of ``patch`` against the live ``module``.

    ``shared`` maps the names of modules planned earlier in the same apply to what the
    package defines in them, so ``from .utils import new_helper`` finds a helper the
    package adds to another module before anything is bound.
    """
    filename = getattr(module, "__file__", None) or f"<{module.__name__}>"
    if not filename.replace("\\", "/").endswith(patch.path):
        raise BaselineMismatch(
            f"module {patch.name} is loaded from {filename}, not from {patch.path} of the baseline"
        )
    flags = _compile.future_flags(patch.future)
    plan = ModulePlan(patch.name)
    namespaces: dict[int, dict[str, Any]] = {}
    nested: dict[int, tuple[CodeType, CodeType, str]] = {}
    pending = shared if shared is not None else {}
    pending[patch.name] = namespaces.setdefault(id(module), {})

    def scope_ns(owner: Any) -> dict[str, Any]:
        ns = namespaces.setdefault(id(owner), _scope_namespace(owner, module))
        if owner is not module:
            # what the package defines at module level is bound only at commit; a class
            # body (its decorators, default values) must already see it
            for key, value in namespaces.get(id(module), {}).items():
                ns.setdefault(key, value)
        return ns

    where = _Where(module, patch, package, view, filename, flags)
    for action in patch.actions:
        label = f"{patch.name}.{action.qualname}" if action.qualname else patch.name
        if action.guard is not None and not _holds(action.guard, module, filename, flags, label):
            continue
        owner = _resolve_scope(module, action.scope, label)
        if action.kind == "function":
            _plan_function(where, owner, scope_ns(owner), action, plan, nested, label)
        elif action.kind in ("define", "rebuild"):
            if action.kind == "rebuild":
                plan.rebuilds.append(
                    Rebuild(
                        module,
                        owner,
                        _rebuild_code(where, action),
                        action.names,
                        action.aliases,
                        view,
                        label,
                        action.expression is not None,
                    )
                )
                continue
            ns = scope_ns(owner)
            stmt = where.statement(action)
            if not _import_pending(stmt, module, pending, ns):
                try:
                    exec(where.in_scope(action, stmt), module.__dict__, ns)
                except Exception as exc:
                    raise ApplyError(
                        f"{label}: running the new definition failed: {exc!r}"
                    ) from exc
            plan.assigns += _bind(owner, action.names, ns, action.aliases, view, label)
        elif action.kind == "clear":
            plan.caches += unwrap(view.get(owner, action.name))[1]
        elif action.kind == "dataclass":
            plan.assigns += _refresh_dataclass(where, owner, dict(scope_ns(owner)), action, label)
        elif action.kind == "bases":
            assert action.expression is not None
            ns = namespaces.setdefault(id(module), {})
            expr = _compile.compile_expression(action.expression, filename, flags)
            try:
                bases = eval(expr, module.__dict__, ns)
            except Exception as exc:
                raise ApplyError(f"{label}: evaluating the new bases failed: {exc!r}") from exc
            if not isinstance(bases, tuple) or not all(isinstance(b, type) for b in bases):
                raise ApplyError(f"{label}: new bases are not a tuple of classes")
            plan.assigns.append(Assign(owner, "__bases__", bases, view.get(owner, "__bases__")))
        if yield_gil:
            time.sleep(0)
    if nested:
        plan.assigns += _closures(nested, view)
        plan.nested = [(old, new) for old, new, _ in nested.values()]
    return plan


def _plan_function(
    where: _Where,
    owner: Any,
    ns: dict[str, Any],
    action: Action,
    plan: ModulePlan,
    nested: dict[int, tuple[CodeType, CodeType, str]],
    label: str,
) -> None:
    assert action.old is not None and action.new is not None
    view = where.view
    raw = view.get(owner, action.name)
    if raw is MISSING:
        raise BaselineMismatch(f"{label}: not defined in the running process")
    old, new = (
        _compile.compile_function(
            where.source(ref), ref.line, action.scope, where.filename, where.flags, imports
        )
        for ref, imports in (
            (action.old, where.patch.imports),
            (action.new, where.patch.fixed_imports),
        )
    )
    want_old, want_new = fingerprint(old), fingerprint(new)
    funcs, caches = unwrap(raw)
    targets = [f for f in funcs if fingerprint(view.get(f, "__code__")) == want_old]
    if not targets:
        if any(fingerprint(f.__code__) == want_new for f in funcs):
            plan.skipped += 1
            return
        raise BaselineMismatch(f"{label}: the running code does not match the package's baseline")
    defaults: tuple[Any, Any] | None = None
    if action.rebind_defaults:
        defaults = _new_defaults(where.module, ns, where.source(action.new), action, label)
    for func in targets:
        live = view.get(func, "__code__")
        if live.co_freevars != new.co_freevars:
            raise ApplyError(
                f"{label}: the fixed code needs free variables {new.co_freevars}, "
                f"the live function has {live.co_freevars}"
            )
        plan.assigns.append(Assign(func, "__code__", new, live))
        if defaults is not None:
            for attr, value in zip(("__defaults__", "__kwdefaults__"), defaults, strict=True):
                plan.assigns.append(Assign(func, attr, value, view.get(func, attr)))
        _pair_nested(live, new, f"{label}.<locals>", nested)
        plan.functions += 1
    plan.caches += caches


def unwrap(obj: Any, limit: int = 32) -> tuple[list[FunctionType], list[Any]]:
    """Functions reachable from a class or module attribute, and cache wrappers on the way.

    Follows static and class methods, properties, ``cached_property``,
    partials, bound methods, ``__wrapped__`` chains and the cells of decorator
    closures, so a fix reaches the function object every reference shares.
    """
    funcs: list[FunctionType] = []
    caches: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack and len(seen) < limit:
        item, depth = stack.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        nxt: list[Any] = []
        if isinstance(item, FunctionType):
            funcs.append(item)
            nxt.append(item.__dict__.get("__wrapped__"))
            if depth < 3:
                for cell in item.__closure__ or ():
                    try:
                        value = cell.cell_contents
                    except ValueError:
                        continue
                    if callable(value) and not isinstance(value, type):
                        nxt.append(value)
        elif isinstance(item, (staticmethod, classmethod, MethodType)):
            nxt.append(item.__func__)
        elif isinstance(item, property):
            nxt += [item.fget, item.fset, item.fdel]
        elif isinstance(
            item, (functools.cached_property, functools.partial, functools.partialmethod)
        ):
            nxt.append(item.func)
        else:
            inner = getattr(item, "__dict__", {}).get("__wrapped__")
            if inner is not None:
                nxt.append(inner)
                if callable(getattr(type(item), "cache_clear", None)):
                    caches.append(item)
        stack += [(n, depth + 1) for n in nxt if n is not None]
    return funcs, caches


def _pair_nested(
    live: CodeType, new: CodeType, label: str, out: dict[int, tuple[CodeType, CodeType, str]]
) -> None:
    """Match code objects nested in ``live`` with their counterparts in ``new``."""
    new_children: dict[tuple[str, int], CodeType] = {}
    counts: dict[str, int] = {}
    for const in new.co_consts:
        if isinstance(const, CodeType):
            n = counts.get(const.co_name, 0)
            counts[const.co_name] = n + 1
            new_children[(const.co_name, n)] = const
    counts = {}
    for const in live.co_consts:
        if not isinstance(const, CodeType):
            continue
        n = counts.get(const.co_name, 0)
        counts[const.co_name] = n + 1
        match = new_children.get((const.co_name, n))
        if match is None or fingerprint(match) == fingerprint(const):
            continue
        out[id(const)] = (const, match, f"{label}.{const.co_name}")
        _pair_nested(const, match, f"{label}.{const.co_name}.<locals>", out)


def _closures(nested: dict[int, tuple[CodeType, CodeType, str]], view: View) -> list[Assign]:
    """Assignments for closures created before the patch from changed nested code."""
    import gc

    out: list[Assign] = []
    for obj in gc.get_objects():
        if type(obj) is not FunctionType:
            continue
        code = view.get(obj, "__code__")
        if id(code) in nested:
            old, new, label = nested[id(code)]
            if code is not old:
                continue
            if old.co_freevars != new.co_freevars:
                raise ApplyError(
                    f"{label}: closures made before the patch capture {old.co_freevars}, "
                    f"the fixed code needs {new.co_freevars}"
                )
            out.append(Assign(obj, "__code__", new, old))
    return out


def _new_defaults(
    module: ModuleType, ns: dict[str, Any], source: str, action: Action, label: str
) -> tuple[Any, Any]:
    """Evaluate the fixed definition's default values where the ``def`` would have."""
    assert action.new is not None
    stmt = _compile.parse_unit(source, action.new.line)
    assert isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
    args = stmt.args
    kw: list[ast.expr] = [
        ast.Tuple(elts=[ast.Constant(a.arg), d], ctx=ast.Load())
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
        if d is not None
    ]
    expr = ast.Expression(
        ast.Tuple(
            elts=[
                ast.Tuple(elts=list(args.defaults), ctx=ast.Load()),
                ast.Tuple(elts=kw, ctx=ast.Load()),
            ],
            ctx=ast.Load(),
        )
    )
    ast.fix_missing_locations(expr)
    try:
        pos, kws = eval(compile(expr, module.__file__ or "<hotpatch>", "eval"), module.__dict__, ns)
    except Exception as exc:
        raise ApplyError(f"{label}: evaluating the new default values failed: {exc!r}") from exc
    return (tuple(pos) or None, dict(kws) or None)


def _refresh_dataclass(
    where: _Where, owner: Any, ns: dict[str, Any], action: Action, label: str
) -> list[Assign]:
    """Assignments that give the live dataclass the generated methods of its fixed definition."""
    view = where.view
    live = view.get(owner, action.name)
    if not isinstance(live, type) or "__dataclass_fields__" not in live.__dict__:
        raise BaselineMismatch(f"{label}: not a dataclass in the running process")
    try:
        exec(where.in_scope(action), where.module.__dict__, ns)
    except Exception as exc:
        raise ApplyError(
            f"{label}: running the fixed dataclass definition failed: {exc!r}"
        ) from exc
    fresh = ns.get(action.name)
    if not isinstance(fresh, type):
        raise ApplyError(f"{label}: the fixed definition did not make a class")
    out = []
    for attr in action.names:
        new = fresh.__dict__.get(attr, MISSING)
        old = view.get(live, attr)
        if new is not MISSING and hasattr(new, "__qualname__") and callable(new):
            new.__qualname__ = f"{live.__qualname__}.{attr}"
        if new is not old:
            out.append(Assign(live, attr, new, old))
    return out


def plan_order(modules: tuple[ModulePatch, ...], package: Package) -> list[ModulePatch]:
    """Modules ordered so that one importing a new name from another comes after it."""
    names = {m.name for m in modules}
    needs: dict[str, set[str]] = {}
    for patch in modules:
        deps = set()
        for action in patch.actions:
            if action.kind == "define" and action.new is not None:
                stmt = _compile.parse_unit(package.source(action.new.digest), action.new.line)
                source = import_source(stmt, patch.name, patch.path.endswith("__init__.py"))
                if source in names and source != patch.name:
                    deps.add(source)
        needs[patch.name] = deps
    ordered: list[ModulePatch] = []
    placed: set[str] = set()
    while len(ordered) < len(modules):
        ready = [m for m in modules if m.name not in placed and needs[m.name] <= placed]
        # a cycle cannot be ordered: keep the manifest's order for what is left
        for patch in ready or [m for m in modules if m.name not in placed]:
            ordered.append(patch)
            placed.add(patch.name)
    return ordered


def import_source(stmt: ast.stmt, module_name: str, is_package: bool) -> str | None:
    """The absolute module a ``from ... import`` statement reads from (None for others)."""
    if not isinstance(stmt, ast.ImportFrom):
        return None
    if not stmt.level:
        return stmt.module
    base = module_name.split(".") if is_package else module_name.split(".")[:-1]
    base = base[: len(base) - (stmt.level - 1)] if stmt.level > 1 else base
    return ".".join([*base, *([stmt.module] if stmt.module else [])])


def _import_pending(
    stmt: ast.stmt, module: ModuleType, pending: dict[str, dict[str, Any]], ns: dict[str, Any]
) -> bool:
    """Bind ``from M import N`` from what the package defines in ``M``, if it defines ``N``."""
    source = import_source(stmt, module.__name__, hasattr(module, "__path__"))
    if source is None or source not in pending or not isinstance(stmt, ast.ImportFrom):
        return False
    provided = pending[source]
    if not all(alias.name in provided for alias in stmt.names):
        return False
    for alias in stmt.names:
        ns[alias.asname or alias.name] = provided[alias.name]
    return True


def _holds(guard: str, module: ModuleType, filename: str, flags: int, label: str) -> bool:
    """Whether the condition a definition was made under at import holds in the live module."""
    try:
        return bool(eval(_compile.compile_expression(guard, filename, flags), module.__dict__, {}))
    except Exception as exc:
        raise ApplyError(f"{label}: evaluating the condition {guard!r} failed: {exc!r}") from exc


def _resolve_scope(module: ModuleType, scope: tuple[str, ...], label: str) -> Any:
    owner: Any = module
    for name in scope:
        inner = owner.__dict__.get(name)
        if not isinstance(inner, type):
            raise BaselineMismatch(f"{label}: {name!r} is not a class in the running process")
        owner = inner
    return owner


def _scope_namespace(owner: Any, module: ModuleType) -> dict[str, Any]:
    """A namespace to run a definition in: empty for a module, a copy of a class's dict."""
    return {} if owner is module else dict(owner.__dict__)


def _bind(
    owner: Any,
    names: tuple[str, ...],
    ns: dict[str, Any],
    aliases: tuple[tuple[str, str], ...],
    view: View,
    label: str,
) -> list[Assign]:
    out: list[Assign] = []
    cell = ns.pop("__classcell__", None)
    if cell is not None:
        cell.cell_contents = owner
    for name in names:
        if name not in ns:
            raise ApplyError(f"{label}: the new definition did not bind {name!r}")
        value = ns[name]
        set_name = getattr(type(value), "__set_name__", None)
        if isinstance(owner, type) and set_name is not None:
            # a class statement would have called it; binding onto a live class does not
            set_name(value, owner, name)
        old = view.get(owner, name)
        out.append(Assign(owner, name, value, old))
        if old is MISSING:
            continue
        for module_name, alias in aliases:
            other = sys.modules.get(module_name)
            if other is not None and view.get(other, alias) is old:
                out.append(Assign(other, alias, value, old))
    return out


def apply_assigns(assigns: list[Assign], forward: bool = True) -> None:
    """Write a batch of assignments with as little Python between the stores as possible."""
    from collections import deque
    from itertools import chain

    pick: Callable[[Assign], Any] = (lambda a: a.new) if forward else (lambda a: a.old)
    deletes = [a for a in assigns if pick(a) is MISSING]
    sets = [a for a in assigns if pick(a) is not MISSING]
    del_targets, del_attrs = [a.target for a in deletes], [a.attr for a in deletes]
    set_targets, set_attrs = [a.target for a in sets], [a.attr for a in sets]
    values = [pick(a) for a in sets]
    # one C-level loop: no bytecode runs between the stores, so no other thread can
    # observe a half-written batch (unless an audit hook written in Python is installed)
    deque(
        chain(map(delattr, del_targets, del_attrs), map(setattr, set_targets, set_attrs, values)),
        maxlen=0,
    )
