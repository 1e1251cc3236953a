"""AST helpers for the builder: normalising away noise, naming things, judging purity.

"Noise" is what changes the text of a release but not what its code does:
docstrings, comments, formatting, annotations. "Pure" expressions can be
evaluated again at apply time without side effects outside the new objects
they create: literals, names, operators, and calls to a known list of
constructors or to the module's own classes and functions.
"""

from __future__ import annotations

import ast
import copy
import sys
from collections.abc import Iterable, Sequence

VERSION_NAMES = frozenset(
    {
        "__version__",
        "version",
        "VERSION",
        "__version_info__",
        "version_info",
        "VERSION_INFO",
        "__version_tuple__",
        "version_tuple",
        "__date__",
        "__commit_id__",
        "commit_id",
    }
)

PURE_CALLS = frozenset(
    {
        "re.compile",
        "re.escape",
        "frozenset",
        "set",
        "tuple",
        "list",
        "dict",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "bool",
        "complex",
        "len",
        "sorted",
        "reversed",
        "range",
        "enumerate",
        "zip",
        "map",
        "filter",
        "object",
        "isinstance",
        "getattr",
        "hasattr",
        "max",
        "min",
        "sum",
        "any",
        "all",
        "repr",
        "ord",
        "chr",
        "abs",
        "round",
        "divmod",
        "logging.getLogger",
        "getLogger",
        "os.environ.get",
        "os.getenv",
        "os.path.join",
        "sys.intern",
        "struct.Struct",
        "collections.namedtuple",
        "namedtuple",
        "typing.NamedTuple",
        "NamedTuple",
        "typing.TypeVar",
        "TypeVar",
        "typing.NewType",
        "NewType",
        "typing.cast",
        "cast",
        "collections.OrderedDict",
        "OrderedDict",
        "collections.defaultdict",
        "defaultdict",
        "collections.deque",
        "deque",
        "threading.Lock",
        "threading.RLock",
        "threading.local",
        "weakref.WeakKeyDictionary",
        "weakref.WeakValueDictionary",
        "weakref.WeakSet",
        "WeakKeyDictionary",
        "WeakValueDictionary",
        "WeakSet",
        "decimal.Decimal",
        "Decimal",
        "datetime.timedelta",
        "datetime.date",
        "datetime.datetime",
        "datetime.time",
        "date",
        "timedelta",
        "datetime.timezone",
        "timezone",
        "functools.partial",
        "partial",
        "operator.itemgetter",
        "operator.attrgetter",
        "itemgetter",
        "attrgetter",
        "str.maketrans",
        "bytes.maketrans",
        "dict.fromkeys",
        "field",
        "dataclasses.field",
        "contextvars.ContextVar",
        "ContextVar",
        "types.MappingProxyType",
        "MappingProxyType",
        "string.Template",
        "ipaddress.ip_network",
        "ipaddress.ip_address",
    }
)
PURE_METHODS = frozenset(
    {
        "join",
        "format",
        "split",
        "encode",
        "decode",
        "lower",
        "upper",
        "replace",
        "strip",
        "rstrip",
        "lstrip",
        "union",
        "copy",
        "items",
        "keys",
        "values",
        "get",
        "fromkeys",
        "maketrans",
    }
)
SAFE_DECORATORS = frozenset(
    {
        "staticmethod",
        "classmethod",
        "property",
        "functools.cached_property",
        "cached_property",
        "functools.lru_cache",
        "lru_cache",
        "functools.cache",
        "cache",
        "abc.abstractmethod",
        "abstractmethod",
        "typing.overload",
        "overload",
        "contextlib.contextmanager",
        "contextmanager",
        "contextlib.asynccontextmanager",
        "asynccontextmanager",
        "typing.final",
        "final",
        "typing.override",
        "override",
        "typing_extensions.override",
        "dataclasses.dataclass",
        "dataclass",
        "functools.total_ordering",
        "total_ordering",
        "functools.singledispatch",
        "singledispatch",
        "typing.runtime_checkable",
        "runtime_checkable",
        "functools.wraps",
        "wraps",
    }
)
ENUM_BASES = frozenset({"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum"})
RECORD_BASES = frozenset({"NamedTuple", "TypedDict"})
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def dump(node: ast.AST | Sequence[ast.AST | None] | None) -> str:
    """A location-free dump of a node or list of nodes."""
    if node is None:
        return ""
    if isinstance(node, ast.AST):
        return ast.dump(node, include_attributes=False)
    return "[" + ",".join(dump(n) for n in node) + "]"


