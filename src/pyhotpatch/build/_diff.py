"""Diff one module of two releases into package actions, noise and refusals.

The differ walks module and class bodies side by side. Function bodies that
behave differently become in-place code swaps; new functions, classes,
constants and imports become definitions run at apply time; objects built at
import time by changed code become rebuilds. Everything else that changed is
either noise (reported, not shipped) or a refusal with ``path:line: reason``.
The rules mirror kpatch-build's: code may change, layout and import-time state
may not, unless the change is provably safe to re-create.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from pyhotpatch.build import _astutil as au
from pyhotpatch.build import _shapes as sh
from pyhotpatch.package import Action, SourceRef


@dataclass
class Explain:
    """What a build would do, for ``--explain`` and error reports."""

    swapped: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def extend(self, other: Explain) -> None:
        """Add another module's findings."""
        for key in ("swapped", "added", "rebuilt", "ignored", "refused"):
            getattr(self, key).extend(getattr(other, key))


@dataclass
class Context:
    """What the differ knows about the whole release, beyond one module."""

    top_level: set[str]
    #: (module, name) -> [(importing module, alias)] for ``from module import name`` in the baseline
    importers: dict[tuple[str, str], list[tuple[str, str]]]


class ModuleDiffer:
    """Diff the baseline and fixed source of one module."""

    def __init__(self, name: str, path: str, old: str, new: str, context: Context) -> None:
        self.name, self.path, self.context = name, path, context
        self.old_src, self.new_src = old, new
        self.old_lines, self.new_lines = old.splitlines(), new.splitlines()
        self.actions: list[Action] = []
        self.rebuilds: list[Action] = []
        self.sources: dict[str, str] = {}
        self.explain = Explain()
        #: module-level names whose calls now give other results (changed functions, and
        #: classes whose constants or constructors changed)
        self.state_changed: set[str] = set()
        #: per scope, names bound to new objects by the package
        self.values: dict[tuple[str, ...], set[str]] = defaultdict(set)
        self.local_names: set[str] = set()
        self.future: tuple[str, ...] = ()
        self.imports: tuple[str, ...] = ()
        self.fixed_imports: tuple[str, ...] = ()
        self.rebound: dict[str, int] = {}

    # -- entry point ------------------------------------------------------------------------
    def run(self) -> None:
        """Diff the module; results land in ``actions``, ``sources`` and ``explain``."""
        try:
            old_tree = ast.parse(self.old_src, self.path)
        except SyntaxError as exc:
            self._refuse(exc.lineno or 1, f"baseline does not parse with this Python: {exc.msg}")
            return
        try:
            new_tree = ast.parse(self.new_src, self.path)
        except SyntaxError as exc:
            self._refuse(exc.lineno or 1, f"fixed release does not parse: {exc.msg}")
            return
        self.old_code = compile(old_tree, self.path, "exec", dont_inherit=True)
        self.new_code = compile(new_tree, self.path, "exec", dont_inherit=True)
        self.local_names = sh.own_names(new_tree.body, self.context.top_level) | sh.own_names(
            old_tree.body, self.context.top_level
        )
        old_future, new_future = sh.future(old_tree), sh.future(new_tree)
        if old_future != new_future:
            self._refuse(
                1, "from __future__ imports changed: the whole module compiles differently"
            )
            return
        self.future = new_future
        self.imports = sh.imported(old_tree.body)
        #: ``Cls.attr`` rebound by a module-level assignment in the baseline, and where
        self.rebound = {
            target: stmt.lineno
            for stmt in old_tree.body
            if isinstance(stmt, ast.Assign)
            for target in (au.dotted(t) for t in stmt.targets)
            if target and "." in target
        }
        self.fixed_imports = sh.imported(new_tree.body)
        self._body(old_tree.body, new_tree.body, ())
        # definitions run in the order of the fixed file, as the module itself would run them
        self.actions.sort(key=lambda a: (a.kind == "bases", a.new.line if a.new else 0))
        self._propagate(new_tree.body)
        self._find_rebuilds(new_tree.body, ())
        self.actions += self.rebuilds
        self._stale_caches(new_tree.body, ())

    # -- bodies -----------------------------------------------------------------------------
    def _body(
        self, old_body: list[ast.stmt], new_body: list[ast.stmt], scope: tuple[str, ...]
    ) -> None:
        old, new = sh.collect(old_body, scope), sh.collect(new_body, scope)
        where = ".".join(scope) or "module"
        if sh.docstring(old_body) != sh.docstring(new_body):
            self._ignore(new_body[0].lineno if new_body else 1, f"{where}: docstring changed")
        self._imports(old, new, scope)
        self._assigns(old, new, scope)
        for key, node in new.funcs.items():
            before = old.funcs.get(key)
            if before is None:
                self._new_definition(node, scope, "function")
            else:
                self._function(before, node, scope)
        for key, node in old.funcs.items():
            if key not in new.funcs:
                self._ignore(
                    node.lineno, f"{sh.qual(scope, node.name)} removed; the live one stays, unused"
                )
        for name, cls in new.classes.items():
            before_cls = old.classes.get(name)
            if before_cls is None:
                self._new_definition(cls, scope, "class")
            else:
                self._class(before_cls, cls, scope)
        for name, cls in old.classes.items():
            if name not in new.classes:
                self._ignore(
                    cls.lineno, f"class {sh.qual(scope, name)} removed; the live one stays"
                )
        self._other(old.other, new.other, scope)

    def _other(self, old: list[ast.stmt], new: list[ast.stmt], scope: tuple[str, ...]) -> None:
        """Statements other than definitions, imports and assignments: they ran at import."""

        def unmatched(mine: list[ast.stmt], theirs: list[ast.stmt], report: bool) -> list[ast.stmt]:
            left = Counter(au.dump(s) for s in theirs)
            out = []
            for stmt in mine:
                d = au.dump(stmt)
                if left[d]:
                    left[d] -= 1
                elif not au.is_type_checking(stmt) and not sh.is_string(stmt):
                    out.append(stmt)
                elif report:
                    self._ignore(
                        stmt.lineno,
                        "TYPE_CHECKING block changed (never runs)"
                        if au.is_type_checking(stmt)
                        else "string statement changed (documentation)",
                    )
            return out

        added, removed = unmatched(new, old, True), unmatched(old, new, False)
        if not scope:
            added, removed = self._conditional_blocks(added, removed)
        where = f"class {'.'.join(scope)} body" if scope else "module level"
        for stmt in added:
            kind = "conditional definition" if sh.defines(stmt) else "statement run at import"
            verb = "changed" if removed else "added"
            self._refuse(
                stmt.lineno,
                f"{kind} {verb} at {where}: import-time side effects cannot be replayed",
            )
        for stmt in removed[len(added) :]:
            self._refuse(
                self._new_line_near(stmt),
                f"statement run at import removed at {where}: its effects are already in the process",
            )

    def _conditional_blocks(
        self, added: list[ast.stmt], removed: list[ast.stmt]
    ) -> tuple[list[ast.stmt], list[ast.stmt]]:
        """Diff the branches of module-level ``if`` blocks whose condition did not change.

        ``if has_crypto: class RSAAlgorithm: ...`` defines what it defines only when the
        condition held at import. Its actions carry the condition as a guard, which the
        runtime evaluates against the live module: unchanged import-time state gives the
        branch that ran. Returns the statements still unmatched.
        """
        still_added: list[ast.stmt] = []
        for stmt in added:
            twin = next(
                (
                    r
                    for r in removed
                    if isinstance(stmt, ast.If)
                    and isinstance(r, ast.If)
                    and au.dump(r.test) == au.dump(stmt.test)
                ),
                None,
            )
            if (
                twin is None
                or not isinstance(stmt, ast.If)
                or not isinstance(twin, ast.If)
                or au.impure(stmt.test, self.local_names)
            ):
                still_added.append(stmt)
                continue
            removed = [r for r in removed if r is not twin]
            test = ast.unparse(stmt.test)
            for old_body, new_body, guard in (
                (twin.body, stmt.body, test),
                (twin.orelse, stmt.orelse, f"not ({test})"),
            ):
                if au.dump(old_body) != au.dump(new_body):
                    self._guarded(old_body, new_body, guard)
        return still_added, removed

    def _guarded(self, old_body: list[ast.stmt], new_body: list[ast.stmt], guard: str) -> None:
        start, start_rebuilds = len(self.actions), len(self.rebuilds)
        self._body(old_body, new_body, ())

        def guarded(action: Action) -> Action:
            inner = f" and ({action.guard})" if action.guard else ""
            return replace(action, guard=f"({guard}){inner}")

        self.actions[start:] = [guarded(a) for a in self.actions[start:]]
        self.rebuilds[start_rebuilds:] = [guarded(a) for a in self.rebuilds[start_rebuilds:]]

    # -- imports and constants --------------------------------------------------------------
    def _imports(self, old: sh.Scope, new: sh.Scope, scope: tuple[str, ...]) -> None:
        for name, (stmt, text) in new.imports.items():
            before = old.imports.get(name)
            if before is not None and before[1] == text:
                continue
            module = sh.import_source(stmt, self.name)
            if module and not (au.stdlib(module) or module.split(".")[0] in self.context.top_level):
                self._refuse(
                    stmt.lineno,
                    f"new import of {module}, from outside the distribution and the standard library: importing it at apply time could run its import-time code",
                )
                continue
            self._emit_define(text, stmt.lineno, scope, (name,), f"import {name}", "added")
        for name, (stmt, _) in old.imports.items():
            if name not in new.imports:
                self._ignore(stmt.lineno, f"import of {name} removed")

    def _assigns(self, old: sh.Scope, new: sh.Scope, scope: tuple[str, ...]) -> None:
        for name, stmts in new.assigns.items():
            before = old.assigns.get(name, [])
            if [au.dump(s) for s in stmts] == [au.dump(s) for s in before]:
                continue
            stmt = stmts[-1]
            label = sh.qual(scope, name)
            if name in au.VERSION_NAMES and all(sh.literal(s) for s in stmts):
                self._ignore(stmt.lineno, f"version string {label} changed")
                continue
            if name == "__slots__":
                self._refuse(
                    stmt.lineno,
                    f"__slots__ of {'.'.join(scope) or 'module'} changed: live instances keep the old layout",
                )
                continue
            if len(stmts) > 1 or len(before) > 1:
                self._chain(name, stmts, bool(before), scope, label)
                continue
            if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
                self._ignore(stmt.lineno, f"annotation of {label} changed")
                continue
            if not isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                self._refuse(stmt.lineno, f"{label}: augmented assignment at import changed")
                continue
            if isinstance(stmt, ast.Assign) and not all(
                isinstance(t, ast.Name) for t in stmt.targets
            ):
                self._refuse(stmt.lineno, f"{label}: unpacking assignment at import changed")
                continue
            if (
                before
                and isinstance(stmt, ast.AnnAssign)
                and isinstance(before[0], ast.AnnAssign)
                and au.dump(stmt.value) == au.dump(before[0].value)
            ):
                self._ignore(stmt.lineno, f"annotation of {label} changed")
                continue
            value = stmt.value
            assert value is not None
            if self._side_effects(
                value, stmt.lineno, f"{label} is computed at import by code with side effects"
            ):
                continue
            if scope:
                self.state_changed.add(scope[0])
            names = tuple(sh.targets(stmt))
            kind = "rebuild" if self._depends(value, scope) else "define"
            self._emit_define(
                self._segment(stmt, self.new_lines),
                stmt.lineno,
                scope,
                names,
                f"constant {label}",
                "added" if kind == "define" else "rebuilt",
                kind=kind,
                aliases=self._aliases(scope, names) if before else (),
            )
        for name, stmts in old.assigns.items():
            if name not in new.assigns:
                self._ignore(
                    stmts[-1].lineno, f"{sh.qual(scope, name)} removed; the live value stays"
                )
        for key, stmt in new.attr_assigns.items():
            before_attr = old.attr_assigns.get(key)
            if before_attr is not None and au.dump(before_attr) == au.dump(stmt):
                continue
            self._attr_rebuild(stmt, "changed")

    def _chain(
        self,
        name: str,
        stmts: list[ast.stmt],
        existed: bool,
        scope: tuple[str, ...],
        label: str,
    ) -> None:
        """Recompute a name the module builds in steps (``X = [...]``, then ``X = f(X)``).

        Every step runs again after the swap, in order, each reading what the one before
        bound; allowed only when every step is a plain assignment to the name alone.
        """
        for stmt in stmts:
            plain = isinstance(stmt, ast.Assign) and [
                t.id for t in stmt.targets if isinstance(t, ast.Name)
            ] == [name]
            if not plain:
                self._refuse(
                    stmt.lineno,
                    f"{label} is assigned more than once at import, not only by plain "
                    "assignments; cannot recompute it",
                )
                return
            assert isinstance(stmt, ast.Assign)
            if self._side_effects(
                stmt.value, stmt.lineno, f"{label} is computed at import by code with side effects"
            ):
                return
        if scope:
            self.state_changed.add(scope[0])
        for i, stmt in enumerate(stmts):
            last = i == len(stmts) - 1
            self._emit_define(
                self._segment(stmt, self.new_lines),
                stmt.lineno,
                scope,
                (name,),
                f"constant {label} (step {i + 1} of {len(stmts)})",
                "rebuilt",
                kind="rebuild",
                aliases=self._aliases(scope, (name,)) if existed and last else (),
            )

    def _attr_rebuild(self, stmt: ast.Assign, why: str) -> None:
        target = stmt.targets[0]
        owner = au.dotted(target.value) if isinstance(target, ast.Attribute) else None
        if (
            owner is None
            or owner.split(".")[0] not in self.local_names
            or not isinstance(target, ast.Attribute)
        ):
            self._refuse(stmt.lineno, f"assignment to {ast.unparse(target)} at import {why}")
            return
        if self._side_effects(
            stmt.value,
            stmt.lineno,
            f"{ast.unparse(target)} is built at import by code with side effects",
        ):
            return
        self.rebuilds.append(
            Action(
                "rebuild",
                tuple(owner.split(".")),
                "",
                names=(target.attr,),
                expression=ast.unparse(stmt.value),
            )
        )
        self.explain.rebuilt.append(
            f"{self.path}:{stmt.lineno}: {ast.unparse(target)} = {ast.unparse(stmt.value)}"
        )

    # -- functions --------------------------------------------------------------------------
    def _function(
        self,
        old: ast.FunctionDef | ast.AsyncFunctionDef,
        new: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: tuple[str, ...],
    ) -> None:
        label = sh.qual(scope, new.name)
        identical = au.dump(old) == au.dump(new)
        if identical or (
            au.behaviour(old) == au.behaviour(new)
            and au.dump(old.decorator_list) == au.dump(new.decorator_list)
        ):
            if not identical:
                self._ignore(new.lineno, f"{label}: docstring or annotations changed")
            defaults = (*new.args.defaults, *[d for d in new.args.kw_defaults if d is not None])
            if any(self._depends(d, scope) for d in defaults):
                self._emit_function(old, new, scope, rebind=True, why="default values rebuilt")
            return
        if type(old) is not type(new):
            self._refuse(new.lineno, f"{label} changed between def and async def")
            return
        if au.dump(old.decorator_list) != au.dump(new.decorator_list):
            self._refuse(
                new.lineno, f"{label}: decorators changed; the live wrapper cannot be rebuilt"
            )
            return
        if au.is_generator(old) != au.is_generator(new):
            self._refuse(new.lineno, f"{label} changed between a function and a generator")
            return
        problem = au.signature_problem(old.args, new.args)
        if problem:
            self._refuse(new.lineno, f"{label}: signature changed incompatibly ({problem})")
            return
        old_defaults = au.dump(old.args.defaults) + au.dump(old.args.kw_defaults)
        rebind = old_defaults != au.dump(new.args.defaults) + au.dump(new.args.kw_defaults)
        if rebind:
            for expr in (*new.args.defaults, *[d for d in new.args.kw_defaults if d is not None]):
                if self._side_effects(
                    expr, new.lineno, f"{label}: new default value has side effects"
                ):
                    return
        old_code = sh.code_at(self.old_code, scope, old.name, getattr(old, "_occurrence", 0))
        new_code = sh.code_at(self.new_code, scope, new.name, getattr(new, "_occurrence", 0))
        if old_code is not None and new_code is not None:
            if old_code.co_freevars != new_code.co_freevars:
                why = (
                    "starts using super() or __class__; the live method has no __class__ cell"
                    if "__class__" in new_code.co_freevars
                    else f"free variables changed {old_code.co_freevars} -> {new_code.co_freevars}"
                )
                self._refuse(new.lineno, f"{label}: {why}")
                return
            bad = sh.unmappable_closures(old_code, new_code, label)
            if bad:
                self._refuse(new.lineno, bad)
                return
        replaced_at = self.rebound.get(sh.qual(scope, new.name))
        if replaced_at is not None:
            self._ignore(
                new.lineno,
                f"{label} changed, but line {replaced_at} replaces it at import: "
                "the live attribute is another object and this code never runs",
            )
            return
        if not scope:
            self.state_changed.add(new.name)
        elif new.name in sh.CONSTRUCTORS:
            self.state_changed.add(scope[0])
        self._emit_function(old, new, scope, rebind=rebind)

    def _emit_function(
        self,
        old: ast.FunctionDef | ast.AsyncFunctionDef,
        new: ast.FunctionDef | ast.AsyncFunctionDef,
        scope: tuple[str, ...],
        rebind: bool,
        why: str = "",
    ) -> None:
        old_ref = self._store(self._segment(old, self.old_lines, decorators=False), old.lineno)
        new_ref = self._store(self._segment(new, self.new_lines, decorators=False), new.lineno)
        fp = hashlib.sha256(au.identity(old).encode()).hexdigest()
        self.actions.append(
            Action(
                "function",
                scope,
                sh.mangle(scope, new.name),
                old_ref,
                new_ref,
                fp,
                rebind_defaults=rebind,
            )
        )
        suffix = f" ({why})" if why else ""
        self.explain.swapped.append(
            f"{self.path}:{new.lineno}: {self.name}.{sh.qual(scope, new.name)}{suffix}"
        )

    # -- classes ----------------------------------------------------------------------------
    def _class(self, old: ast.ClassDef, new: ast.ClassDef, scope: tuple[str, ...]) -> None:
        inner = (*scope, new.name)
        label = ".".join(inner)
        line = new.lineno
        if au.dump(old.decorator_list) != au.dump(new.decorator_list):
            self._refuse(line, f"class {label}: decorators changed")
            return
        if au.dump(old.keywords) != au.dump(new.keywords):
            self._refuse(line, f"class {label}: metaclass or class keywords changed")
            return
        bases = {b for b in (au.dotted(x) for x in new.bases) if b}
        short = {b.rsplit(".", 1)[-1] for b in bases}
        if au.dump(old.bases) != au.dump(new.bases):
            self._bases(old, new, scope)
        if short & au.ENUM_BASES:
            self._fields(old, new, label, "Enum members", enum=True)
        old_body, new_body = old.body, new.body
        if short & au.RECORD_BASES:
            self._fields(old, new, label, "record fields")
            old_body, new_body = sh.without_fields(old_body), sh.without_fields(new_body)
        if sh.is_dataclass(new):
            self._dataclass(old, new, scope)
            old_body, new_body = sh.without_fields(old_body), sh.without_fields(new_body)
        start = len(self.actions)
        self._body(old_body, new_body, inner)
        self._instance_state(old, new, inner, self.actions[start:])

    def _bases(self, old: ast.ClassDef, new: ast.ClassDef, scope: tuple[str, ...]) -> None:
        label = sh.qual(scope, new.name)
        old_b = [au.dump(b) for b in old.bases]
        new_b = [au.dump(b) for b in new.bases]
        it = iter(new_b)
        subsequence = all(b in it for b in old_b)
        added = [b for b, d in zip(new.bases, new_b, strict=True) if d not in old_b]
        why = None
        if not subsequence:
            why = "existing bases removed or reordered"
        elif sh.assigns_name(new.body, "__slots__"):
            why = "the class has __slots__"
        else:
            for base in added:
                name = au.dotted(base)
                cls = self._new_module_class(name)
                if cls is None:
                    why = f"added base {ast.unparse(base)} is not a plain class of this module"
                elif (
                    sh.assigns_name(cls.body, "__slots__")
                    or cls.keywords
                    or any(
                        isinstance(s, au.DEFS)
                        and s.name in ("__init__", "__new__", "__init_subclass__")
                        for s in cls.body
                    )
                ):
                    why = f"added base {name} has state of its own (__slots__, __init__, __new__ or a metaclass)"
        if why:
            self._refuse(
                new.lineno,
                f"class {label}: bases changed and the swap cannot be proven safe ({why})",
            )
            return
        self.state_changed.add((*scope, new.name)[0])
        self.actions.append(
            Action(
                "bases",
                (*scope, new.name),
                "",
                expression="(" + "".join(ast.unparse(b) + ", " for b in new.bases) + ")",
            )
        )
        self.explain.swapped.append(
            f"{self.path}:{new.lineno}: {self.name}.{label} bases -> {', '.join(ast.unparse(b) for b in new.bases)}"
        )

    def _fields(
        self, old: ast.ClassDef, new: ast.ClassDef, label: str, what: str, enum: bool = False
    ) -> None:
        def fields(cls: ast.ClassDef) -> list[str]:
            out = []
            for s in cls.body:
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name):
                    # the layout is names and defaults; annotations do not change it
                    out.append(au.dump(s.target) + au.dump(s.value))
                elif (
                    enum
                    and isinstance(s, ast.Assign)
                    and all(isinstance(t, ast.Name) and not t.id.startswith("_") for t in s.targets)
                ):
                    out.append(au.dump(s))
            return out

        if fields(old) != fields(new):
            self._refuse(
                new.lineno, f"class {label}: {what} changed: live instances keep the old layout"
            )

    def _dataclass(self, old: ast.ClassDef, new: ast.ClassDef, scope: tuple[str, ...]) -> None:
        """Refresh a dataclass's generated methods when its fields' types or defaults change."""
        label = sh.qual(scope, new.name)
        old_fields, new_fields = sh.field_names(old), sh.field_names(new)
        if [au.dump(f) for f in sh.fields_of(old)] == [au.dump(f) for f in sh.fields_of(new)]:
            return
        why = None
        if old_fields != new_fields:
            why = "fields added, removed or reordered"
        elif new.bases or new.keywords:
            why = "the class has bases or a metaclass"
        elif sh.assigns_name(new.body, "__slots__") or any(
            isinstance(k, ast.keyword) and k.arg in ("slots", "frozen")
            for d in new.decorator_list
            if isinstance(d, ast.Call)
            for k in d.keywords
        ):
            why = "slots or frozen dataclass"
        else:
            for stmt in new.body:
                value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
                if value is not None and au.impure(
                    value, self.local_names | {"field", "dataclasses"}
                ):
                    why = f"line {stmt.lineno} computes a default with side effects"
                    break
        if why:
            self._refuse(
                new.lineno,
                f"class {label}: dataclass fields changed and the swap cannot be proven safe ({why})",
            )
            return
        first = min([new.lineno, *[d.lineno for d in new.decorator_list]])
        ref = self._store(self._segment(new, self.new_lines), first)
        names = tuple(sorted(set(sh.DATACLASS_ATTRS) | set(old_fields) | set(new_fields)))
        self.actions.append(Action("dataclass", scope, new.name, new=ref, names=names))
        if not scope:
            self.state_changed.add(new.name)
        self.explain.swapped.append(
            f"{self.path}:{new.lineno}: {self.name}.{label} dataclass fields (generated methods refreshed)"
        )

    def _instance_state(
        self, old: ast.ClassDef, new: ast.ClassDef, scope: tuple[str, ...], actions: list[Action]
    ) -> None:
        """Refuse fixed methods that read instance attributes only new instances would have."""
        changed = {
            a.name or a.names[0]
            for a in actions
            if a.scope == scope and a.kind in ("function", "define")
        }
        if not changed:
            return
        before = sh.self_assigned(old) | sh.bound_names(old.body)
        introduced = sh.self_assigned(new) - before - sh.bound_names(new.body)
        if not introduced:
            return
        for node in new.body:
            if not isinstance(node, au.DEFS) or sh.mangle(scope, node.name) not in changed:
                continue
            for attr, line in sh.self_reads(node):
                if attr in introduced:
                    self._refuse(
                        line,
                        f"{sh.qual(scope, node.name)} reads self.{attr}, which only "
                        "instances created after the patch would have (new instance state)",
                    )
                    return

    def _new_module_class(self, name: str | None) -> ast.ClassDef | None:
        tree = ast.parse(self.new_src)
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return stmt
        return None

    # -- new definitions --------------------------------------------------------------------
    def _new_definition(
        self,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
        scope: tuple[str, ...],
        kind: str,
    ) -> None:
        label = sh.qual(scope, node.name)
        properties = {n.name for n in ast.walk(node) if isinstance(n, au.DEFS)} | self.local_names
        decorators = list(node.decorator_list)
        if isinstance(node, ast.ClassDef):
            for stmt in ast.walk(node):
                if isinstance(stmt, (*au.DEFS, ast.ClassDef)) and stmt is not node:
                    decorators += stmt.decorator_list
            for stmt in node.body:
                if not (
                    isinstance(stmt, (*au.DEFS, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Pass))
                    or sh.is_string(stmt)
                ):
                    self._refuse(
                        stmt.lineno, f"new class {label} runs code in its body at definition"
                    )
                    return
                value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
                if value is not None and self._side_effects(
                    value,
                    stmt.lineno,
                    f"new class {label}: attribute computed with side effects",
                    self.local_names | sh.bound_names(node.body),
                ):
                    return
            for base in (*node.bases, *[k.value for k in node.keywords]):
                if au.impure(base, self.local_names):
                    self._refuse(
                        node.lineno, f"new class {label}: bases computed with side effects"
                    )
                    return
        unsafe = au.unsafe_decorators(decorators, properties)
        if unsafe:
            self._refuse(
                node.lineno,
                f"new {kind} {label} is decorated with @{unsafe[0]}, which may have side effects at definition",
            )
            return
        first = min([node.lineno, *[d.lineno for d in node.decorator_list]])
        self._emit_define(
            self._segment(node, self.new_lines),
            first,
            scope,
            (node.name,),
            f"{kind} {label}",
            "added",
        )

    def _emit_define(
        self,
        text: str,
        line: int,
        scope: tuple[str, ...],
        names: tuple[str, ...],
        what: str,
        bucket: str,
        kind: str = "define",
        aliases: tuple[tuple[str, str], ...] = (),
    ) -> None:
        ref = self._store(text, line)
        names = tuple(sh.mangle(scope, n) for n in names)
        self.values[scope].update(names)
        action = Action(kind, scope, "", new=ref, names=names, aliases=aliases)
        (self.rebuilds if kind == "rebuild" else self.actions).append(action)
        getattr(self.explain, bucket).append(f"{self.path}:{line}: {what}")

    # -- objects built at import by changed code --------------------------------------------
    def _find_rebuilds(self, body: list[ast.stmt], scope: tuple[str, ...]) -> None:
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                self._find_rebuilds(stmt.body, (*scope, stmt.name))
                continue
            if not isinstance(stmt, ast.Assign) or not self._depends(stmt.value, scope):
                continue
            if any(sh.same_statement(stmt, a) for a in self.rebuilds):
                continue
            if len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Attribute):
                self._attr_rebuild(stmt, "depends on changed code")
                continue
            names = tuple(sh.targets(stmt))
            if not names or not all(isinstance(t, ast.Name) for t in stmt.targets):
                self._refuse(
                    stmt.lineno,
                    "object built at import by changed code cannot be rebuilt (complex target)",
                )
                continue
            if any(
                a.kind in ("define", "rebuild") and set(a.names) & set(names) and a.scope == scope
                for a in (*self.actions, *self.rebuilds)
            ):
                continue
            if self._side_effects(
                stmt.value,
                stmt.lineno,
                f"{', '.join(names)} is built at import by changed code and cannot be rebuilt safely",
            ):
                continue
            self._emit_define(
                self._segment(stmt, self.new_lines),
                stmt.lineno,
                scope,
                names,
                f"{sh.qual(scope, names[0])} = {ast.unparse(stmt.value)}",
                "rebuilt",
                kind="rebuild",
                aliases=self._aliases(scope, names),
            )

    def _propagate(self, body: list[ast.stmt]) -> None:
        """Count unchanged functions and classes that use changed code as changed too.

        ``TABLE = [outer(i) for i in ...]`` must be rebuilt when ``outer`` is unchanged
        but calls a changed ``inner``: calling it now gives other results.
        """
        units = {s.name: s for s in body if isinstance(s, (*au.DEFS, ast.ClassDef))}
        grew = True
        while grew:
            grew = False
            replaced = self.state_changed | self.values[()]
            for name, node in units.items():
                if name in self.state_changed:
                    continue
                if sh.names_used(node) & replaced:
                    self.state_changed.add(name)
                    grew = True

    def _stale_caches(self, body: list[ast.stmt], scope: tuple[str, ...]) -> None:
        """Clear caches of unchanged functions whose results came from changed code."""
        swapped = {(a.scope, a.name) for a in self.actions if a.kind == "function"}
        replaced = self.state_changed | self.values[()] | self.values[scope]
        for node in body:
            if isinstance(node, ast.ClassDef):
                self._stale_caches(node.body, (*scope, node.name))
                continue
            if not isinstance(node, au.DEFS) or (scope, sh.mangle(scope, node.name)) in swapped:
                continue
            cached = any(
                (au.decorator_name(d) or "").rsplit(".", 1)[-1] in sh.CACHES
                for d in node.decorator_list
            )
            used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if cached and used & replaced:
                self.actions.append(Action("clear", scope, sh.mangle(scope, node.name)))
                self.explain.rebuilt.append(
                    f"{self.path}:{node.lineno}: cache of {self.name}.{sh.qual(scope, node.name)} cleared"
                )

    def _depends(self, expr: ast.AST, scope: tuple[str, ...]) -> bool:
        """Whether evaluating ``expr`` again would give another object after the patch."""
        replaced = self.values[scope] | self.values[()]
        for node in ast.walk(expr):
            if (
                isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)
                and node.id in replaced
            ):
                return True
            if isinstance(node, ast.Call):
                name = au.dotted(node.func)
                if name and name.split(".")[0] in self.state_changed:
                    return True
        return False

    def _aliases(
        self, scope: tuple[str, ...], names: tuple[str, ...]
    ) -> tuple[tuple[str, str], ...]:
        if scope:
            return ()
        out = []
        for name in names:
            out += self.context.importers.get((self.name, name), [])
        return tuple(sorted(set(out)))

    # -- helpers ----------------------------------------------------------------------------
    def _segment(self, node: ast.stmt, lines: list[str], decorators: bool = True) -> str:
        start = node.lineno
        if decorators and isinstance(node, (*au.DEFS, ast.ClassDef)) and node.decorator_list:
            start = min(d.lineno for d in node.decorator_list)
        end = node.end_lineno or node.lineno
        return "\n".join(lines[start - 1 : end]) + "\n"

    def _store(self, text: str, line: int) -> SourceRef:
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.sources[digest] = text
        return SourceRef(digest, line)

    def _new_line_near(self, stmt: ast.stmt) -> int:
        return min(stmt.lineno, max(len(self.new_lines), 1))

    def _side_effects(
        self, expr: ast.AST, line: int, what: str, names: set[str] | None = None
    ) -> bool:
        """Refuse, and say so, when evaluating ``expr`` again could have side effects."""
        problems = au.impure(expr, self.local_names if names is None else names)
        if problems:
            self._refuse(line, f"{what} ({problems[0]})")
        return bool(problems)

    def _refuse(self, line: int, reason: str) -> None:
        self.explain.refused.append(f"{self.path}:{line}: {reason}")

    def _ignore(self, line: int, reason: str) -> None:
        self.explain.ignored.append(f"{self.path}:{line}: {reason}")
