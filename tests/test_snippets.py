"""Before/after snippets applied to live code on every CPython, through pre-existing references.

Each test builds a package in-process from two releases of a small distribution, then, in a
fresh interpreter, imports the baseline, takes references the way services do (bound methods,
registries, ``from m import f`` copies, wrappers, caches, closures, generators), applies the
package, checks the fix is seen through those references with identities preserved, reverts,
and checks the baseline behaviour is back.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from pyhotpatch.build import build
from support import make_release, run_python

NAME = "hpdemo"
MODULE = f"{NAME}/m.py"

PRELUDE = """\
import gc
import sys

import pyhotpatch


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return True
    return False


"""


def _release(root: Path, version: str, files: dict[str, str]) -> Path:
    return make_release(root, NAME, version, {f"{NAME}/__init__.py": "", **files})


def _package(
    tmp_path: Path, base: Path, files: dict[str, str], patch_id: str = "KB1", version: str = "1.1"
) -> Path:
    fixed = _release(tmp_path / patch_id, version, files)
    out = tmp_path / f"{patch_id}.hotpatch"
    build(str(base), str(fixed), patch_id=patch_id).write(out)
    return out


def _case(
    tmp_path: Path, old: str, new: str, extra: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """The baseline release directory and a KB1 package taking ``m.py`` from ``old`` to ``new``."""
    base = _release(tmp_path / "base", "1.0", {MODULE: old, **(extra or {})})
    return base, _package(tmp_path, base, {MODULE: new, **(extra or {})})


def _live(python: str, tmp_path: Path, path: Path, script: str, **packages: Path) -> None:
    """Run ``script`` with ``path`` importable and the package paths bound; it must end cleanly."""
    names = "".join(f"{key} = {str(value)!r}\n" for key, value in packages.items())
    code = PRELUDE + names + textwrap.dedent(script) + "\nprint('SNIPPET-OK')\n"
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    done = run_python(python, code, [path], timeout=60, env={"PYHOTPATCH_RUN_DIR": str(run_dir)})
    assert done.returncode == 0 and done.stdout.rstrip().endswith("SNIPPET-OK"), (
        f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )


# -- functions and methods -------------------------------------------------------------------


def test_plain_function_through_every_reference(python: str, tmp_path: Path) -> None:
    old = """\
        CALLS = 0
        SEEN = {}


        def check(token):
            global CALLS
            CALLS += 1
            SEEN[token] = True
            return token.startswith("sec")


        HANDLERS = {"check": check}
        """
    base, pkg = _case(tmp_path, old, old.replace('token.startswith("sec")', 'token == "secret"'))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m
        from hpdemo.m import check as alias

        held = [m.HANDLERS["check"]]
        seen = m.SEEN
        assert alias("sec") is True
        report = pyhotpatch.apply(PKG)
        assert report["id"] == "KB1" and report["functions"] == 1, report
        assert report["modules"] == ["hpdemo.m"] and not report["already_active"]
        assert alias("sec") is False and held[0]("sec") is False and m.check("secret") is True
        assert m.check is alias and m.HANDLERS["check"] is alias
        assert m.CALLS == 4 and m.SEEN is seen and sorted(seen) == ["sec", "secret"]
        assert pyhotpatch.status()["active"]["id"] == "KB1"
        pyhotpatch.revert("KB1")
        assert alias("sec") is True and held[0]("sec") is True and m.check is alias
        assert m.CALLS == 6
        assert pyhotpatch.status()["active"] is None
        """,
        PKG=pkg,
    )


def test_method_through_bound_methods_instances_and_subclasses(python: str, tmp_path: Path) -> None:
    old = textwrap.dedent("""\
        class Account:
            def __init__(self, balance):
                self.balance = balance

            def withdraw(self, amount):
                self.balance -= amount
                return self.balance


        class Savings(Account):
            pass
        """)
    new = old.replace(
        "        self.balance -= amount\n",
        "        if amount > self.balance:\n"
        "            raise ValueError('insufficient funds')\n"
        "        self.balance -= amount\n",
    )
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        account = m.Account(10)
        bound = account.withdraw
        savings = m.Savings(5)
        callbacks = {"w": savings.withdraw}
        klass = m.Account
        pyhotpatch.apply(PKG)
        assert raises(ValueError, bound, 20) and account.balance == 10
        assert raises(ValueError, callbacks["w"], 6) and bound(4) == 6
        assert type(account) is m.Account is klass and isinstance(savings, m.Account)
        pyhotpatch.revert("KB1")
        assert bound(20) == -14 and callbacks["w"](6) == -1
        """,
        PKG=pkg,
    )


def test_private_name_mangled_method(python: str, tmp_path: Path) -> None:
    old = """\
        class Door:
            def __allowed(self, key):
                return key is not None

            def open(self, key):
                return self.__allowed(key)
        """
    base, pkg = _case(tmp_path, old, old.replace("key is not None", "key == 'k3y'"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        door = m.Door()
        private = m.Door._Door__allowed
        assert door.open("x") is True
        pyhotpatch.apply(PKG)
        assert door.open("x") is False and door.open("k3y") is True
        assert m.Door._Door__allowed is private
        pyhotpatch.revert("KB1")
        assert door.open("x") is True
        """,
        PKG=pkg,
    )