def docstring_stripped(body: list[ast.stmt]) -> list[ast.stmt]:
    """A body without its leading docstring."""
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return body[1:]
    return body


class _Denoise(ast.NodeTransformer):
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._function(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.returns = None
        for arg in (
            *node.args.posonlyargs,
            *node.args.args,
            *node.args.kwonlyargs,
            node.args.vararg,
            node.args.kwarg,
        ):
            if arg is not None:
                arg.annotation = None
                arg.type_comment = None
        node.type_comment = None
        node.body = docstring_stripped(node.body) or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        node.annotation = ast.Constant(None)
        return node


def behaviour(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """A dump of a function that ignores its docstrings, annotations and decorators."""
    clone = copy.deepcopy(node)
    clone.decorator_list = []
    return dump(_Denoise().visit(clone))


def identity(node: ast.stmt) -> str:
    """A dump of a definition as written, decorators aside (the baseline's identity)."""
    clone = copy.deepcopy(node)
    if isinstance(clone, (*DEFS, ast.ClassDef)):
        clone.decorator_list = []
    return dump(clone)


def dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute lookups on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def impure(expr: ast.AST, local_names: set[str]) -> list[str]:
    """Why evaluating ``expr`` again could have side effects (empty if it cannot)."""
    problems = []
    for node in ast.walk(expr):
        if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            problems.append(f"uses {type(node).__name__.lower()}")
        elif isinstance(node, ast.Call):
            name = dotted(node.func)
            if name is None:
                if isinstance(node.func, ast.Attribute) and node.func.attr in PURE_METHODS:
                    continue
                problems.append(f"calls {ast.unparse(node.func)}")
            elif name not in PURE_CALLS and name.split(".")[0] not in local_names:
                problems.append(f"calls {name}()")
    return problems


def decorator_name(node: ast.expr) -> str | None:
    """The dotted name of a decorator, looking through a call (``@lru_cache(maxsize=8)``)."""
    return dotted(node.func if isinstance(node, ast.Call) else node)


def unsafe_decorators(decorators: Iterable[ast.expr], properties: set[str]) -> list[str]:
    """Decorators whose evaluation at apply time might have side effects."""
    out = []
    for dec in decorators:
        name = decorator_name(dec) or ast.unparse(dec)
        base, _, attr = name.rpartition(".")
        if name in SAFE_DECORATORS or name.removeprefix("dataclasses.") in SAFE_DECORATORS:
            continue
        if attr in ("setter", "getter", "deleter") and base in properties:
            continue
        out.append(name)
    return out


def is_generator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function's own body (not nested ones) yields."""
    stack: list[ast.AST] = list(node.body)
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(item, (*DEFS, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(item))
    return False


def signature_problem(old: ast.arguments, new: ast.arguments) -> str | None:
    """Why calls written against the old signature could fail against the new one."""
    old_pos = [a.arg for a in (*old.posonlyargs, *old.args)]
    new_pos = [a.arg for a in (*new.posonlyargs, *new.args)]
    if new_pos[: len(old_pos)] != old_pos:
        return (
            f"positional parameters changed from ({', '.join(old_pos)}) to ({', '.join(new_pos)})"
        )
    extra = len(new_pos) - len(old_pos)
    if extra and len(new.defaults) < extra and new.vararg is None:
        return "new positional parameters without defaults"
    if old.vararg is not None and new.vararg is None:
        return "*args removed"
    if old.kwarg is not None and new.kwarg is None:
        return "**kwargs removed"
    old_kw = {a.arg for a in old.kwonlyargs}
    new_kw = {a.arg: d for a, d in zip(new.kwonlyargs, new.kw_defaults, strict=True)}
    if not old_kw <= set(new_kw) and new.kwarg is None:
        return "keyword-only parameters removed"
    if any(d is None for k, d in new_kw.items() if k not in old_kw):
        return "new keyword-only parameters without defaults"
    if len(new.posonlyargs) > len(old.posonlyargs):
        return "parameters became positional-only"
    return None


def is_type_checking(node: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` blocks, which never run."""
    return isinstance(node, ast.If) and dotted(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


def stdlib(module: str) -> bool:
    """Whether ``module`` belongs to the standard library of this interpreter."""
    return module.split(".", maxsplit=1)[0] in sys.stdlib_module_names
