"""What a module or class body holds, read from its AST: names, fields, imports, state.

Small pure functions the differ asks about one side of a change: which names a body
binds or imports, a dataclass's fields, what ``self`` attributes methods set and read,
where a code object sits in the compiled module. Nothing here compares two versions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from types import CodeType

from pyhotpatch.build import _astutil as au
from pyhotpatch.package import Action
from pyhotpatch.runtime._fingerprint import fingerprint


@dataclass
class Scope:
    funcs: dict[tuple[str, int], ast.FunctionDef | ast.AsyncFunctionDef] = field(
        default_factory=dict
    )
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    assigns: dict[str, list[ast.stmt]] = field(default_factory=lambda: defaultdict(list))
    attr_assigns: dict[str, ast.Assign] = field(default_factory=dict)
    imports: dict[str, tuple[ast.stmt, str]] = field(default_factory=dict)
    other: list[ast.stmt] = field(default_factory=list)


CACHES = frozenset({"lru_cache", "cache"})
CONSTRUCTORS = frozenset(
    {"__init__", "__new__", "__post_init__", "__init_subclass__", "__set_name__"}
)


def collect(body: list[ast.stmt], scope: tuple[str, ...]) -> Scope:
    out = Scope()
    counts: dict[str, int] = defaultdict(int)
    start = 1 if au.docstring_stripped(body) is not body else 0
    for stmt in body[start:]:
        if isinstance(stmt, au.DEFS):
            out.funcs[(stmt.name, counts[stmt.name])] = stmt
            setattr(stmt, "_occurrence", counts[stmt.name])  # noqa: B010 - annotate the node
            counts[stmt.name] += 1
        elif isinstance(stmt, ast.ClassDef):
            out.classes[stmt.name] = stmt
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)) and not (
            isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"
        ):
            for alias in stmt.names:
                bound = alias.asname or alias.name.split(".")[0]
                if isinstance(stmt, ast.Import):
                    text = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                else:
                    text = f"from {'.' * stmt.level}{stmt.module or ''} import {alias.name}" + (
                        f" as {alias.asname}" if alias.asname else ""
                    )
                out.imports[bound] = (stmt, text + "\n")
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Attribute)
            and not scope
        ):
            out.attr_assigns[au.dump(stmt.targets[0])] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and targets(stmt):
            for name in targets(stmt):
                out.assigns[name].append(stmt)
        elif isinstance(stmt, ast.ImportFrom):
            continue
        else:
            out.other.append(stmt)
    return out


def targets(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.Assign):
        names = []
        for t in stmt.targets:
            if isinstance(t, ast.Name):
                names.append(t.id)
            elif isinstance(t, (ast.Tuple, ast.List)) and all(
                isinstance(e, ast.Name) for e in t.elts
            ):
                names += [e.id for e in t.elts if isinstance(e, ast.Name)]
            else:
                return []
        return names
    if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def own_names(body: list[ast.stmt], top_level: set[str]) -> set[str]:
    """Names the module defines itself or imports from its own distribution.

    Calls to these run the distribution's own code; calls through other imported
    modules (``os.urandom``, ``requests.get``) are not known to be free of side effects.
    """
    names = set()
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            source = stmt.module if isinstance(stmt, ast.ImportFrom) else None
            own = isinstance(stmt, ast.ImportFrom) and (
                stmt.level > 0 or (source or "").split(".")[0] in top_level
            )
            for alias in stmt.names:
                if own or (isinstance(stmt, ast.Import) and alias.name.split(".")[0] in top_level):
                    names.add(alias.asname or alias.name.split(".")[0])
        else:
            names |= bound_names([stmt])
    return names


def bound_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (*au.DEFS, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in stmt.names}
        else:
            names |= set(targets(stmt))
    return names


def imported(body: list[ast.stmt]) -> tuple[str, ...]:
    """Names bound by import statements at module level (the compiler treats them apart)."""
    names = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name != "*"}
        elif not isinstance(node, (*au.DEFS, ast.ClassDef, ast.Lambda, ast.expr)):
            stack.extend(ast.iter_child_nodes(node))
    return tuple(sorted(names))


def future(tree: ast.Module) -> tuple[str, ...]:
    return tuple(
        sorted(
            a.name
            for s in tree.body
            if isinstance(s, ast.ImportFrom) and s.module == "__future__"
            for a in s.names
        )
    )


def docstring(body: list[ast.stmt]) -> str:
    return au.dump(body[0]) if body and au.docstring_stripped(body) is not body else ""


def literal(stmt: ast.stmt) -> bool:
    value = getattr(stmt, "value", None)
    return value is not None and all(
        isinstance(
            n,
            (
                ast.Constant,
                ast.Tuple,
                ast.List,
                ast.Load,
                ast.Name,
                ast.Call,
                ast.Attribute,
                ast.BinOp,
                ast.Add,
                ast.keyword,
            ),
        )
        for n in ast.walk(value)
    )


def mangle(scope: tuple[str, ...], name: str) -> str:
    """The name a class body really binds for ``name`` (private names are mangled)."""
    if scope and name.startswith("__") and not name.endswith("__"):
        owner = scope[-1].lstrip("_")
        if owner:
            return f"_{owner}{name}"
    return name


def names_used(node: ast.stmt) -> set[str]:
    """Names a function uses, or that building an instance of a class may use."""
    parts: list[ast.AST] = [node]
    if isinstance(node, ast.ClassDef):
        parts = [
            s
            for s in node.body
            if not isinstance(s, (*au.DEFS, ast.ClassDef)) or s.name in CONSTRUCTORS
        ]
    return {n.id for part in parts for n in ast.walk(part) if isinstance(n, ast.Name)}


def is_string(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def defines(stmt: ast.stmt) -> bool:
    return any(isinstance(n, (*au.DEFS, ast.ClassDef)) for n in ast.walk(stmt))


def assigns_name(body: list[ast.stmt], name: str) -> bool:
    return any(name in targets(s) for s in body)


DATACLASS_ATTRS = (
    "__init__",
    "__repr__",
    "__eq__",
    "__hash__",
    "__match_args__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__dataclass_fields__",
    "__dataclass_params__",
)


def fields_of(cls: ast.ClassDef) -> list[ast.AnnAssign]:
    return [s for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def field_names(cls: ast.ClassDef) -> list[str]:
    return [f.target.id for f in fields_of(cls) if isinstance(f.target, ast.Name)]


def without_fields(body: list[ast.stmt]) -> list[ast.stmt]:
    return [
        s for s in body if not (isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
    ]


def self_name(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    args = [*func.args.posonlyargs, *func.args.args]
    if not args or any(
        (au.decorator_name(d) or "") in ("staticmethod", "classmethod") for d in func.decorator_list
    ):
        return None
    return args[0].arg


def self_assigned(cls: ast.ClassDef) -> set[str]:
    """Attributes the class's methods store on ``self``."""
    out: set[str] = set()
    for func in cls.body:
        if not isinstance(func, au.DEFS) or (me := self_name(func)) is None:
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == me
            ):
                out.add(node.attr)
            elif (
                isinstance(node, ast.Call)
                and au.dotted(node.func) in ("setattr", "object.__setattr__")
                and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id == me
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                out.add(node.args[1].value)
    return out


def self_reads(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, int]]:
    me = self_name(func)
    return [
        (node.attr, node.lineno)
        for node in ast.walk(func)
        if me is not None
        and isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Load)
        and isinstance(node.value, ast.Name)
        and node.value.id == me
    ]


