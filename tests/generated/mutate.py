"""Seeded generator of a small service package and of random edits to it.

``generate(seed)`` returns a ``Case``: a base package (``core.py``, a realistic module with
constants, a compiled regex, helpers that call each other, a class hierarchy with methods,
static and class methods, a property and class constants, a closure factory, a
``functools.wraps`` decorator, an ``lru_cache`` function, a generator; ``user.py``, which holds
``from .core import ...`` copies), the same package after K random hotpatchable edits, the
probe (expressions evaluated against the package and against references captured before a
patch) and, for some seeds, one extra edit the builder must refuse, with the file and line
range its ``path:line: reason`` must name.

Only ``random.Random(seed)`` is used, so a seed always gives the same case. Run
``python tests/generated/mutate.py SEED`` to print a case (edits and source diff).
"""

from __future__ import annotations

import ast
import difflib
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

XS = (-3, -1, 0, 1, 2, 5, 9)
TEXTS = ("ab1 abc22 Xy x9y", "Hello World 42", "ababab cab9 zz", "no digits", "x1y xy 7 AbC")
PATTERNS = (r"[a-c]+\d", r"\d+", r"[A-Z][a-z]*", r"(?:ab)+", r"x\d?y", r"\w{2}", r"[a-z]{3,}")
TAGS = ("ab", "id-", "tag:", "v")
GLOBALS = ("LIMIT", "STEP", "OFFSET")
OPS = ("+", "-", "*")
CMPS = ("<", ">", "<=", ">=", "==", "!=")
_BINOPS: dict[type[ast.operator], tuple[type[ast.operator], ...]] = {
    ast.Add: (ast.Sub, ast.Mult),
    ast.Sub: (ast.Add, ast.Mult),
    ast.Mult: (ast.Add, ast.Sub),
}
_CMPOPS = (ast.Lt, ast.Gt, ast.LtE, ast.GtE, ast.Eq, ast.NotEq)

#: Functions whose bodies edits may change, and the parameter an added statement may rebind.
#: ``None``: no added statement (it has no plain parameter, or rebinding would change layout).
STRING_TARGETS = ("tagged", "Base.describe")
WIDGET_INSTANCE_METHODS = ("Widget.scaled", "Widget.size", "Special.scaled")

HOTPATCHABLE_KINDS = (
    "const",
    "op",
    "swap",
    "statement",
    "default",
    "new_helper",
    "new_constant",
    "module_constant",
    "class_constant",
    "new_class_constant",
    "new_method",
    "regex",
    "yield",
    "mixin",
    "new_import",
)
REFUSAL_KINDS = (
    "slots",
    "bases_replaced",
    "bases_builtin",
    "module_statement",
    "captured_closure",
    "captured_wrapper",
    "decorator",
    "signature",
    "generator",
    "new_module",
    "data_file",
)


@dataclass
class Shape:
    """The random choices that shape the base package (and so the probe)."""

    helpers: int
    kwonly: frozenset[int]
    table: bool
    class_default: bool
    default_from: int
    derived: bool
    const_default: int | None
    cached_calls: int | None
    class_derived: bool
    label: bool


@dataclass
class Refusal:
    """An edit the builder must refuse, and where its reason must point."""

    kind: str
    files: dict[str, str]
    path: str
    first: int
    last: int
    keyword: str
    edit: str


@dataclass
class Case:
    """One generated test case."""

    seed: int
    package: str
    base: dict[str, str]
    final: dict[str, str]
    edits: list[str]
    capture: list[tuple[str, str]]
    probe: list[tuple[str, str]]
    kinds: list[str] = field(default_factory=list)
    refusal: Refusal | None = None
    shape: Shape | None = field(default=None, repr=False)
    #: how the patch reaches the process: ``direct`` (base -> final on a running module),
    #: ``chain`` (base -> mid applied first, then the cumulative base -> final replaces it),
    #: ``late`` (base -> final applied before the module is imported; the import hook patches)
    flow: str = "direct"
    #: for ``chain``: the package after the first ``mid_edits`` edits
    mid: dict[str, str] | None = None
    mid_edits: int = 0

    def diff(self) -> str:
        """Unified diff of the edited module, base -> final."""
        path = f"{self.package}/core.py"
        return "".join(
            difflib.unified_diff(
                self.base[path].splitlines(keepends=True),
                self.final[path].splitlines(keepends=True),
                f"base/{path}",
                f"final/{path}",
                n=1,
            )
        )

    def describe(self) -> str:
        """The edits and the diff, for failure messages and the command line."""
        lines = [f"seed {self.seed}: {len(self.edits)} edit(s), flow {self.flow}"]
        lines += [
            f"  - {e}" + (" (in mid)" if i < self.mid_edits else "")
            for i, e in enumerate(self.edits)
        ]
        if self.refusal is not None:
            lines.append(f"  refusal edit: {self.refusal.edit}")
        return "\n".join(lines) + "\n" + self.diff()