def test_new_private_method(python: str, tmp_path: Path) -> None:
    old = """\
        class Door:
            def open(self, key):
                return key is not None
        """
    new = """\
        class Door:
            def __allowed(self, key):
                return key == "k3y"

            def open(self, key):
                return self.__allowed(key)
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        door = m.Door()
        pyhotpatch.apply(PKG)
        assert door.open("x") is False and door.open("k3y") is True
        pyhotpatch.revert("KB1")
        assert door.open("x") is True and not hasattr(m.Door, "_Door__allowed")
        """,
        PKG=pkg,
    )


def test_nested_class_method_with_future_annotations(python: str, tmp_path: Path) -> None:
    old = """\
        from __future__ import annotations


        class Outer:
            class Inner:
                def value(self, x: int) -> int:
                    return x
        """
    base, pkg = _case(tmp_path, old, old.replace("return x", "return -x"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        inner = m.Outer.Inner()
        pyhotpatch.apply(PKG)
        assert inner.value(2) == -2 and m.Outer.Inner.value.__annotations__ == {
            "x": "int", "return": "int"
        }
        pyhotpatch.revert("KB1")
        assert inner.value(2) == 2
        """,
        PKG=pkg,
    )


def test_staticmethod(python: str, tmp_path: Path) -> None:
    old = """\
        class Parser:
            @staticmethod
            def clean(text):
                return text.strip()
        """
    base, pkg = _case(tmp_path, old, old.replace("text.strip()", "text.strip().replace('<', '')"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        wrapper = m.Parser.__dict__["clean"]
        plain = m.Parser.clean
        via_instance = m.Parser().clean
        pyhotpatch.apply(PKG)
        assert plain(" <a> ") == "a>" and via_instance(" <b ") == "b" and m.Parser.clean("<") == ""
        assert m.Parser.__dict__["clean"] is wrapper and m.Parser.clean is plain
        pyhotpatch.revert("KB1")
        assert plain(" <a> ") == "<a>"
        """,
        PKG=pkg,
    )


def test_classmethod(python: str, tmp_path: Path) -> None:
    old = """\
        class Name:
            LIMIT = 3

            def __init__(self, text):
                self.text = text

            @classmethod
            def parse(cls, text):
                return cls(text)


        class Short(Name):
            LIMIT = 1
        """
    base, pkg = _case(
        tmp_path, old, old.replace("return cls(text)", "return cls(text[: cls.LIMIT])")
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        parse = m.Name.parse
        short = m.Short.parse
        wrapper = m.Name.__dict__["parse"]
        pyhotpatch.apply(PKG)
        assert parse("abcdef").text == "abc" and short("abcdef").text == "a"
        assert type(short("x")) is m.Short and m.Name.__dict__["parse"] is wrapper
        pyhotpatch.revert("KB1")
        assert parse("abcdef").text == "abcdef" and short("abcdef").text == "abcdef"
        """,
        PKG=pkg,
    )


def test_property_getter_and_setter(python: str, tmp_path: Path) -> None:
    old = textwrap.dedent("""\
        class Temperature:
            def __init__(self):
                self._c = 0.0

            @property
            def celsius(self):
                return self._c

            @celsius.setter
            def celsius(self, value):
                self._c = value
        """)
    new = old.replace("return self._c", "return round(self._c, 1)").replace(
        "        self._c = value",
        "        if value < -273.15:\n"
        "            raise ValueError('below absolute zero')\n"
        "        self._c = value",
    )
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        t = m.Temperature()
        prop = m.Temperature.__dict__["celsius"]
        getter, setter = prop.fget, prop.fset
        report = pyhotpatch.apply(PKG)
        assert report["functions"] == 2, report
        t.celsius = 1.26
        assert t.celsius == 1.3 and getter(t) == 1.3
        assert raises(ValueError, setattr, t, "celsius", -300) and t._c == 1.26
        assert m.Temperature.__dict__["celsius"] is prop and prop.fset is setter
        pyhotpatch.revert("KB1")
        t.celsius = -300
        assert t.celsius == -300
        """,
        PKG=pkg,
    )


def test_closures_made_before_the_patch(python: str, tmp_path: Path) -> None:
    old = """\
        def make_validator(limit):
            def validate(value):
                return len(value) <= limit

            return validate


        SHORT = make_validator(3)
        """
    base, pkg = _case(
        tmp_path, old, old.replace("return len(value) <= limit", "return 0 < len(value) <= limit")
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        five = m.make_validator(5)
        rules = [m.SHORT, five]
        assert five("") is True
        pyhotpatch.apply(PKG)
        assert five("") is False and five("abcde") is True and five("abcdef") is False
        assert rules[0]("") is False and rules[0]("abc") is True
        assert m.make_validator(2)("") is False
        assert five.__closure__[0].cell_contents == 5
        pyhotpatch.revert("KB1")
        assert five("") is True and m.SHORT("") is True and m.make_validator(2)("") is True
        """,
        PKG=pkg,
    )


def test_functools_wraps_chain(python: str, tmp_path: Path) -> None:
    old = """\
        import functools

        LOG = []


        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                LOG.append(fn.__name__)
                return fn(*args, **kwargs)

            return wrapper


        def timed(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)

            return wrapper


        @logged
        @timed
        def render(name):
            return "<b>" + name + "</b>"
        """
    base, pkg = _case(
        tmp_path, old, old.replace('"<b>" + name', '"<b>" + name.replace("<", "&lt;")')
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        outer = m.render
        inner = outer.__wrapped__
        routes = {"/": outer}
        pyhotpatch.apply(PKG)
        assert routes["/"]("<i>") == "<b>&lt;i></b>" and inner("<") == "<b>&lt;</b>"
        assert m.render is outer and outer.__wrapped__ is inner and m.LOG == ["render"]
        pyhotpatch.revert("KB1")
        assert outer("<i>") == "<b><i></b>"
        """,
        PKG=pkg,
    )


def test_decorator_without_wraps(python: str, tmp_path: Path) -> None:
    old = """\
        def guarded(fn):
            def inner(*args):
                return fn(*args)

            return inner


        @guarded
        def handle(x):
            return x * 2
        """
    base, pkg = _case(tmp_path, old, old.replace("return x * 2", "return x * 3"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        handler = m.handle
        assert not hasattr(handler, "__wrapped__") and handler(2) == 4
        report = pyhotpatch.apply(PKG)
        assert report["functions"] == 1, report
        assert handler(2) == 6 and m.handle is handler
        pyhotpatch.revert("KB1")
        assert handler(2) == 4
        """,
        PKG=pkg,
    )


def test_lru_cache_is_cleared_and_recomputed(python: str, tmp_path: Path) -> None:
    old = """\
        import functools


        @functools.lru_cache(maxsize=None)
        def is_allowed(user):
            return user != "mallory"
        """
    base, pkg = _case(
        tmp_path, old, old.replace('user != "mallory"', 'user not in ("mallory", "eve")')
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        cached = m.is_allowed
        assert cached("eve") is True and cached.cache_info().currsize == 1
        report = pyhotpatch.apply(PKG)
        assert report["caches_cleared"] == 1, report
        assert cached.cache_info().currsize == 0
        assert cached("eve") is False and m.is_allowed is cached
        pyhotpatch.revert("KB1")
        assert cached("eve") is True
        """,
        PKG=pkg,
    )


def test_changed_default_values(python: str, tmp_path: Path) -> None:
    old = """\
        def fetch(url, timeout=None, *, verify=False):
            return (url, timeout, verify)
        """
    base, pkg = _case(
        tmp_path, old, old.replace("timeout=None, *, verify=False", "timeout=10, *, verify=True")
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m
        from hpdemo.m import fetch

        pyhotpatch.apply(PKG)
        assert fetch("u") == ("u", 10, True) and fetch("u", 5, verify=False) == ("u", 5, False)
        assert fetch.__defaults__ == (10,) and fetch.__kwdefaults__ == {"verify": True}
        pyhotpatch.revert("KB1")
        assert fetch("u") == ("u", None, False)
        """,
        PKG=pkg,
    )


# -- additions -------------------------------------------------------------------------------


def test_new_function_called_by_a_changed_function(python: str, tmp_path: Path) -> None:
    old = """\
        def sanitize(text):
            return text
        """
    new = """\
        def _escape(text):
            return text.replace("<", "&lt;")


        def sanitize(text):
            return _escape(text)
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m
        from hpdemo.m import sanitize

        report = pyhotpatch.apply(PKG)
        assert report["definitions"] == 1 and report["functions"] == 1, report
        assert sanitize("<") == "&lt;" and m._escape("<x") == "&lt;x"
        pyhotpatch.revert("KB1")
        assert sanitize("<") == "<" and not hasattr(m, "_escape")
        """,
        PKG=pkg,
    )


def test_new_method(python: str, tmp_path: Path) -> None:
    old = """\
        class Session:
            def __init__(self, token):
                self.token = token

            def check(self):
                return bool(self.token)
        """
    new = """\
        class Session:
            def __init__(self, token):
                self.token = token

            def _strong(self):
                return len(self.token) >= 8

            def check(self):
                return self._strong()
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        session = m.Session("abc")
        check = session.check
        pyhotpatch.apply(PKG)
        assert check() is False and m.Session("abcdefgh").check() is True
        assert session._strong() is False
        pyhotpatch.revert("KB1")
        assert check() is True and not hasattr(m.Session, "_strong")
        """,
        PKG=pkg,
    )


def test_new_module_constant_used_by_changed_code(python: str, tmp_path: Path) -> None:
    old = """\
        def truncate(text):
            return text[:100]
        """
    new = """\
        MAX_LEN = 4


        def truncate(text):
            return text[:MAX_LEN]
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        cut = m.truncate
        pyhotpatch.apply(PKG)
        assert m.MAX_LEN == 4 and cut("abcdefgh") == "abcd"
        pyhotpatch.revert("KB1")
        assert not hasattr(m, "MAX_LEN") and cut("abcdefgh") == "abcdefgh"
        """,
        PKG=pkg,
    )


def test_new_stdlib_import_used_by_changed_function(python: str, tmp_path: Path) -> None:
    old = """\
        def same(a, b):
            return a == b
        """
    new = """\
        import hmac


        def same(a, b):
            return hmac.compare_digest(a, b)
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hmac
        import hpdemo.m as m

        same = m.same
        assert same(1, 1) is True
        pyhotpatch.apply(PKG)
        assert m.hmac is hmac and same("a", "a") is True and same("a", "b") is False
        assert raises(TypeError, same, 1, 1)  # compare_digest runs now
        pyhotpatch.revert("KB1")
        assert not hasattr(m, "hmac") and same(1, 1) is True
        """,
        PKG=pkg,
    )


# -- constants and objects built at import ---------------------------------------------------


def test_changed_constants_and_their_aliases(python: str, tmp_path: Path) -> None:
    old = """\
        import re

        PATTERN = re.compile(r"^[a-z]+$")
        MAX = 10


        def valid(name):
            return bool(PATTERN.match(name)) and len(name) <= MAX
        """
    new = old.replace("[a-z]+$", "[a-z]{1,5}$").replace("MAX = 10", "MAX = 5")
    other = """\
        from hpdemo.m import MAX, PATTERN


        def ok(name):
            return bool(PATTERN.match(name)) and len(name) <= MAX
        """
    base, pkg = _case(tmp_path, old, new, {f"{NAME}/other.py": other})
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m
        import hpdemo.other as other

        before = m.PATTERN
        assert other.ok("abcdefg") is True
        pyhotpatch.apply(PKG)
        assert m.PATTERN is other.PATTERN and m.PATTERN is not before
        assert m.PATTERN.pattern == "^[a-z]{1,5}$" and other.MAX == m.MAX == 5
        assert other.ok("abcdefg") is False and m.valid("abcdefg") is False and other.ok("abc")
        pyhotpatch.revert("KB1")
        assert m.PATTERN is before and other.PATTERN is before and other.MAX == m.MAX == 10
        assert other.ok("abcdefg") is True
        """,
        PKG=pkg,
    )


def test_changed_class_constant(python: str, tmp_path: Path) -> None:
    old = """\
        class Limits:
            MAX_BODY = 1000

            def allowed(self, size):
                return size <= self.MAX_BODY


        class Strict(Limits):
            pass
        """
    base, pkg = _case(tmp_path, old, old.replace("MAX_BODY = 1000", "MAX_BODY = 10"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        limits, strict = m.Limits(), m.Strict()
        allowed = limits.allowed
        pyhotpatch.apply(PKG)
        assert allowed(100) is False and strict.allowed(100) is False and m.Strict.MAX_BODY == 10
        assert type(limits) is m.Limits
        pyhotpatch.revert("KB1")
        assert allowed(100) is True and m.Limits.MAX_BODY == 1000
        """,
        PKG=pkg,
    )


def test_objects_built_at_import_are_rebuilt(python: str, tmp_path: Path) -> None:
    old = """\
        class Policy:
            SCALE = 2

            def __init__(self, n=1):
                self.limit = n * self.SCALE


        Policy.DEFAULT = Policy(3)
        DEFAULT = Policy()
        """
    base, pkg = _case(tmp_path, old, old.replace("SCALE = 2", "SCALE = 3"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        module_default, class_default = m.DEFAULT, m.Policy.DEFAULT
        report = pyhotpatch.apply(PKG)
        assert report["rebuilt"] == 2, report
        assert m.Policy.DEFAULT.limit == 9 and m.DEFAULT.limit == 3
        assert type(m.DEFAULT) is m.Policy and type(m.Policy.DEFAULT) is m.Policy
        assert m.DEFAULT is not module_default and module_default.limit == 2
        pyhotpatch.revert("KB1")
        assert m.DEFAULT is module_default and m.Policy.DEFAULT is class_default
        assert m.Policy.SCALE == 2
        """,
        PKG=pkg,
    )


def test_new_mixin_base(python: str, tmp_path: Path) -> None:
    old = """\
        class Base:
            def hello(self):
                return "base"


        class Handler(Base):
            def handle(self, token):
                return self.hello()
        """
    new = """\
        class Base:
            def hello(self):
                return "base"


        class CsrfMixin:
            def csrf_ok(self, token):
                return token == "t0k"


        class Handler(Base, CsrfMixin):
            def handle(self, token):
                return self.hello() if self.csrf_ok(token) else "forbidden"
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        handler = m.Handler()
        handle = handler.handle
        klass = m.Handler
        pyhotpatch.apply(PKG)
        assert handle("bad") == "forbidden" and handle("t0k") == "base"
        assert isinstance(handler, m.CsrfMixin) and type(handler) is m.Handler is klass
        assert m.Handler.__bases__ == (m.Base, m.CsrfMixin)
        pyhotpatch.revert("KB1")
        assert m.Handler.__bases__ == (m.Base,) and handle("bad") == "base"
        assert not hasattr(handler, "csrf_ok") and not hasattr(m, "CsrfMixin")
        """,
        PKG=pkg,
    )


def test_changed_constant_used_as_a_default_value(python: str, tmp_path: Path) -> None:
    """A default evaluated from a changed constant must follow it, as a fresh import would."""
    old = """\
        TIMEOUT = 60


        def fetch(url, timeout=TIMEOUT):
            return (url, timeout)


        class Client:
            RETRIES = 5

            def get(self, url, retries=RETRIES):
                return (url, retries)
        """
    new = old.replace("TIMEOUT = 60", "TIMEOUT = 5").replace("RETRIES = 5", "RETRIES = 1")
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        pyhotpatch.apply(PKG)
        assert m.TIMEOUT == 5 and m.Client.RETRIES == 1
        assert m.fetch("u") == ("u", 5), m.fetch("u")
        assert m.Client().get("u") == ("u", 1), m.Client().get("u")
        pyhotpatch.revert("KB1")
        assert m.fetch("u") == ("u", 60) and m.Client().get("u") == ("u", 5)
        """,
        PKG=pkg,
    )


def test_coroutine_body(python: str, tmp_path: Path) -> None:
    old = """\
        async def authorize(user):
            return user is not None
        """
    base, pkg = _case(tmp_path, old, old.replace("user is not None", "user not in (None, '')"))
    _live(
        python,
        tmp_path,
        base,
        """
        import asyncio

        import hpdemo.m as m

        routes = {"auth": m.authorize}
        assert asyncio.run(routes["auth"]("")) is True
        pyhotpatch.apply(PKG)
        assert asyncio.run(routes["auth"]("")) is False and asyncio.run(m.authorize("u")) is True
        pyhotpatch.revert("KB1")
        assert asyncio.run(routes["auth"]("")) is True
        """,
        PKG=pkg,
    )


# -- generators, lifecycle, baselines --------------------------------------------------------


def test_generator_started_before_the_patch_finishes_on_old_code(
    python: str, tmp_path: Path
) -> None:
    old = """\
        def numbers():
            yield 1
            yield 2
        """
    base, pkg = _case(
        tmp_path, old, old.replace("yield 1", "yield 10").replace("yield 2", "yield 20")
    )
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        running = m.numbers()
        assert next(running) == 1
        pyhotpatch.apply(PKG)
        assert list(m.numbers()) == [10, 20]
        transition = pyhotpatch.status()["transition"]
        assert transition["complete"] is False and transition["suspended"] == 1, transition
        assert next(running) == 2
        del running
        gc.collect()
        assert pyhotpatch.status()["transition"]["complete"] is True
        pyhotpatch.revert("KB1")
        assert list(m.numbers()) == [1, 2]
        """,
        PKG=pkg,
    )


def test_cumulative_package_replaces_the_active_one(python: str, tmp_path: Path) -> None:
    old = """\
        def f():
            return 1


        def g():
            return 1
        """
    first = """\
        def _helper():
            return 2


        def f():
            return 2


        def g():
            return _helper()
        """
    second = """\
        def f():
            return 3


        def g():
            return 1
        """
    base = _release(tmp_path / "base", "1.0", {MODULE: old})
    kb1 = _package(tmp_path, base, {MODULE: first}, "KB1", "1.1")
    kb2 = _package(tmp_path, base, {MODULE: second}, "KB2", "1.2")
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m
        from hpdemo.m import f, g

        pyhotpatch.apply(KB1)
        assert (f(), g(), m._helper()) == (2, 2, 2)
        report = pyhotpatch.apply(KB2)
        assert report["replaced"] == "KB1" and report["id"] == "KB2", report
        assert (f(), g()) == (3, 1) and not hasattr(m, "_helper")
        assert m.f is f and m.g is g
        assert pyhotpatch.status()["active"]["id"] == "KB2"
        assert raises(pyhotpatch.NotActive, pyhotpatch.revert, "KB1")
        pyhotpatch.revert("KB2")
        assert (f(), g()) == (1, 1) and pyhotpatch.status()["active"] is None
        pyhotpatch.apply(KB2)
        pyhotpatch.apply(KB1)
        assert (f(), g(), m._helper()) == (2, 2, 2)
        pyhotpatch.revert("KB1")
        assert (f(), g()) == (1, 1) and not hasattr(m, "_helper")
        """,
        KB1=kb1,
        KB2=kb2,
    )


def test_reapplying_is_idempotent(python: str, tmp_path: Path) -> None:
    old = """\
        def f():
            return 1
        """
    base, pkg = _case(tmp_path, old, old.replace("return 1", "return 2"))
    _live(
        python,
        tmp_path,
        base,
        """
        import hpdemo.m as m

        first = pyhotpatch.apply(PKG)
        code = m.f.__code__
        again = pyhotpatch.apply(open(PKG, "rb").read())
        assert again["already_active"] is True and again["id"] == "KB1", again
        assert m.f() == 2 and m.f.__code__ is code
        pyhotpatch.revert("KB1")
        assert m.f() == 1
        assert raises(pyhotpatch.NotActive, pyhotpatch.revert, "KB1")
        assert pyhotpatch.apply(PKG)["functions"] == 1 and m.f() == 2
        """,
        PKG=pkg,
    )


def test_already_fixed_code_is_left_alone(python: str, tmp_path: Path) -> None:
    old = """\
        def f():
            return 1
        """
    _, pkg = _case(tmp_path, old, old.replace("return 1", "return 2"))
    fixed = tmp_path / "KB1" / f"{NAME}-1.1"  # the fixed release, running as is
    _live(
        python,
        tmp_path,
        fixed,
        """
        import hpdemo.m as m

        code = m.f.__code__
        report = pyhotpatch.apply(PKG)
        assert report["functions"] == 0 and report["already_patched"] == 1, report
        assert m.f() == 2 and m.f.__code__ is code
        """,
        PKG=pkg,
    )


def test_baseline_mismatch_changes_nothing(python: str, tmp_path: Path) -> None:
    m_old = """\
        LIMIT = 1


        class Box:
            SIZE = 1

            def size(self):
                return self.SIZE


        def a():
            return "a1"
        """
    m_new = """\
        LIMIT = 2


        def _helper():
            return "a2"


        class Box:
            SIZE = 2

            def size(self):
                return self.SIZE * 10


        def a():
            return _helper()
        """
    n_old = """\
        def y():
            return "y1"


        def z():
            return "z1"
        """
    n_new = n_old.replace('"y1"', '"y2"').replace('"z1"', '"z2"')
    n_path = f"{NAME}/n.py"
    base = _release(tmp_path / "base", "1.0", {MODULE: m_old, n_path: n_old})
    pkg = _package(tmp_path, base, {MODULE: m_new, n_path: n_new})
    local = _release(
        tmp_path / "local", "1.0", {MODULE: m_old, n_path: n_old.replace('"z1"', '"z-local"')}
    )
    _live(
        python,
        tmp_path,
        local,
        """
        import hpdemo.m as m
        import hpdemo.n as n

        functions = (m.a, m.Box.size, n.y, n.z)
        codes = [f.__code__ for f in functions]
        names = (dict(vars(m)), dict(vars(m.Box)), dict(vars(n)))
        try:
            pyhotpatch.apply(PKG)
        except pyhotpatch.BaselineMismatch as exc:
            assert "hpdemo.n.z" in str(exc), exc
        else:
            raise AssertionError("applied to a process that is not at the baseline")
        assert (m.a(), m.Box().size(), n.y(), n.z()) == ("a1", 1, "y1", "z-local")
        assert [f.__code__ for f in functions] == codes
        assert (dict(vars(m)), dict(vars(m.Box)), dict(vars(n))) == names
        assert not hasattr(m, "_helper") and m.LIMIT == 1
        assert pyhotpatch.status()["active"] is None
        """,
        PKG=pkg,
    )


def test_distribution_not_present(python: str, tmp_path: Path) -> None:
    old = """\
        def f():
            return 1
        """
    base, pkg = _case(tmp_path, old, old.replace("return 1", "return 2"))
    other = tmp_path / "site-other"
    (other / f"{NAME}-0.9.dist-info").mkdir(parents=True)
    (other / f"{NAME}-0.9.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {NAME}\nVersion: 0.9\n"
    )
    _live(
        python,
        tmp_path,
        base,
        """
        try:
            pyhotpatch.apply(PKG)
        except pyhotpatch.BaselineMismatch as exc:
            assert "hpdemo is not installed" in str(exc), exc
        else:
            raise AssertionError("applied a package for a distribution this process lacks")
        assert "hpdemo.m" not in sys.modules and pyhotpatch.status()["active"] is None
        """,
        PKG=pkg,
    )
    _live(
        python,
        tmp_path,
        other,
        """
        try:
            pyhotpatch.apply(PKG)
        except pyhotpatch.BaselineMismatch as exc:
            assert "hpdemo 0.9 is installed here" in str(exc), exc
        else:
            raise AssertionError("applied a package for another version of the distribution")
        """,
        PKG=pkg,
    )


def test_module_imported_after_apply_is_patched_on_import(python: str, tmp_path: Path) -> None:
    old = """\
        def f():
            return 1
        """
    base, pkg = _case(tmp_path, old, old.replace("return 1", "return 2"))
    info = base / f"{NAME}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {NAME}\nVersion: 1.0\n")
    _live(
        python,
        tmp_path,
        base,
        """
        pyhotpatch.enable(control=False)
        report = pyhotpatch.apply(PKG)
        assert report["pending_modules"] == ["hpdemo.m"] and report["functions"] == 0, report
        assert "hpdemo.m" not in sys.modules
        from hpdemo.m import f

        assert f() == 2
        active = pyhotpatch.status()["active"]
        assert active["pending_modules"] == [] and active["functions"] == 1, active
        assert active["errors"] == []
        pyhotpatch.revert("KB1")
        assert f() == 1
        """,
        PKG=pkg,
    )


# -- shapes seen in real releases outside the corpus ------------------------------------------


def test_new_method_decorated_with_a_newly_imported_name(python: str, tmp_path: Path) -> None:
    # Django 5.0.7 adds ``from ... import cached_property`` and a method decorated with it: the
    # class body must see names the package imports at module level before they are bound.
    old = """\
        class Urlizer:
            def split(self, text):
                return text.split()
        """
    new = """\
        from functools import cached_property


        class Urlizer:
            @cached_property
            def openings(self):
                return "([{"

            def split(self, text):
                return [w.strip(self.openings) for w in text.split()]
        """
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        from hpdemo import m
        u = m.Urlizer()
        assert u.split("(a [b") == ["(a", "[b"]
        pyhotpatch.apply(pkg)
        assert u.split("(a [b") == ["a", "b"]
        assert m.cached_property is __import__("functools").cached_property
        pyhotpatch.revert("KB1")
        assert u.split("(a [b") == ["(a", "[b"] and not hasattr(m, "cached_property")
        """,
        pkg=pkg,
    )