def is_dataclass(cls: ast.ClassDef) -> bool:
    return any(
        (au.decorator_name(d) or "").rsplit(".", 1)[-1] in ("dataclass", "define", "frozen", "s")
        for d in cls.decorator_list
    )


def import_source(stmt: ast.stmt, module: str) -> str | None:
    if isinstance(stmt, ast.Import):
        return stmt.names[0].name
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level:
            return module.split(".", maxsplit=1)[0]
        return stmt.module
    return None


def qual(scope: tuple[str, ...], name: str) -> str:
    return ".".join((*scope, name))


def code_at(
    module_code: CodeType, scope: tuple[str, ...], name: str, occurrence: int
) -> CodeType | None:
    code: CodeType | None = module_code
    for part in scope:
        code = child(code, part, 0) if code is not None else None
    return child(code, name, occurrence) if code is not None else None


def child(code: CodeType, name: str, occurrence: int) -> CodeType | None:
    seen = 0
    for const in code.co_consts:
        if isinstance(const, CodeType) and const.co_name == name:
            if seen == occurrence:
                return const
            seen += 1
    return None


def unmappable_closures(old: CodeType, new: CodeType, label: str) -> str | None:
    counts: dict[str, int] = defaultdict(int)
    for const in old.co_consts:
        if not isinstance(const, CodeType):
            continue
        match = child(new, const.co_name, counts[const.co_name])
        counts[const.co_name] += 1
        if match is None or fingerprint(match) == fingerprint(const):
            continue
        if match.co_freevars != const.co_freevars:
            return (
                f"{label}.<locals>.{const.co_name}: captured variables changed "
                f"{const.co_freevars} -> {match.co_freevars}; closures made before the patch cannot be updated"
            )
        deeper = unmappable_closures(const, match, f"{label}.<locals>.{const.co_name}")
        if deeper:
            return deeper
    return None


def same_statement(stmt: ast.Assign, action: Action) -> bool:
    target = stmt.targets[0]
    return (
        isinstance(target, ast.Attribute)
        and action.names == (target.attr,)
        and action.expression == ast.unparse(stmt.value)
    )