# -- expressions ------------------------------------------------------------------------------
def _expr(rng: random.Random, names: list[str], depth: int = 2, main: str | None = None) -> str:
    def leaf() -> str:
        if names and rng.random() < 0.65:
            return rng.choice(names)
        return str(rng.randint(1, 9))

    def tree(d: int) -> str:
        if d <= 0 or rng.random() < 0.3:
            return leaf()
        return f"({tree(d - 1)} {rng.choice(OPS)} {tree(d - 1)})"

    text = tree(depth)
    if main is not None:
        text = f"({main} {rng.choice(OPS)} {text})"
    return text


def _indent(lines: list[str], n: int = 1) -> list[str]:
    return ["    " * n + line for line in lines]


# -- the base package -------------------------------------------------------------------------
def _core_source(rng: random.Random, shape: Shape) -> str:
    g = list(GLOBALS)
    out = [
        '"""A generated service module."""',
        "import functools",
        "import re",
        f"LIMIT = {rng.randint(3, 12)}",
        f"STEP = {rng.randint(1, 5)}",
        f"OFFSET = {rng.randint(-4, 4)}",
        f"TAG = {rng.choice(TAGS)!r}",
        f"PATTERN = re.compile({rng.choice(PATTERNS)!r})",
    ]
    if shape.derived:
        out.append(f"DERIVED = LIMIT * {rng.randint(2, 4)} + STEP")
    for i in range(shape.helpers):
        default = "STEP" if i == shape.const_default else rng.randint(1, 6)
        params = f"x, *, n={default}" if i in shape.kwonly else f"x, n={default}"
        body = [
            f"y = {_expr(rng, ['x', 'n', *g], main='x')}",
            f"if y {rng.choice(CMPS)} {_expr(rng, [*g], 1)}:",
            f"    y = {_expr(rng, ['y', 'x'], main='y')}",
        ]
        if rng.random() < 0.85:
            body += ["else:", f"    y = {_expr(rng, ['y', 'n'], main='y')}"]
        if rng.random() < 0.4:
            body += [f"for i in range({rng.randint(1, 4)}):", f"    y = y {rng.choice(OPS)} i"]
        extra = rng.random()
        if extra < 0.2:
            body.append(f"y = min([y, x, n], key=lambda v: v * {rng.randint(1, 5)} % 7)")
        elif extra < 0.4:
            body.append(f"y = y + sum(v * {rng.randint(1, 5)} for v in range(x % 5))")
        elif extra < 0.55:
            body.append(f"y = y - len([v for v in range(abs(y) % 9) if v % {rng.randint(2, 4)}])")
        ret = _expr(rng, ["y", "x"], 1, main="y")
        if i > 0 and rng.random() < 0.75:
            ret = f"{ret} + helper_{rng.randrange(i)}(y % {rng.randint(3, 9)})"
        body.append(f"return {ret}")
        out += [f"def helper_{i}({params}):", *_indent(body)]
    out += [
        "def tagged(s):",
        f"    return TAG + s.upper() + str(len(s) * {rng.randint(1, 4)})",
        "def matches(text):",
        "    return PATTERN.findall(text)",
        "def traced(fn):",
        "    @functools.wraps(fn)",
        "    def wrapper(*args, **kwargs):",
        f"        return fn(*args, **kwargs) + {rng.randint(1, 5)}",
        "    return wrapper",
        "@traced",
        "def decorated(x):",
        f"    return {_expr(rng, ['x', *g], main='x')}",
        f"@functools.lru_cache(maxsize={rng.choice((16, 32, 128))})",
        "def cached(n):",
        f"    return {_expr(rng, ['n', *g], main='n')}"
        + (f" + helper_{shape.cached_calls}(n)" if shape.cached_calls is not None else ""),
        "def gen(n):",
        "    for i in range(n):",
        f"        yield {_expr(rng, ['i', *g], 1, main='i')}",
    ]
    if rng.random() < 0.4:
        out.append(f"    yield {rng.choice(g)}")
    out += [
        "async def settle(x):",
        f"    return {_expr(rng, ['x', *g], 1, main='x')}",
        "async def fetch(x):",
        f"    return await settle(x) + {rng.randint(1, 6)}",
        "def make_adder(k):",
        "    def add(x):",
        f"        y = x + k * {rng.randint(1, 4)}",
        f"        return {_expr(rng, ['y', 'x'], 1, main='y')}",
        "    return add",
        f"ADD3 = make_adder({rng.randint(1, 5)})",
        "class Base:",
        "    def describe(self):",
        "        return 'base:' + str(self.base)",
        "class Plain:",
        "    def other(self):",
        "        return 0",
        "class Widget(Base):",
        f"    SCALE = {rng.randint(2, 6)}",
    ]
    if shape.class_default:
        out.append(f"    DEFAULT = helper_{shape.default_from}({rng.randint(1, 6)})")
    if shape.class_derived:
        out.append(f"    LIMITED = SCALE * {rng.randint(2, 4)} + LIMIT")
    out += [
        "    def __init__(self, base):",
        "        self.base = base",
        f"    def scaled(self, x, extra={rng.randint(0, 4)}):",
        f"        return {_expr(rng, ['x', 'extra'], main='self.base * self.SCALE')}",
        "    @staticmethod",
        "    def sm(x):",
        f"        return {_expr(rng, ['x', *g], 1, main='x')}",
        "    @classmethod",
        "    def cm(cls, x):",
        f"        return cls.SCALE * x + {rng.randint(0, 5)}",
        "    @property",
        "    def size(self):",
        f"        return self.base + self.SCALE * {rng.randint(1, 4)}",
        "    @functools.cached_property",
        "    def total(self):",
        f"        return self.base * {rng.randint(2, 5)} + self.SCALE",
        "class Special(Widget):",
        f"    def scaled(self, x, extra={rng.randint(0, 4)}):",
        f"        return super().scaled(x, extra) + {_expr(rng, ['x'], 1)}",
    ]
    if shape.label:
        out.append(f"Widget.LABEL = TAG + {rng.choice((':w', '-widget', '#'))!r}")
    if shape.table:
        out.append(f"TABLE = [helper_{shape.helpers - 1}(i) for i in range(4)]")
    out.append("REGISTRY = {'h0': helper_0, 'dec': decorated, 'sm': Widget.sm, 'add3': ADD3}")
    return "\n".join(out) + "\n"