def test_method_replaced_at_import_is_left_alone(tmp_path: Path) -> None:
    # jinja2 replaces ``NodeType.__new__`` right after the class: the baseline code of that
    # method never runs, so a change to it is noise, not a mismatch at apply time.
    old = """\
        class Meta(type):
            def __new__(mcs, name, bases, d):
                return type.__new__(mcs, name, bases, d)


        def _refuse(*args, **kwargs):
            raise TypeError("no")


        Meta.__new__ = staticmethod(_refuse)
        """
    old = textwrap.dedent(old)
    new = old.replace("type.__new__(mcs, name, bases, d)", "type.__new__(mcs, name, bases, {**d})")
    new += "\n\ndef fixed():\n    return 1\n"
    _, pkg = _case(tmp_path, old, new)
    from pyhotpatch.package import read_package

    actions = [a for t in read_package(pkg).manifest.targets for m in t.modules for a in m.actions]
    assert [(a.kind, a.qualname) for a in actions] == [("define", "fixed")]


def test_record_annotation_change_is_noise(tmp_path: Path) -> None:
    from pyhotpatch.build import explain

    old = "import typing\n\n\nclass Pair(typing.NamedTuple):\n    left: int\n    right: int = 0\n"
    new = old.replace("left: int", "left: typing.Any")
    base = _release(tmp_path / "a", "1.0", {MODULE: old})
    fixed = _release(tmp_path / "b", "1.1", {MODULE: new})
    report = explain(str(base), str(fixed))
    assert report.refused == [] and report.swapped == [] and report.added == []


