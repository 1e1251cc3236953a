"""Compiling one definition alone gives the code its module compiled, on every CPython.

This is what baseline matching rests on: the runtime compiles the baseline text of a
function by itself (straight from text, or through the AST when the text path has no room)
and its fingerprint must equal the one of the function the whole module defined.
"""

from __future__ import annotations

from support import run_json

_CHECK = r'''
import ast, json, textwrap
from pyhotpatch.runtime import _compile
from pyhotpatch.runtime._fingerprint import fingerprint

MODULE = textwrap.dedent("""
    from __future__ import annotations
    import re, os.path as osp
    from collections import OrderedDict as OD

    def top(a, b=2, *, c=3):
        return re.compile(a).match(osp.join(b, c)) or OD()

    class Outer:
        LIMIT = 3

        def method(self, x):
            return super().__init__() if x else re.escape(str(x))

        class Inner:
            async def deep(self, y):
                def helper(z):
                    return z + y
                return [helper(i) for i in range(y)]

        def __private(self):
            return self._Outer__private

    def gen(n):
        for i in range(n):
            yield osp.basename(str(i))
""")
TABBED = "class T:\n\tdef m(self):\n\t\treturn re.compile('x')\n"
OLD_FUTURES = (
    "from __future__ import absolute_import, division\nimport os\n\n\n"
    "def legacy(x):\n    return os.sep + str(x / 2)\n"
)

def units(tree, scope=()):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield scope, node
        elif isinstance(node, ast.ClassDef):
            yield from units(node, (*scope, node.name))

def codes(code, scope, name):
    for part in (*scope, name):
        code = next(c for c in code.co_consts if hasattr(c, "co_name") and c.co_name == part)
    return code

results = []
flags = _compile.future_flags(("annotations",))
old_flags = _compile.future_flags(("absolute_import", "division"))
for text, imports, fl in (
    (MODULE, ("OD", "osp", "re"), flags),
    (TABBED, (), 0),
    (OLD_FUTURES, ("os",), old_flags),
):
    lines = text.splitlines()
    whole = compile(text, "m.py", "exec", flags=fl, dont_inherit=True)
    for scope, node in units(ast.parse(text)):
        source = "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n"
        want = fingerprint(codes(whole, scope, node.name))
        fast = _compile._compile_text(source, node.lineno, scope, "m.py", fl, imports)
        slow = _compile._compile_ast(source, node.lineno, scope, "m.py", fl, imports)
        results.append([node.name, fast is not None and fingerprint(fast) == want,
                        fast is None, fingerprint(slow) == want])
print(json.dumps(results))
'''


def test_definitions_compile_like_their_module(python: str) -> None:
    results = run_json(python, _CHECK)
    assert isinstance(results, list)
    names = [r[0] for r in results]
    assert names == ["top", "method", "deep", "__private", "gen", "m", "legacy"]
    for name, fast_ok, fast_skipped, slow_ok in results:
        assert slow_ok, f"{name}: compiled alone, the code differs from the module's"
        assert fast_ok or fast_skipped, f"{name}: the text path compiled other code"
    # the text path serves the common cases; tab-indented code takes the AST path
    assert [r[0] for r in results if r[2]] == ["m"]
