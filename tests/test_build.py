"""The builder: release forms, noise, every refusal with its ``path:line: reason``, and the CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pyhotpatch.build import build, explain
from pyhotpatch.errors import NotHotpatchable, SourceError
from pyhotpatch.package import read_package
from support import make_release

HOTPATCH = str(Path(sys.executable).parent / "hotpatch")
MARK = "# <-"  # comments are noise to the builder, so they can mark the line a reason must name
REASON_RE = re.compile(r"^(?P<path>[\w./-]+):(?P<line>\d+): (?P<reason>.+)$")

BASE = """\
def check(token):
    return token == "secret"
"""
FIXED = """\
def check(token):
    import hmac

    return hmac.compare_digest(token, "secret")
"""


def _files(module: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"demo/__init__.py": "", "demo/m.py": module, **(extra or {})}


def _pair(
    tmp_path: Path,
    old: str,
    new: str,
    extra_old: dict[str, str] | None = None,
    extra_new: dict[str, str] | None = None,
) -> tuple[str, str]:
    a = make_release(tmp_path / "old", "demo", "1.0", _files(old, extra_old))
    b = make_release(tmp_path / "new", "demo", "1.1", _files(new, extra_new))
    return str(a), str(b)


def _refusals(old: str, new: str) -> list[str]:
    with pytest.raises(NotHotpatchable) as info:
        build(old, new)
    assert info.value.reasons == explain(old, new).refused
    for reason in info.value.reasons:
        assert REASON_RE.match(reason), f"not of the form path:line: reason: {reason!r}"
    return info.value.reasons


def _marked(text: str) -> int:
    """The 1-based line of ``text`` (as written by make_release) that carries the marker."""
    lines = textwrap.dedent(text).splitlines()
    hits = [i for i, line in enumerate(lines, 1) if MARK in line]
    assert len(hits) == 1, "a snippet must mark exactly one line"
    return hits[0]


def _wheel(path: Path, name: str, version: str, files: dict[str, str]) -> Path:
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, textwrap.dedent(text))
        zf.writestr(
            f"{name}-{version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        )
        zf.writestr(f"{name}-{version}.dist-info/RECORD", "")
    return whl


def _sdist(path: Path, name: str, version: str, files: dict[str, str], src: bool = False) -> Path:
    out = path / f"{name}-{version}.tar.gz"
    top = f"{name}-{version}"
    entries = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n',
        "tests/test_m.py": "def test_nothing():\n    pass\n",
        **{("src/" if src else "") + rel: textwrap.dedent(text) for rel, text in files.items()},
    }
    with tarfile.open(out, "w:gz") as tf:
        for rel, text in entries.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out


def _hotpatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOTPATCH, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


# -- releases in every form ------------------------------------------------------------------


def test_directories(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, BASE, FIXED)
    result = build(old, new, patch_id="KB1")
    (target,) = result.manifest.targets
    assert (target.distribution, target.baseline_version, target.fixed_version) == (
        "demo",
        "1.0",
        "1.1",
    )
    (module,) = target.modules
    assert (module.name, module.path) == ("demo.m", "demo/m.py")
    assert [(a.kind, a.name) for a in module.actions] == [("function", "check")]
    assert result.explain.swapped == ["demo/m.py:1: demo.m.check"]


FORMS: dict[str, Callable[[Path, str, dict[str, str]], Path]] = {
    "dir": lambda where, v, files: make_release(where / v, "demo", v, files),
    "src-layout": lambda where, v, files: make_release(
        where / v, "demo", v, {"src/" + rel: text for rel, text in files.items()}
    ),
    "wheel": lambda where, v, files: _wheel(where, "demo", v, files),
    "sdist": lambda where, v, files: _sdist(where, "demo", v, files),
    "sdist-src-layout": lambda where, v, files: _sdist(where, "demo", v, files, src=True),
}


def test_wheels_sdists_and_src_layout_give_the_same_package(tmp_path: Path) -> None:
    made = {}
    for form, make in FORMS.items():
        where = tmp_path / form
        where.mkdir()
        old, new = make(where, "1.0", _files(BASE)), make(where, "1.1", _files(FIXED))
        made[form] = build(str(old), str(new), patch_id="KB1").to_bytes()
    assert len(set(made.values())) == 1, "the same release in another form gave another package"


def test_mixed_forms(tmp_path: Path) -> None:
    whl = _wheel(tmp_path, "demo", "1.0", _files(BASE))
    sdist = _sdist(tmp_path, "demo", "1.1", _files(FIXED))
    manifest = build(str(whl), str(sdist)).manifest
    assert manifest.targets[0].baseline_version == "1.0"
    assert manifest.targets[0].fixed_version == "1.1"


def test_different_distributions_refused(tmp_path: Path) -> None:
    old = make_release(tmp_path / "a", "demo", "1.0", _files(BASE))
    new = make_release(tmp_path / "b", "other", "1.1", _files(FIXED))
    with pytest.raises(SourceError, match=r"is demo, .* is other: not one distribution"):
        build(str(old), str(new))


def test_name_normalisation_is_one_distribution(tmp_path: Path) -> None:
    old = make_release(tmp_path / "a", "My_Demo", "1.0", _files(BASE))
    new = make_release(tmp_path / "b", "my-demo", "1.1", _files(FIXED))
    assert build(str(old), str(new)).manifest.targets[0].distribution == "My_Demo"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "absent", "no such file or directory"),
        (lambda p: _write(p / "notes.txt", b"hello"), "not a wheel, an sdist or a directory"),
        (lambda p: _write(p / "broken-1.0-py3-none-any.whl", b"PK junk"), "not a valid wheel"),
        (lambda p: _nometa_wheel(p), "wheel has no .dist-info/METADATA"),
        (lambda p: _write(p / "broken-1.0.tar.gz", b"\x1f\x8b junk"), "cannot (unpack|read) sdist"),
        (lambda p: _evil_sdist(p), "escapes the archive"),
        (lambda p: _empty_dir(p), "no importable Python package or module"),
    ],
    ids=[
        "absent",
        "text-file",
        "bad-wheel",
        "wheel-no-metadata",
        "bad-sdist",
        "evil-sdist",
        "empty",
    ],
)
def test_unreadable_release(tmp_path: Path, make: Callable[[Path], Path], match: str) -> None:
    good = make_release(tmp_path / "good", "demo", "1.1", _files(FIXED))
    bad = make(tmp_path)
    with pytest.raises(SourceError, match=match):
        build(str(bad), str(good))
    with pytest.raises(SourceError, match=match):
        build(str(good), str(bad))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _nometa_wheel(path: Path) -> Path:
    whl = path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("demo/__init__.py", "")
    return whl


def _evil_sdist(path: Path) -> Path:
    out = path / "demo-1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        data = b"x = 1\n"
        info = tarfile.TarInfo("demo-1.0/../../escaped.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return out


def _empty_dir(path: Path) -> Path:
    return make_release(path / "empty", "demo", "1.0", {"README.md": "nothing\n"})


# -- nothing to ship, and noise --------------------------------------------------------------


def test_no_code_change(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, BASE, BASE)
    with pytest.raises(SourceError, match="changes no code: nothing to hotpatch"):
        build(old, new)


NOISE = [
    pytest.param(
        '"""Module."""\n' + BASE,
        '"""Module, reworded."""\n' + BASE,
        "module: docstring changed",
        id="module-docstring",
    ),
    pytest.param(
        BASE,
        'def check(token):\n    """Compare."""\n    return token == "secret"\n',
        "check: docstring or annotations changed",
        id="function-docstring",
    ),
    pytest.param(
        'class C:\n    """One."""\n\n    x = 1\n',
        'class C:\n    """Two."""\n\n    x = 1\n',
        "C: docstring changed",
        id="class-docstring",
    ),
    pytest.param(
        BASE,
        '# a comment\ndef check(token):  # why\n    # compare\n    return token == "secret"\n',
        None,
        id="comments",
    ),
    pytest.param(
        'X = dict(a=1, b=2)\n\n\ndef check(token):\n    return token == "secret"\n',
        "X = dict(\n    a=1,\n    b=2,\n)\ndef check(token): return (token == 'secret')\n",
        None,
        id="formatting",
    ),
    pytest.param(
        BASE,
        'def check(token: str) -> bool:\n    return token == "secret"\n',
        "check: docstring or annotations changed",
        id="function-annotations",
    ),
    pytest.param(
        "LIMIT: int = 3\n",
        "LIMIT: float = 3\n",
        "annotation of LIMIT changed",
        id="variable-annotation",
    ),
    pytest.param(
        '__version__ = "1.0"\n',
        '__version__ = "1.1"\n',
        "version string __version__ changed",
        id="version",
    ),
    pytest.param(
        "from typing import TYPE_CHECKING\n",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import requests\n",
        "TYPE_CHECKING block changed (never runs)",
        id="type-checking-import",
    ),
    pytest.param(
        BASE + "\n\ndef legacy():\n    return 0\n",
        BASE,
        "legacy removed; the live one stays, unused",
        id="removed-function",
    ),
    pytest.param(
        BASE + "\n\nclass Old:\n    pass\n",
        BASE,
        "class Old removed; the live one stays",
        id="removed-class",
    ),
    pytest.param("import os\n" + BASE, BASE, "import of os removed", id="removed-import"),
    pytest.param(
        "LIMIT = 3\n" + BASE, BASE, "LIMIT removed; the live value stays", id="removed-constant"
    ),
]


@pytest.mark.parametrize(("old", "new", "ignored"), NOISE)
def test_noise_is_not_shipped_but_reported(
    tmp_path: Path, old: str, new: str, ignored: str | None
) -> None:
    a, b = _pair(tmp_path, old, new)
    report = explain(a, b)
    assert report.refused == [] and report.swapped == [] and report.added == []
    if ignored is None:
        assert report.ignored == []
    else:
        assert any(i.startswith("demo/m.py:") and ignored in i for i in report.ignored), (
            report.ignored
        )
    with pytest.raises(SourceError, match="changes no code"):
        build(a, b)


def test_noise_next_to_a_fix_ships_only_the_fix(tmp_path: Path) -> None:
    old = '"""Doc."""\n__version__ = "1.0"\n\n\n' + BASE + "\n\ndef legacy():\n    return 0\n"
    new = '"""New doc."""\n__version__ = "1.1"\n\n\n' + FIXED
    a, b = _pair(
        tmp_path,
        old,
        new,
        {"demo/README.md": "a\n", "tests/test_m.py": "x = 1\n"},
        {"demo/README.md": "b\n", "tests/test_m.py": "x = 2\n"},
    )
    result = build(a, b)
    actions = [a for t in result.manifest.targets for m in t.modules for a in m.actions]
    assert [(a.kind, a.name) for a in actions] == [("function", "check")]
    ignored = "\n".join(result.explain.ignored)
    for expected in (
        "docstring changed",
        "version string",
        "legacy removed",
        "README.md:1: non-code file",
    ):
        assert expected in ignored
    assert "tests/" not in ignored  # test suites are not part of the release at all


def test_removed_module_is_ignored(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED, {"demo/old.py": "x = 1\n"}, {})
    result = build(a, b)
    assert "demo/old.py:1: module removed; the loaded one stays" in result.explain.ignored


# -- refusals --------------------------------------------------------------------------------

METAS = "class M(type):\n    pass\n\n\nclass N(type):\n    pass\n\n\n"
RUN_A = "class A:\n    def run(self):\n        return 1\n\n\n"
REGISTER = "REGISTRY = []\n\n\ndef register(name):\n    REGISTRY.append(name)\n\n\n"

REFUSALS = [
    pytest.param(
        'class C:\n    __slots__ = ("a",)\n',
        'class C:\n    __slots__ = ("a", "b")  # <-\n',
        "__slots__ of C changed",
        id="slots",
    ),
    pytest.param(
        METAS + "class C(metaclass=M):\n    x = 1\n",
        METAS + "class C(metaclass=N):  # <-\n    x = 1\n",
        "class C: metaclass or class keywords changed",
        id="metaclass",
    ),
    pytest.param(
        "import enum\n\n\nclass Color(enum.Enum):\n    RED = 1\n    GREEN = 2\n",
        "import enum\n\n\nclass Color(enum.Enum):  # <-\n    RED = 1\n    GREEN = 2\n"
        "    BLUE = 3\n",
        "class Color: Enum members changed",
        id="enum-member-added",
    ),
    pytest.param(
        "from enum import IntEnum\n\n\nclass Level(IntEnum):\n    LOW = 1\n    HIGH = 2\n",
        "from enum import IntEnum\n\n\nclass Level(IntEnum):  # <-\n    LOW = 1\n    HIGH = 3\n",
        "class Level: Enum members changed",
        id="enum-value-changed",
    ),
    pytest.param(
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass P:\n    x: int\n    y: int = 0\n",
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass P:  # <-\n    x: int\n"
        "    y: int = 0\n    z: int = 1\n",
        "class P: dataclass fields changed",
        id="dataclass-field-added",
    ),
    pytest.param(
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass P:\n    x: int\n    y: int = 0\n",
        "import dataclasses\n\n\n@dataclasses.dataclass\nclass P:  # <-\n    x: int\n",
        "class P: dataclass fields changed",
        id="dataclass-field-removed",
    ),
    pytest.param(
        "from typing import NamedTuple\n\n\nclass P(NamedTuple):\n    x: int\n",
        "from typing import NamedTuple\n\n\nclass P(NamedTuple):  # <-\n    x: int\n    y: int = 0\n",
        "class P: record fields changed",
        id="namedtuple-field-added",
    ),
    pytest.param(
        "class A:\n    pass\n\n\nclass B:\n    pass\n\n\nclass C(A, B):\n    pass\n",
        "class A:\n    pass\n\n\nclass B:\n    pass\n\n\nclass C(B, A):  # <-\n    pass\n",
        "bases changed and the swap cannot be proven safe (existing bases removed or reordered)",
        id="bases-reordered",
    ),
    pytest.param(
        "class A:\n    pass\n\n\nclass C(A):\n    pass\n",
        "class A:\n    pass\n\n\nclass C:  # <-\n    pass\n",
        "existing bases removed or reordered",
        id="base-removed",
    ),
    pytest.param(
        "class A:\n    pass\n\n\nclass C(A):\n    pass\n",
        "class A:\n    pass\n\n\nclass M:\n    def __init__(self):\n        self.x = 1\n\n\n"
        "class C(A, M):  # <-\n    pass\n",
        "added base M has state of its own",
        id="base-with-init",
    ),
    pytest.param(
        "import collections\n\n\nclass C:\n    pass\n",
        "import collections\n\n\nclass C(collections.UserDict):  # <-\n    pass\n",
        "added base collections.UserDict is not a plain class of this module",
        id="foreign-base",
    ),
    pytest.param(
        RUN_A + "class C(A):\n    def run(self):\n        return 2\n",
        RUN_A + "class C(A):\n    def run(self):  # <-\n        return super().run() + 1\n",
        "C.run: starts using super() or __class__",
        id="super-in-method",
    ),
    pytest.param(
        "def make(n, m):\n    def add(x):\n        return x + n\n\n    return add\n",
        "def make(n, m):  # <-\n    def add(x):\n        return x + n + m\n\n    return add\n",
        "make.<locals>.add: captured variables changed ('n',) -> ('m', 'n')",
        id="closure-captures",
    ),
    pytest.param(
        "def outer(x):\n    def inner():\n        return 1\n\n    return inner\n",
        "def outer(x):  # <-\n    def inner():\n        return x\n\n    return inner\n",
        "outer.<locals>.inner: captured variables changed () -> ('x',)",
        id="closure-new-capture",
    ),
    pytest.param(
        REGISTER + "register('a')\n",
        REGISTER + "register('b')  # <-\n",
        "statement run at import changed at module level: import-time side effects",
        id="module-call-changed",
    ),
    pytest.param(
        BASE,
        BASE + "\n\nprint('starting')  # <-\n",
        "statement run at import added at module level",
        id="module-call-added",
    ),
    pytest.param(
        "class C:\n    x = 1\n    print(x)\n",
        "class C:\n    x = 1\n    print(x + 1)  # <-\n",
        "statement run at import changed at class C body",
        id="class-body-call",
    ),
    pytest.param(
        "import sys\n\nif sys.platform:\n    def g():\n        return 1\n",
        "import sys\n\nif sys.maxsize:  # <-\n    def g():\n        return 2\n",
        "conditional definition changed at module level",
        id="conditional-definition",
    ),
    pytest.param(
        BASE,
        "import requests  # <-\n\n\n" + BASE,
        "new import of requests, from outside the distribution and the standard library",
        id="third-party-import",
    ),
    pytest.param(
        BASE,
        "from yaml import safe_load  # <-\n\n\n" + BASE,
        "new import of yaml",
        id="third-party-from-import",
    ),
    pytest.param(
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef f(x):\n    return x\n",
        "import functools\n\n\n@functools.lru_cache(maxsize=8)\ndef f(x):  # <-\n    return x\n",
        "f: decorators changed; the live wrapper cannot be rebuilt",
        id="decorator-changed",
    ),
    pytest.param(
        "def deco(f):\n    return f\n\n\ndef f(x):\n    return x\n",
        "def deco(f):\n    return f\n\n\n@deco\ndef f(x):  # <-\n    return x + 1\n",
        "f: decorators changed",
        id="decorator-added",
    ),
    pytest.param(
        "def deco(c):\n    return c\n\n\nclass C:\n    x = 1\n",
        "def deco(c):\n    return c\n\n\n@deco\nclass C:  # <-\n    x = 1\n",
        "class C: decorators changed",
        id="class-decorator",
    ),
    pytest.param(
        "def f(a, b):\n    return a\n",
        "def f(a):  # <-\n    return a\n",
        "f: signature changed incompatibly (positional parameters changed from (a, b) to (a))",
        id="signature-param-removed",
    ),
    pytest.param(
        "def f(a):\n    return a\n",
        "def f(a, b):  # <-\n    return a + b\n",
        "signature changed incompatibly (new positional parameters without defaults)",
        id="signature-param-added",
    ),
    pytest.param(
        "def f(a, b):\n    return a - b\n",
        "def f(b, a):  # <-\n    return a - b\n",
        "signature changed incompatibly (positional parameters changed",
        id="signature-reordered",
    ),
    pytest.param(
        "def f(a, *, key=None):\n    return a\n",
        "def f(a):  # <-\n    return a\n",
        "signature changed incompatibly (keyword-only parameters removed)",
        id="signature-kwonly-removed",
    ),
    pytest.param(
        "def f(*args, **kwargs):\n    return args\n",
        "def f(*args):  # <-\n    return args\n",
        "signature changed incompatibly (**kwargs removed)",
        id="signature-kwargs-removed",
    ),
    pytest.param(
        "def f(a, b):\n    return a\n",
        "def f(a, b, /):  # <-\n    return a\n",
        "signature changed incompatibly (parameters became positional-only)",
        id="signature-positional-only",
    ),
    pytest.param(
        "def f(x):\n    return x\n",
        "async def f(x):  # <-\n    return x\n",
        "f changed between def and async def",
        id="def-to-async",
    ),
    pytest.param(
        "async def f(x):\n    return x\n",
        "def f(x):  # <-\n    return x\n",
        "f changed between def and async def",
        id="async-to-def",
    ),
    pytest.param(
        "def f(x):\n    return [x]\n",
        "def f(x):  # <-\n    yield x\n",
        "f changed between a function and a generator",
        id="function-to-generator",
    ),
    pytest.param(
        "def f(x):\n    yield x\n",
        "def f(x):  # <-\n    return [x]\n",
        "f changed between a function and a generator",
        id="generator-to-function",
    ),
    pytest.param(
        "import os\n\nTOKEN = 'fixed'\n",
        "import os\n\nTOKEN = os.urandom(8)  # <-\n",
        "TOKEN is computed at import by code with side effects (calls os.urandom())",
        id="side-effect-assignment",
    ),
    pytest.param(
        "CONFIG = {}\n",
        "CONFIG = open('config.json').read()  # <-\n",
        "CONFIG is computed at import by code with side effects",
        id="side-effect-open",
    ),
    pytest.param(
        "import os\n\n\ndef f(seed=1):\n    return seed\n",
        "import os\n\n\ndef f(seed=os.urandom(4)):  # <-\n    return seed\n",
        "f: new default value has side effects (calls os.urandom())",
        id="side-effect-default",
    ),
    pytest.param(
        "X = 1\nX: int = 2\n",
        "X = 1\nX: int = 3  # <-\n",
        "X is assigned more than once at import, not only by plain assignments",
        id="assigned-twice",
    ),
    pytest.param(
        "N = 1\nN += 1\n",
        "N = 1\nN += 2  # <-\n",
        "N is assigned more than once at import",
        id="augmented-assignment",
    ),
    pytest.param(
        BASE,
        BASE + "\n\nclass Plugin:\n    print('loading')  # <-\n",
        "new class Plugin runs code in its body at definition",
        id="new-class-with-code",
    ),
    pytest.param(
        "class App:\n    def route(self, p):\n        return lambda f: f\n\n\napp = App()\n",
        "class App:\n    def route(self, p):\n        return lambda f: f\n\n\napp = App()\n\n\n"
        "@app.route('/x')\ndef handler():  # <-\n    return 1\n",
        "new function handler is decorated with @app.route",
        id="new-function-unknown-decorator",
    ),
    pytest.param(
        BASE,
        "from __future__ import annotations  # <-\n\n" + BASE,
        "from __future__ imports changed",
        id="future-import",
    ),
    pytest.param(
        BASE,
        "def check(token):\n    return token ==  # <-\n",
        "fixed release does not parse",
        id="fixed-syntax-error",
    ),
]


@pytest.mark.parametrize(("old", "new", "reason"), REFUSALS)
def test_refused_with_path_line_reason(tmp_path: Path, old: str, new: str, reason: str) -> None:
    a, b = _pair(tmp_path, old, new)
    reasons = _refusals(a, b)
    assert any(reason in r for r in reasons), reasons
    for got in reasons:
        match = REASON_RE.match(got)
        assert match is not None
        assert match["path"] == "demo/m.py"
        assert int(match["line"]) == _marked(new), f"wrong line in {got!r}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (REGISTER + "register('a')\n", REGISTER + "register('b')\n"),
        ("class C:\n    x = 1\n    print(x)\n", "class C:\n    x = 1\n    print(x + 1)\n"),
    ],
    ids=["module", "class-body"],
)
def test_changed_import_time_statement_is_one_reason(tmp_path: Path, old: str, new: str) -> None:
    """A statement edited in place is one change, not a change plus a removal."""
    a, b = _pair(tmp_path, old, new)
    reasons = _refusals(a, b)
    assert len(reasons) == 1, reasons
    assert "changed" in reasons[0] and "removed" not in reasons[0]


def test_removed_statement_points_at_its_baseline_line(tmp_path: Path) -> None:
    old = (
        "REGISTRY = []\n\n\ndef register(name):\n    REGISTRY.append(name)\n\n\n"
        "register('a')  # <-\nregister('b')\n\n\ndef f():\n    return 1\n"
    )
    new = (
        "REGISTRY = []\n\n\ndef register(name):\n    REGISTRY.append(name)\n\n\n"
        "register('b')\n\n\ndef f():\n    return 1\n"
    )
    a, b = _pair(tmp_path, old, new)
    (reason,) = _refusals(a, b)
    assert reason == (
        f"demo/m.py:{_marked(old)}: statement run at import removed at module level: "
        "its effects are already in the process"
    )


def test_baseline_that_does_not_parse(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, "def f(:\n    pass\n", BASE)
    (reason,) = _refusals(a, b)
    assert reason.startswith("demo/m.py:1: baseline does not parse")


def test_source_that_is_not_utf8(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    (Path(b) / "demo" / "m.py").write_bytes(b"x = '\xff'\n")
    assert _refusals(a, b) == ["demo/m.py:1: source is not UTF-8"]


@pytest.mark.parametrize(
    ("rel", "old", "new", "reason"),
    [
        ("demo/data.json", '{"a": 1}\n', '{"a": 2}\n', "data file changed"),
        ("demo/templates/page.html", "<p>{{x}}</p>\n", "<p>{{x|e}}</p>\n", "data file changed"),
        ("demo/_speedups.so", "\x7fELF1", "\x7fELF2", "compiled module changed"),
        ("demo/_speedups.pyx", "def f(): pass\n", "def f(): return 1\n", "compiled module changed"),
    ],
    ids=["json", "template", "so", "pyx"],
)
def test_non_python_files(tmp_path: Path, rel: str, old: str, new: str, reason: str) -> None:
    a, b = _pair(tmp_path, BASE, FIXED, {rel: old}, {rel: new})
    (got,) = _refusals(a, b)
    assert got.startswith(f"{rel}:1: {reason}")


def test_new_module_file(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED, {}, {"demo/util.py": "def helper():\n    return 1\n"})
    (reason,) = _refusals(a, b)
    assert reason.startswith("demo/util.py:1: new module")


def test_every_refusal_is_reported_at_once(tmp_path: Path) -> None:
    old = 'class C:\n    __slots__ = ("a",)\n\n\n' + BASE
    new = 'class C:\n    __slots__ = ("a", "b")\n\n\n' + FIXED
    a, b = _pair(
        tmp_path,
        old,
        new,
        {"demo/data.json": "1\n", "demo/x.so": "1"},
        {"demo/data.json": "2\n", "demo/x.so": "2"},
    )
    reasons = _refusals(a, b)
    assert [r.split(":")[0] for r in reasons] == ["demo/data.json", "demo/m.py", "demo/x.so"]
    assert reasons[1] == "demo/m.py:2: __slots__ of C changed: live instances keep the old layout"
    assert "3 change(s) cannot be hotpatched" in str(NotHotpatchable(reasons))


# -- what is accepted ------------------------------------------------------------------------


def test_new_plain_mixin_base_is_a_bases_action(tmp_path: Path) -> None:
    old = "class A:\n    pass\n\n\nclass C(A):\n    def run(self):\n        return 1\n"
    new = (
        "class A:\n    pass\n\n\nclass Audit:\n    def audit(self):\n        return True\n\n\n"
        "class C(A, Audit):\n    def run(self):\n        return 1\n"
    )
    a, b = _pair(tmp_path, old, new)
    result = build(a, b)
    actions = result.manifest.targets[0].modules[0].actions
    kinds = [(x.kind, x.scope, x.names, x.expression) for x in actions]
    assert kinds == [("define", (), ("Audit",), None), ("bases", ("C",), (), "(A, Audit, )")]
    assert result.explain.swapped == ["demo/m.py:10: demo.m.C bases -> A, Audit"]
    assert result.explain.added == ["demo/m.py:5: class Audit"]


@pytest.mark.parametrize(
    ("old_sig", "new_sig"),
    [
        ("a", "a, b=None"),
        ("a", "a, *, strict=False"),
        ("a", "a, **kw"),
        ("a", "a, *rest"),
        ("a, /", "a, /, b=1"),
        ("a, *, k", "a, *, k, j=2"),
    ],
)
def test_compatible_signature_changes(tmp_path: Path, old_sig: str, new_sig: str) -> None:
    a, b = _pair(
        tmp_path, f"def f({old_sig}):\n    return a\n", f"def f({new_sig}):\n    return a\n"
    )
    actions = build(a, b).manifest.targets[0].modules[0].actions
    assert [(x.kind, x.name) for x in actions] == [("function", "f")]


def test_import_of_the_release_itself_and_stdlib_is_a_definition(tmp_path: Path) -> None:
    new = "import hmac\nfrom demo import util\n\n\n" + FIXED
    a, b = _pair(tmp_path, BASE, new, {"demo/util.py": "X = 1\n"}, {"demo/util.py": "X = 1\n"})
    result = build(a, b)
    names = [x.names for x in result.manifest.targets[0].modules[0].actions if x.kind == "define"]
    assert names == [("hmac",), ("util",)]


def test_changed_default_rebinds_defaults(tmp_path: Path) -> None:
    a, b = _pair(
        tmp_path, "def f(x, limit=10):\n    return x\n", "def f(x, limit=5):\n    return x\n"
    )
    (action,) = build(a, b).manifest.targets[0].modules[0].actions
    assert action.kind == "function" and action.rebind_defaults


def test_constant_with_aliases_in_other_modules(tmp_path: Path) -> None:
    importer = "from demo.m import PATTERN\nfrom .m import PATTERN as P2\n"
    a, b = _pair(
        tmp_path,
        "import re\n\nPATTERN = re.compile('a')\n",
        "import re\n\nPATTERN = re.compile('b')\n",
        {"demo/other.py": importer},
        {"demo/other.py": importer},
    )
    (action,) = build(a, b).manifest.targets[0].modules[0].actions
    assert action.kind == "define" and action.names == ("PATTERN",)
    assert action.aliases == (("demo.other", "P2"), ("demo.other", "PATTERN"))


# -- the command line ------------------------------------------------------------------------


def test_cli_build_writes_the_package(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    out = tmp_path / "KB5031001.hotpatch"
    done = _hotpatch(
        "build",
        a,
        b,
        "-o",
        str(out),
        "--id",
        "KB5031001",
        "--classification",
        "Critical",
        "--cve",
        "CVE-2024-0001",
        "--cve",
        "CVE-2024-0002",
        "--title",
        "Fix check",
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "KB5031001" in done.stdout
    manifest = read_package(out).manifest
    assert (manifest.id, manifest.title, manifest.classification) == (
        "KB5031001",
        "Fix check",
        "Critical",
    )
    assert manifest.cves == ("CVE-2024-0001", "CVE-2024-0002")
    assert (
        out.read_bytes()
        == build(
            a,
            b,
            patch_id="KB5031001",
            title="Fix check",
            classification="Critical",
            cves=("CVE-2024-0001", "CVE-2024-0002"),
        ).to_bytes()
    )


def test_cli_build_not_hotpatchable_exits_3(tmp_path: Path) -> None:
    old = 'class C:\n    __slots__ = ("a",)\n\n\n' + BASE
    new = 'class C:\n    __slots__ = ("a", "b")\n\n\n' + FIXED
    a, b = _pair(tmp_path, old, new, {"demo/data.json": "1\n"}, {"demo/data.json": "2\n"})
    out = tmp_path / "x.hotpatch"
    done = _hotpatch("build", a, b, "-o", str(out))
    assert done.returncode == 3, done.stderr
    assert not out.exists()
    lines = [line for line in done.stderr.splitlines() if REASON_RE.match(line)]
    assert lines == _refusals(a, b)
    assert len(lines) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["build"],
        ["build", "{a}"],
        ["build", "{a}", "{b}"],  # neither -o nor --explain
        ["build", "{a}", "{b}", "-o", "{out}", "--classification", "Important"],
        ["build", "{a}", "{b}", "-o", "{out}", "--no-such-option"],
    ],
    ids=["no-args", "one-release", "no-output", "bad-classification", "unknown-option"],
)
def test_cli_build_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    out = tmp_path / "x.hotpatch"
    done = _hotpatch(*[x.format(a=a, b=b, out=out) for x in args])
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not out.exists()


def test_cli_build_bad_release_exits_1(tmp_path: Path) -> None:
    a, _ = _pair(tmp_path, BASE, FIXED)
    done = _hotpatch("build", a, str(tmp_path / "absent"), "-o", str(tmp_path / "x.hotpatch"))
    assert done.returncode == 1
    assert "SourceError" in done.stderr and "no such file or directory" in done.stderr


def test_cli_explain_sections(tmp_path: Path) -> None:
    old = '"""Doc."""\nimport re\n\nPAT = re.compile("a")\n\n\n' + BASE
    new = '"""Doc 2."""\nimport re\nimport hmac\n\nPAT = re.compile("b")\n\n\n' + FIXED
    a, b = _pair(tmp_path, old, new)
    done = _hotpatch("build", a, b, "--explain")
    assert done.returncode == 0, done.stderr
    heads = [line for line in done.stdout.splitlines() if not line.startswith("  ")]
    assert heads == ["swapped (1)", "added (2)", "rebuilt (0)", "ignored (1)", "refused (0)"]
    body = done.stdout
    assert "  demo/m.py:8: demo.m.check" in body
    assert "  demo/m.py:3: import hmac" in body
    assert "  demo/m.py:5: constant PAT" in body
    assert "  demo/m.py:1: module: docstring changed" in body


def test_cli_explain_with_refusals_exits_3(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, "import requests\n\n\n" + FIXED)
    done = _hotpatch("build", a, b, "--explain")
    assert done.returncode == 3
    assert "refused (1)" in done.stdout
    assert "  demo/m.py:1: new import of requests" in done.stdout


def test_cli_explain_and_output_writes_the_package(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    out = tmp_path / "x.hotpatch"
    done = _hotpatch("build", a, b, "--explain", "-o", str(out), "--id", "KB7")
    assert done.returncode == 0, done.stderr
    assert "swapped (1)" in done.stdout
    assert read_package(out).manifest.id == "KB7"


def test_cli_inspect_json(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    out = tmp_path / "KB9.hotpatch"
    digest = build(a, b, patch_id="KB9", cves=("CVE-2024-9",)).write(out)
    done = _hotpatch("inspect", str(out), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    package = read_package(out)
    assert document == {**package.manifest.to_json(), "sha256": digest, "size": out.stat().st_size}
    assert document["targets"][0]["modules"][0]["actions"][0]["name"] == "check"


def test_cli_inspect_table(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, BASE, FIXED)
    out = tmp_path / "KB9.hotpatch"
    build(a, b, patch_id="KB9").write(out)
    done = _hotpatch("inspect", str(out))
    assert done.returncode == 0, done.stderr
    assert "KB9" in done.stdout and "demo.m" in done.stdout and "check" in done.stdout


def test_cli_inspect_refuses_a_bad_package(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hotpatch"
    bad.write_bytes(b"not a zip")
    done = _hotpatch("inspect", str(bad), "--json")
    assert done.returncode == 1
    assert "PackageError" in done.stderr and "not a hotpatch package" in done.stderr
    assert done.stdout == ""