def test_definitions_under_an_unchanged_condition(python: str, tmp_path: Path) -> None:
    # PyJWT 2.4.0 fixes classes defined under ``if has_crypto:``; the branch that ran at import
    # is the one the condition still selects, and only its definitions are patched.
    old = """\
        import sys

        HAVE_IT = True

        if HAVE_IT:
            class Algo:
                def check(self, key):
                    return key.startswith("-----BEGIN")
        else:
            class Algo:
                def check(self, key):
                    return False

        if not HAVE_IT:
            def helper():
                return "unused"
        """
    new = (
        textwrap.dedent(old)
        .replace(
            'return key.startswith("-----BEGIN")', 'return key.startswith(("-----BEGIN", "ssh-"))'
        )
        .replace('return "unused"', 'return "still unused"')
    )
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        from hpdemo import m
        algo = m.Algo()
        assert algo.check("ssh-ed25519 AAAA") is False
        report = pyhotpatch.apply(pkg)
        assert report["functions"] == 1, report
        assert algo.check("ssh-ed25519 AAAA") is True and not hasattr(m, "helper")
        pyhotpatch.revert("KB1")
        assert algo.check("ssh-ed25519 AAAA") is False
        """,
        pkg=pkg,
    )


def test_fix_imports_a_helper_the_package_adds_to_another_module(
    python: str, tmp_path: Path
) -> None:
    # PyJWT 2.4.0 adds ``is_pem_format`` to jwt/utils.py and imports it in jwt/algorithms.py:
    # the import must find the helper before the package has bound anything.
    old = {
        f"{NAME}/a_uses.py": "from .z_utils import clean\n\n\ndef check(key):\n    return clean(key)\n",
        f"{NAME}/z_utils.py": "def clean(key):\n    return key.strip()\n",
    }
    new = {
        f"{NAME}/a_uses.py": (
            "from .z_utils import clean, is_pem\n\n\n"
            "def check(key):\n    return None if is_pem(key) else clean(key)\n"
        ),
        f"{NAME}/z_utils.py": (
            "def clean(key):\n    return key.strip()\n\n\n"
            "def is_pem(key):\n    return key.startswith('-----BEGIN')\n"
        ),
    }
    base = _release(tmp_path / "base", "1.0", old)
    pkg = _package(tmp_path, base, new)
    _live(
        python,
        tmp_path,
        base,
        """
        from hpdemo import a_uses
        assert a_uses.check("-----BEGIN KEY ") == "-----BEGIN KEY"
        pyhotpatch.apply(pkg)
        assert a_uses.check("-----BEGIN KEY ") is None and a_uses.check(" k ") == "k"
        pyhotpatch.revert("KB1")
        assert a_uses.check("-----BEGIN KEY ") == "-----BEGIN KEY"
        """,
        pkg=pkg,
    )


def test_constant_built_in_steps_is_rebuilt_in_order(python: str, tmp_path: Path) -> None:
    # sqlparse builds SQL_REGEX as a list of patterns, then compiles it in a second step
    old = """\
        import re

        RULES = [r"a+", r"b"]
        RULES = [re.compile(p).fullmatch for p in RULES]


        def classify(word):
            return [bool(m(word)) for m in RULES]
        """
    new = textwrap.dedent(old).replace('r"a+"', 'r"a{1,3}"')
    base, pkg = _case(tmp_path, old, new)
    _live(
        python,
        tmp_path,
        base,
        """
        from hpdemo import m
        assert m.classify("aaaa") == [True, False]
        report = pyhotpatch.apply(pkg)
        assert report["rebuilt"] == 2, report
        assert m.classify("aaaa") == [False, False] and m.classify("aa") == [True, False]
        pyhotpatch.revert("KB1")
        assert m.classify("aaaa") == [True, False]
        """,
        pkg=pkg,
    )
