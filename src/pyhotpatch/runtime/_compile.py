"""Compile pieces of a package's source as if they sat in their module.

A package carries each changed definition as the exact lines of its release
file. To get the code object the release would have produced, the definition
is wrapped in empty class statements named after its enclosing classes (so
name mangling, ``super()`` and ``__qualname__`` come out right), compiled with
the module's ``__future__`` flags and file name, and the code object is picked
out of the constants. Nothing compiled here is executed.
"""

from __future__ import annotations
import __future__

import ast
import re
import sys
from types import CodeType
from typing import TypeVar

from pyhotpatch.errors import PackageError


def parse_unit(source: str, line: int) -> ast.stmt:
    """Parse one statement taken verbatim from a file, whose first line is line ``line``."""
    indented = source[:1] in (" ", "\t")
    # Blank lines in front put the statement at its line without walking the tree afterwards;
    # an indented statement sits in an ``if 1:`` block on the line before it.
    pad = "\n" * max(line - 2, 0) + "if 1:\n" if indented else "\n" * (line - 1)
    text = pad + source
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise PackageError(f"package source at line {line} does not parse: {exc.msg}") from exc
    body = tree.body[0].body if indented and isinstance(tree.body[0], ast.If) else tree.body
    if len(body) != 1:
        raise PackageError(f"package source at line {line} is not exactly one statement")
    stmt = body[0]
    if stmt.lineno != line and not (indented and line == 1):
        ast.increment_lineno(stmt, line - stmt.lineno)
    return stmt


def future_flags(features: tuple[str, ...]) -> int:
    """Compiler flags for the named ``from __future__`` features.

    Features already mandatory in this interpreter (``absolute_import`` …) are left out:
    the compiler ignores them in source, but would record them in ``co_flags`` if passed.
    """
    flags = 0
    for name in features:
        feature = getattr(__future__, name, None)
        if not isinstance(feature, __future__._Feature):
            raise PackageError(f"unknown __future__ feature {name!r}")
        mandatory = feature.getMandatoryRelease()
        if mandatory is None or mandatory > sys.version_info:
            flags |= feature.compiler_flag
    return flags


def wrap_in_scope(
    stmt: ast.stmt, scope: tuple[str, ...], imports: tuple[str, ...] = ()
) -> ast.Module:
    """A module holding ``stmt`` inside empty classes named by ``scope``.

    ``imports`` are the names the real module binds by ``import``: they are
    declared the same way (never executed), because the compiler emits other
    bytecode for method calls on imported names.
    """
    node: ast.stmt = stmt
    for name in reversed(scope):
        node = _located(
            ast.ClassDef(name=name, bases=[], keywords=[], body=[node], decorator_list=[]), stmt
        )
    declared: list[ast.stmt] = [
        _located(ast.Import(names=[_located(ast.alias(name=n), stmt)]), stmt) for n in imports
    ]
    return ast.Module(body=[*declared, node], type_ignores=[])


_Node = TypeVar("_Node", ast.stmt, ast.alias)


def _located(node: _Node, where: ast.stmt) -> _Node:
    """``node`` with the location of ``where`` (only the new nodes need one; no tree walk)."""
    node.lineno, node.col_offset = where.lineno, where.col_offset
    node.end_lineno, node.end_col_offset = where.end_lineno, where.end_col_offset
    return node


def compile_function(
    source: str,
    line: int,
    scope: tuple[str, ...],
    filename: str,
    flags: int,
    imports: tuple[str, ...] = (),
) -> CodeType:
    """The code object of the function defined by ``source`` inside classes ``scope``."""
    fast = _compile_text(source, line, scope, filename, flags, imports)
    return fast if fast is not None else _compile_ast(source, line, scope, filename, flags, imports)


def _compile_ast(
    source: str,
    line: int,
    scope: tuple[str, ...],
    filename: str,
    flags: int,
    imports: tuple[str, ...],
) -> CodeType:
    """``compile_function`` through the AST: works for any text, at about half the speed."""
    stmt = parse_unit(source, line)
    if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise PackageError(f"package source at line {line} is not a function definition")
    stmt.decorator_list = []
    code = _compile(wrap_in_scope(stmt, scope, imports), filename, flags)
    for name in scope:
        code = _child(code, name, line)
    return _child(code, stmt.name, line)


_DEF = re.compile(r"[ \t]*(?:async[ \t]+)?def[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(")


def _compile_text(
    source: str,
    line: int,
    scope: tuple[str, ...],
    filename: str,
    flags: int,
    imports: tuple[str, ...],
) -> CodeType | None:
    """Compile straight from text when the wrapper fits in front of the definition.

    The common case, and about twice as fast as building and compiling an AST: the
    import declarations share one line, each enclosing class gets a header line
    indented one space deeper, and blank lines put the definition at its real line.
    Returns None when there is no room or the text is unusual; the AST path decides.
    """
    match = _DEF.match(source)
    indent = len(source) - len(source.lstrip(" "))
    header_lines = len(scope) + (1 if imports else 0)
    if match is None or line <= header_lines or indent < len(scope) or (scope and not indent):
        return None
    parts = ["\n" * (line - 1 - header_lines)]
    if imports:
        parts.append("import " + ", ".join(imports) + "\n")
    parts += [" " * depth + f"class {name}:\n" for depth, name in enumerate(scope)]
    try:
        code: CodeType = compile(
            "".join(parts) + source, filename, "exec", flags=flags, dont_inherit=True
        )
    except (SyntaxError, ValueError):
        return None
    for name in scope:
        code = _child(code, name, line)
    try:
        return _child(code, match.group(1), line)
    except PackageError:
        return None


def compile_in_scope(
    stmt: ast.stmt, scope: tuple[str, ...], filename: str, flags: int, imports: tuple[str, ...] = ()
) -> CodeType:
    """Code that runs ``stmt`` at module level or as the body of class ``scope``.

    For a class scope the returned code is the class body itself: run it with
    ``exec`` in a namespace copied from the live class, then point its
    ``__classcell__`` at the live class.
    """
    module = wrap_in_scope(stmt, scope, imports if scope else ())
    code = _compile(module, filename, flags)
    for name in scope:
        code = _child(code, name, stmt.lineno)
    return code


def compile_expression(source: str, filename: str, flags: int) -> CodeType:
    """Compile a short expression stored in a manifest."""
    try:
        code: CodeType = compile(source, filename, "eval", flags=flags, dont_inherit=True)
    except SyntaxError as exc:
        raise PackageError(f"manifest expression {source!r} does not parse: {exc.msg}") from exc
    return code


def _compile(module: ast.Module, filename: str, flags: int) -> CodeType:
    try:
        code: CodeType = compile(module, filename, "exec", flags=flags, dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise PackageError(f"package source does not compile: {exc}") from exc
    return code


def _child(code: CodeType, name: str, line: int) -> CodeType:
    for const in code.co_consts:
        if isinstance(const, CodeType) and const.co_name == name:
            return const
    raise PackageError(f"compiled package source at line {line} holds no code for {name!r}")