def _user_source(shape: Shape) -> str:
    names = [
        "ADD3",
        "LIMIT",
        "PATTERN",
        "TAG",
        "Widget",
        "cached",
        "decorated",
        "gen",
        "helper_0",
        "make_adder",
    ]
    if shape.table:
        names.append("TABLE")
    if shape.derived:
        names.append("DERIVED")
    return (
        "\n".join(
            [
                '"""A generated consumer of core: its from-imports are aliases a patch must keep right."""',
                f"from .core import {', '.join(sorted(names))}",
                "",
                "",
                "def via_user(x):",
                "    return helper_0(x) + LIMIT",
                "",
                "",
                "def user_matches(text):",
                "    return PATTERN.findall(text)",
            ]
        )
        + "\n"
    )


def _capture(shape: Shape) -> list[tuple[str, str]]:
    last = shape.helpers - 1
    helpers = ", ".join(f"core.helper_{i}" for i in range(shape.helpers))
    return [
        ("w", "core.Widget(4)"),
        ("bound", "refs['w'].scaled"),
        ("s", "core.Special(3)"),
        ("sbound", "refs['s'].scaled"),
        ("W", "core.Widget"),
        ("sm", "core.Widget.sm"),
        ("cm", "core.Widget.cm"),
        ("fget", "core.Widget.size.fget"),
        ("adder", "core.make_adder(5)"),
        ("add3", "core.ADD3"),
        ("decorated", "core.decorated"),
        ("cached", "core.cached"),
        ("warm", "[core.cached(i) for i in range(6)]"),
        ("gen", "core.gen"),
        ("registry", "core.REGISTRY"),
        ("partial", f"functools.partial(core.helper_{last}, n=4)"),
        ("helpers", f"[{helpers}]"),
        ("tagged", "core.tagged"),
        ("matches", "core.matches"),
        ("fetch", "core.fetch"),
    ]


def _probe(shape: Shape) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(shape.helpers):
        out += [
            (f"helper_{i}", f"each(core.helper_{i})"),
            (f"helper_{i}/n", f"each(lambda x: core.helper_{i}(x, n=4))"),
        ]
    out += [
        ("helpers/ref", "[each(f) for f in refs['helpers']]"),
        ("user.helper_0", "each(user.helper_0)"),
        ("user.via_user", "each(user.via_user)"),
        ("partial/ref", "each(refs['partial'])"),
        ("registry/ref", "{k: each(f) for k, f in refs['registry'].items()}"),
        ("registry", "{k: each(f) for k, f in core.REGISTRY.items()}"),
        ("tagged", "each(core.tagged, TEXTS)"),
        ("tagged/ref", "each(refs['tagged'], TEXTS)"),
        ("matches", "each(core.matches, TEXTS)"),
        ("matches/ref", "each(refs['matches'], TEXTS)"),
        ("user.matches", "each(user.user_matches, TEXTS)"),
        ("pattern", "[core.PATTERN.pattern, user.PATTERN.pattern]"),
        ("consts", "[core.LIMIT, core.STEP, core.OFFSET, core.TAG]"),
        ("user.consts", "[user.LIMIT, user.TAG]"),
        ("decorated", "each(core.decorated)"),
        ("decorated/ref", "each(refs['decorated'])"),
        ("user.decorated", "each(user.decorated)"),
        ("decorated/wrapped", "each(core.decorated.__wrapped__)"),
        ("cached", "each(core.cached, range(8))"),
        ("cached/ref", "each(refs['cached'], range(8))"),
        ("user.cached", "each(user.cached, range(8))"),
        ("gen", "each(lambda n: list(core.gen(n)), range(5))"),
        ("gen/ref", "each(lambda n: list(refs['gen'](n)), range(5))"),
        ("user.gen", "each(lambda n: list(user.gen(n)), range(5))"),
        ("adder", "each(core.make_adder(2))"),
        ("adder/ref", "each(refs['adder'])"),
        ("user.adder", "each(user.make_adder(7))"),
        ("add3", "each(core.ADD3)"),
        ("add3/ref", "each(refs['add3'])"),
        ("user.add3", "each(user.ADD3)"),
        ("scaled", "each(core.Widget(6).scaled)"),
        ("scaled/extra", "each(lambda x: core.Widget(2).scaled(x, 3))"),
        ("scaled/ref", "each(refs['w'].scaled)"),
        ("bound/ref", "each(refs['bound'])"),
        ("user.scaled", "each(user.Widget(3).scaled)"),
        ("sm", "each(core.Widget.sm)"),
        ("sm/ref", "each(refs['sm'])"),
        ("cm", "each(core.Widget.cm)"),
        ("cm/ref", "each(refs['cm'])"),
        ("cm/special", "each(core.Special.cm)"),
        ("size", "each(lambda b: core.Widget(b).size)"),
        ("size/ref", "[refs['w'].size, refs['s'].size, refs['fget'](refs['w'])]"),
        ("describe", "[core.Widget(7).describe(), refs['w'].describe(), refs['s'].describe()]"),
        ("special", "each(core.Special(5).scaled)"),
        ("special/ref", "each(refs['s'].scaled)"),
        ("sbound/ref", "each(refs['sbound'])"),
        ("scale", "[core.Widget.SCALE, refs['W'].SCALE, refs['w'].SCALE, refs['s'].SCALE]"),
        ("total", "each(lambda b: core.Widget(b).total)"),
        ("fetch", "each(lambda x: drive(core.fetch(x)))"),
        ("fetch/ref", "each(lambda x: drive(refs['fetch'](x)))"),
        ("settle", "each(lambda x: drive(core.settle(x)))"),
        ("class_attrs", "sorted(k for k in vars(core.Widget) if not k.startswith('__'))"),
        ("mro", "[c.__name__ for c in core.Special.__mro__]"),
        ("module_names", "sorted(k for k in vars(core) if not k.startswith('_'))"),
    ]
    if shape.table:
        out += [("table", "core.TABLE"), ("user.table", "user.TABLE")]
    if shape.derived:
        out += [("derived", "[core.DERIVED, user.DERIVED]")]
    if shape.class_derived:
        out += [("limited", "[core.Widget.LIMITED, refs['w'].LIMITED, core.Special.LIMITED]")]
    if shape.label:
        out += [("label", "[core.Widget.LABEL, refs['w'].LABEL, refs['s'].LABEL]")]
    if shape.class_default:
        out += [("default", "[core.Widget.DEFAULT, refs['w'].DEFAULT, core.Special.DEFAULT]")]
    return out


# -- AST plumbing -----------------------------------------------------------------------------
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def find(tree: ast.Module, path: str) -> Def:
    """The class or function at dotted ``path`` (``Widget.scaled``, ``make_adder.add``)."""
    node: ast.AST = tree
    for part in path.split("."):
        body = getattr(node, "body", [])
        node = next(n for n in body if isinstance(n, (*DEFS, ast.ClassDef)) and n.name == part)
    assert isinstance(node, (*DEFS, ast.ClassDef))
    return node


def own_nodes(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """Nodes of ``fn``'s body (lambdas and comprehensions included), not nested definitions."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = list(reversed(fn.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        out.append(node)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return out


def parse_expr(text: str) -> ast.expr:
    """One expression node from text."""
    return ast.parse(text, mode="eval").body


def parse_stmt(text: str) -> ast.stmt:
    """One statement node from text."""
    return ast.parse(text).body[0]


def replace(root: ast.AST, old: ast.AST, new: ast.AST) -> bool:
    """Put ``new`` where ``old`` sits under ``root``; whether it was found."""
    for parent in ast.walk(root):
        for name, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, name, new)
                return True
            if isinstance(value, list) and any(v is old for v in value):
                value[[id(v) for v in value].index(id(old))] = new
                return True
    return False


def render(tree: ast.Module) -> str:
    """Source text of a module tree."""
    return ast.unparse(tree) + "\n"


def _top_index(tree: ast.Module, name: str) -> int:
    return next(
        i
        for i, n in enumerate(tree.body)
        if isinstance(n, (*DEFS, ast.ClassDef)) and n.name == name
    )


# -- the edits --------------------------------------------------------------------------------
class Mutator:
    """Applies random edits to one module tree; every method returns a description or None."""

    def __init__(self, rng: random.Random, tree: ast.Module, shape: Shape) -> None:
        self.rng, self.tree, self.shape = rng, tree, shape
        self.counter = 0
        self.mixin = False

    # targets
    def helpers(self) -> list[str]:
        return [f"helper_{i}" for i in range(self.shape.helpers)]

    def numeric_targets(self) -> list[str]:
        return [
            *self.helpers(),
            "decorated",
            "cached",
            "gen",
            "make_adder.add",
            "traced.wrapper",
            "Widget.scaled",
            "Widget.sm",
            "Widget.cm",
            "Widget.size",
            "Widget.total",
            "Special.scaled",
            "fetch",
            "settle",
        ]

    def statement_param(self, path: str) -> str | None:
        if path.startswith("helper_") or path in (
            "decorated",
            "make_adder.add",
            "Widget.scaled",
            "Widget.sm",
            "Widget.cm",
            "Special.scaled",
            "fetch",
            "settle",
        ):
            return "x"
        return {"cached": "n", "gen": "n", "tagged": "s"}.get(path)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def fn(self, path: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
        node = find(self.tree, path)
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        return node

    def apply(self, kind: str) -> str | None:
        """Apply one edit of ``kind`` at a random place."""
        edit: Callable[[], str | None] = getattr(self, f"edit_{kind}")
        return edit()

    # one function body at a time
    def edit_const(self) -> str | None:
        path = self.rng.choice([*self.numeric_targets(), *STRING_TARGETS])
        fn = self.fn(path)
        nodes = [
            n for n in own_nodes(fn) if isinstance(n, ast.Constant) and type(n.value) in (int, str)
        ]
        if not nodes:
            return None
        node = self.rng.choice(nodes)
        old = node.value
        new: int | str
        if isinstance(old, int):
            new = max(1, old + self.rng.choice((-3, -2, -1, 1, 2, 4)))
            if new == old:
                new = old + 1
        else:
            new = str(old) + self.rng.choice("xyz:")
        node.value = new
        return f"const in {path}: {old!r} -> {new!r}"

    def edit_op(self) -> str | None:
        path = self.rng.choice(self.numeric_targets())
        fn = self.fn(path)
        nodes = [
            n
            for n in own_nodes(fn)
            if (isinstance(n, ast.BinOp) and type(n.op) in _BINOPS)
            or (isinstance(n, ast.Compare) and len(n.ops) == 1)
        ]
        if not nodes:
            return None
        node = self.rng.choice(nodes)
        if isinstance(node, ast.BinOp):
            old = type(node.op)
            node.op = self.rng.choice(_BINOPS[old])()
            return f"operator in {path}: {old.__name__} -> {type(node.op).__name__}"
        assert isinstance(node, ast.Compare)
        old_cmp = type(node.ops[0])
        node.ops = [self.rng.choice([c for c in _CMPOPS if c is not old_cmp])()]
        return f"comparison in {path}: {old_cmp.__name__} -> {type(node.ops[0]).__name__}"

    def edit_swap(self) -> str | None:
        path = self.rng.choice(self.helpers())
        ifs = [n for n in own_nodes(self.fn(path)) if isinstance(n, ast.If) and n.orelse]
        if not ifs:
            return None
        node = self.rng.choice(ifs)
        if ast.dump(ast.Module(node.body, [])) == ast.dump(ast.Module(node.orelse, [])):
            return None
        node.body, node.orelse = node.orelse, node.body
        return f"branches swapped in {path}"

    def edit_statement(self) -> str | None:
        path = self.rng.choice([*self.numeric_targets(), "tagged"])
        var = self.statement_param(path)
        if var is None:
            return None
        if var == "s":
            text = f"s = s.strip() + {self.rng.choice('pq')!r}"
        else:
            text = f"{var} = {_expr(self.rng, [var, *GLOBALS], 1, main=var)}"
        self.fn(path).body.insert(0, parse_stmt(text))
        return f"statement added to {path}: {text}"

    def edit_default(self) -> str | None:
        path = self.rng.choice([*self.helpers(), "Widget.scaled", "Special.scaled"])
        args = self.fn(path).args
        defaults = [
            d
            for d in (*args.defaults, *args.kw_defaults)
            if isinstance(d, ast.Constant) and type(d.value) is int
        ]
        if not defaults:
            return None
        node = self.rng.choice(defaults)
        old = int(node.value)  # type: ignore[arg-type]
        node.value = old + self.rng.choice((-2, -1, 1, 3))
        return f"default of {path}: {old!r} -> {node.value!r}"

    def _wrap_value(self, path: str, wrap: Callable[[ast.expr], ast.expr]) -> bool:
        fn = self.fn(path)
        values = [
            n
            for n in own_nodes(fn)
            if isinstance(n, (ast.Return, ast.Yield)) and n.value is not None
        ]
        if not values:
            return False
        node = self.rng.choice(values)
        assert node.value is not None
        node.value = wrap(node.value)
        return True

    # new module-level or class-level names
    def edit_new_helper(self) -> str | None:
        path = self.rng.choice([*self.numeric_targets(), *STRING_TARGETS])
        name = self.fresh("extra")
        if path in STRING_TARGETS:
            body = f"v + {self.rng.choice(('!', '?', '-x'))!r}"
        else:
            body = _expr(self.rng, ["v", *GLOBALS], 1, main="v")
        helper = parse_stmt(f"def {name}(v):\n    return {body}\n")
        if not self._wrap_value(path, lambda v: ast.Call(ast.Name(name, ast.Load()), [v], [])):
            return None
        # anywhere among the functions, before the classes whose bodies may call it at import
        first_def = _top_index(self.tree, "helper_0")
        at = self.rng.randint(first_def, _top_index(self.tree, "Base"))
        self.tree.body.insert(at, helper)
        return f"new function {name}(v): return {body}; called in {path}"

    def edit_new_constant(self) -> str | None:
        path = self.rng.choice([*self.numeric_targets(), *STRING_TARGETS])
        name = self.fresh("EXTRA")
        fn = self.fn(path)
        if path in STRING_TARGETS:
            value: int | str = self.rng.choice(("<", ">", "#"))
            ok = self._wrap_value(path, lambda v: ast.BinOp(v, ast.Add(), ast.Name(name)))
        else:
            value = self.rng.randint(1, 9)
            consts = [
                n for n in own_nodes(fn) if isinstance(n, ast.Constant) and type(n.value) is int
            ]
            if consts and self.rng.random() < 0.6:
                ok = replace(fn, self.rng.choice(consts), ast.Name(name, ast.Load()))
            else:
                ok = self._wrap_value(path, lambda v: ast.BinOp(v, ast.Add(), ast.Name(name)))
        if not ok:
            return None
        at = _top_index(self.tree, "helper_0")
        self.tree.body.insert(at, parse_stmt(f"{name} = {value!r}"))
        return f"new constant {name} = {value!r}, used in {path}"

    def edit_module_constant(self) -> str | None:
        name = self.rng.choice([*GLOBALS, "TAG"])
        stmt = next(
            s
            for s in self.tree.body
            if isinstance(s, ast.Assign)
            and isinstance(s.targets[0], ast.Name)
            and s.targets[0].id == name
        )
        node = stmt.value
        if isinstance(node, ast.UnaryOp):  # a negative literal
            stmt.value = node = ast.Constant(-node.operand.value)  # type: ignore[attr-defined]
        assert isinstance(node, ast.Constant)
        old = node.value
        if isinstance(old, str):
            node.value = self.rng.choice([t for t in TAGS if t != old])
        else:
            node.value = self.rng.choice([v for v in range(-3, 14) if v != old])
        return f"module constant {name}: {old!r} -> {node.value!r}"

    def edit_class_constant(self) -> str | None:
        cls = find(self.tree, "Widget")
        stmt = next(
            s
            for s in cls.body
            if isinstance(s, ast.Assign)
            and isinstance(s.targets[0], ast.Name)
            and s.targets[0].id == "SCALE"
        )
        assert isinstance(stmt.value, ast.Constant)
        old = stmt.value.value
        stmt.value.value = self.rng.choice([v for v in range(1, 9) if v != old])
        return f"class constant Widget.SCALE: {old!r} -> {stmt.value.value!r}"

    def edit_new_class_constant(self) -> str | None:
        path = self.rng.choice(
            ["Widget.scaled", "Widget.size", "Widget.cm", "Widget.sm", "Special.scaled"]
        )
        name = self.fresh("BONUS")
        owner = {"Widget.cm": "cls", "Widget.sm": "Widget"}.get(path, "self")
        value = self.rng.randint(1, 9)
        attr = parse_expr(f"{owner}.{name}")
        if not self._wrap_value(path, lambda v: ast.BinOp(v, ast.Add(), attr)):
            return None
        cls = find(self.tree, "Widget")
        assert isinstance(cls, ast.ClassDef)
        cls.body.insert(1, parse_stmt(f"{name} = {value}"))
        return f"new class constant Widget.{name} = {value}, used in {path}"

    def edit_new_method(self) -> str | None:
        path = self.rng.choice(WIDGET_INSTANCE_METHODS)
        name = self.fresh("extra_method")
        body = _expr(self.rng, ["v", "self.base"], 1, main="v")
        method = parse_stmt(f"def {name}(self, v):\n    return {body}\n")
        call = f"self.{name}"
        if not self._wrap_value(path, lambda v: ast.Call(parse_expr(call), [v], [])):
            return None
        cls = find(self.tree, "Widget")
        assert isinstance(cls, ast.ClassDef)
        cls.body.append(method)
        return f"new method Widget.{name}(self, v): return {body}; called in {path}"

    def edit_regex(self) -> str | None:
        stmt = next(
            s
            for s in self.tree.body
            if isinstance(s, ast.Assign)
            and isinstance(s.targets[0], ast.Name)
            and s.targets[0].id == "PATTERN"
        )
        assert isinstance(stmt.value, ast.Call)
        arg = stmt.value.args[0]
        assert isinstance(arg, ast.Constant)
        old = arg.value
        arg.value = self.rng.choice([p for p in PATTERNS if p != old])
        return f"regex PATTERN: {old!r} -> {arg.value!r}"

    def edit_new_import(self) -> str | None:
        path = self.rng.choice(self.numeric_targets())
        divisor = self.rng.randint(2, 12)
        if self.rng.random() < 0.5:
            stmt, call = "import math", "math.gcd"
        else:
            stmt, call = "from math import gcd", "gcd"
        if not self._wrap_value(
            path, lambda v: ast.Call(parse_expr(call), [v, ast.Constant(divisor)], [])
        ):
            return None
        if not any(ast.unparse(s) == stmt for s in self.tree.body):
            self.tree.body.insert(3, parse_stmt(stmt))
        return f"new import: {stmt}; {path} returns {call}(value, {divisor})"

    def edit_yield(self) -> str | None:
        fn = self.fn("gen")
        text = f"yield {_expr(self.rng, ['n', *GLOBALS], 1, main='n')}"
        fn.body.insert(self.rng.randint(0, len(fn.body)), ast.Expr(parse_expr(f"({text})")))
        return f"generator gen: {text} added"

    def edit_mixin(self) -> str | None:
        if self.mixin:
            return None
        path = self.rng.choice(WIDGET_INSTANCE_METHODS)
        name, method = self.fresh("Mixin"), self.fresh("mixed")
        body = _expr(self.rng, ["v", *GLOBALS], 1, main="v")
        if not self._wrap_value(path, lambda v: ast.Call(parse_expr(f"self.{method}"), [v], [])):
            return None
        cls = find(self.tree, "Widget")
        assert isinstance(cls, ast.ClassDef)
        cls.bases.append(ast.Name(name, ast.Load()))
        mixin = parse_stmt(f"class {name}:\n    def {method}(self, v):\n        return {body}\n")
        self.tree.body.insert(_top_index(self.tree, "Base"), mixin)
        self.mixin = True
        return (
            f"new base class {name} of Widget with {method}(self, v): return {body}; used in {path}"
        )


# -- refused edits ----------------------------------------------------------------------------
Locator = Callable[[ast.Module], tuple[int, int]]


def _line(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.lineno  # type: ignore[attr-defined]


def _span(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.end_lineno or node.lineno  # type: ignore[attr-defined]


def _refuse(
    rng: random.Random, tree: ast.Module, shape: Shape, kind: str
) -> tuple[str, str, Locator | None, dict[str, str]]:
    """Apply refused edit ``kind``: (description, keyword, locator in core.py, extra files)."""
    helper = f"helper_{rng.randrange(shape.helpers)}"
    widget = find(tree, "Widget")
    assert isinstance(widget, ast.ClassDef)
    if kind == "slots":
        widget.body.insert(0, parse_stmt("__slots__ = ('base',)"))

        def slots(t: ast.Module) -> tuple[int, int]:
            cls = find(t, "Widget")
            assert isinstance(cls, ast.ClassDef)
            # the header counts too: with other edits to the class the reason may name it
            slot = next(
                s
                for s in cls.body
                if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "__slots__"
            )
            return cls.lineno, slot.lineno

        return "__slots__ added to Widget", "__slots__", slots, {}
    if kind == "bases_replaced":
        widget.bases[0] = ast.Name("Plain", ast.Load())
        return (
            "Widget's base Base replaced by Plain",
            "bases",
            lambda t: _line(find(t, "Widget")),
            {},
        )
    if kind == "bases_builtin":
        widget.bases.append(ast.Name("dict", ast.Load()))
        return "dict added to Widget's bases", "bases", lambda t: _line(find(t, "Widget")), {}
    if kind == "module_statement":
        text = rng.choice(
            ("print('loaded')", "REGISTRY['late'] = helper_0", "helper_0(1)", "Widget.sm(2)")
        )
        tree.body.append(parse_stmt(text))
        return f"module-level statement {text}", "import", lambda t: _line(t.body[-1]), {}
    if kind == "captured_closure":
        outer = find(tree, "make_adder")
        assert isinstance(outer, ast.FunctionDef)
        outer.body.insert(0, parse_stmt(f"bonus = k + {rng.randint(1, 5)}"))
        inner = find(tree, "make_adder.add")
        assert isinstance(inner, ast.FunctionDef)
        ret = inner.body[-1]
        assert isinstance(ret, ast.Return) and ret.value is not None
        ret.value = ast.BinOp(ret.value, ast.Add(), ast.Name("bonus", ast.Load()))
        return (
            "make_adder.add also captures a new local bonus",
            "captured",
            lambda t: _span(find(t, "make_adder")),
            {},
        )
    if kind == "captured_wrapper":
        outer = find(tree, "traced")
        assert isinstance(outer, ast.FunctionDef)
        outer.body.insert(0, parse_stmt("label = fn.__name__"))
        inner = find(tree, "traced.wrapper")
        assert isinstance(inner, ast.FunctionDef)
        ret = inner.body[-1]
        assert isinstance(ret, ast.Return) and ret.value is not None
        ret.value = ast.BinOp(ret.value, ast.Add(), parse_expr("len(label)"))
        return (
            "traced.wrapper also captures a new local label",
            "captured",
            lambda t: _span(find(t, "traced")),
            {},
        )
    if kind == "decorator":
        fn = find(tree, helper)
        fn.decorator_list.append(parse_expr("functools.lru_cache(maxsize=8)"))

        def decorated(t: ast.Module) -> tuple[int, int]:
            node = find(t, helper)
            return node.decorator_list[0].lineno, node.lineno

        return f"{helper} decorated with lru_cache", "decorators", decorated, {}
    if kind == "signature":
        fn = find(tree, helper)
        assert isinstance(fn, ast.FunctionDef)
        fn.args.args.insert(1, ast.arg("required"))
        return (
            f"{helper} gains a required parameter",
            "signature",
            lambda t: _line(find(t, helper)),
            {},
        )
    if kind == "generator":
        fn = find(tree, helper)
        assert isinstance(fn, ast.FunctionDef)
        fn.body.insert(0, parse_stmt("if x is None:\n    yield x\n"))
        return f"{helper} becomes a generator", "generator", lambda t: _span(find(t, helper)), {}
    if kind == "new_module":
        return "new module extra.py", "new module", None, {"extra.py": "VALUE = 1\n"}
    if kind == "data_file":
        return "new data file settings.json", "data file", None, {"settings.json": "{}\n"}
    raise ValueError(kind)


# -- the case ---------------------------------------------------------------------------------
def generate(seed: int, refusal_rate: float = 0.25) -> Case:
    """The case for ``seed`` (deterministic)."""
    rng = random.Random(seed)
    helpers = rng.randint(2, 4)
    shape = Shape(
        helpers=helpers,
        kwonly=frozenset(i for i in range(helpers) if rng.random() < 0.3),
        table=rng.random() < 0.5,
        class_default=rng.random() < 0.5,
        default_from=rng.randrange(helpers),
        derived=rng.random() < 0.3,
        const_default=rng.randrange(helpers) if rng.random() < 0.25 else None,
        cached_calls=rng.randrange(helpers) if rng.random() < 0.3 else None,
        class_derived=rng.random() < 0.4,
        label=rng.random() < 0.4,
    )
    package = f"gen{seed}"
    source = _core_source(rng, shape)
    base_tree, tree = ast.parse(source), ast.parse(source)  # parsing twice beats deepcopy
    mutator = Mutator(rng, tree, shape)
    weights = {
        "const": 4,
        "op": 4,
        "swap": 2,
        "statement": 2,
        "default": 2,
        "new_helper": 2,
        "new_constant": 2,
        "module_constant": 2,
        "class_constant": 2,
        "new_class_constant": 1,
        "new_method": 1,
        "regex": 1,
        "yield": 1,
        "mixin": 1,
        "new_import": 1,
    }
    kinds, kind_weights = list(weights), list(weights.values())
    wanted = rng.randint(1, 4)
    edits: list[str] = []
    applied: list[str] = []
    stages: list[str] = []
    for _ in range(50):
        if len(edits) == wanted:
            break
        kind = rng.choices(kinds, kind_weights)[0]
        done = mutator.apply(kind)  # every edit changes the tree, or returns None
        if done is not None:
            edits.append(done)
            applied.append(kind)
            stages.append(render(tree))
    core = f"{package}/core.py"
    base = {
        f"{package}/__init__.py": '"""A generated package."""\n',
        core: render(base_tree),
        f"{package}/user.py": _user_source(shape),
    }
    final = {**base, core: render(tree)}
    compile(final[core], core, "exec")
    case = Case(
        seed, package, base, final, edits, _capture(shape), _probe(shape), applied, shape=shape
    )
    if rng.random() < refusal_rate:
        refusal = rng.choice(REFUSAL_KINDS)
        refused_tree = ast.parse(final[core])
        what, keyword, locate, extra = _refuse(rng, refused_tree, shape, refusal)
        files = {**final, core: render(refused_tree)}
        files.update({f"{package}/{name}": text for name, text in extra.items()})
        if locate is not None:
            first, last = locate(ast.parse(files[core]))
            path = core
        else:
            path, first, last = f"{package}/{next(iter(extra))}", 1, 1
        case.refusal = Refusal(refusal, files, path, first, last, keyword, what)
    flow = rng.choices(("direct", "chain", "late"), (5, 3, 2))[0]
    if flow == "chain" and len(stages) >= 2:
        case.mid_edits = rng.randint(1, len(stages) - 1)
        case.mid = {**base, core: stages[case.mid_edits - 1]}
        case.flow = flow
    elif flow == "late":
        case.flow = flow
    return case


def main(argv: list[str]) -> int:
    """Print the cases for the seeds on the command line."""
    for arg in argv[1:] or ["0"]:
        case = generate(int(arg))
        print(case.describe())
        if case.refusal is not None:
            r = case.refusal
            print(f"refused edit ({r.kind}) expected at {r.path}:{r.first}-{r.last} [{r.keyword}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
