"""The ``.hotpatch`` format: round trip, determinism, and refusal of every malformed package."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhotpatch.build import build
from pyhotpatch.errors import PackageError
from pyhotpatch.package import (
    FORMAT,
    Action,
    Limits,
    Manifest,
    ModulePatch,
    Package,
    SourceRef,
    Target,
    dumps_manifest,
    package_bytes,
    read_package,
    source_digest,
    write_package,
)
from support import make_release

OLD_M = """\
import re

PATTERN = re.compile("a+")


class Base:
    pass


class C(Base):
    SCALE = 2

    def __init__(self, n=1):
        self.v = n * self.SCALE


C.DEFAULT = C(3)
DEFAULT = C()


def f(x, limit=10):
    return x + 1
"""

NEW_M = """\
import re
import hmac

PATTERN = re.compile("b+")


class Base:
    pass


class Mixin:
    def extra(self):
        return 1


class C(Base, Mixin):
    SCALE = 3

    def __init__(self, n=1):
        self.v = n * self.SCALE


C.DEFAULT = C(3)
DEFAULT = C()


def helper(x):
    return hmac.compare_digest(x, x)


def f(x, limit=5):
    return helper(x) + 2
"""

OTHER = "from demo.m import PATTERN, DEFAULT\n"


def _releases(root: Path) -> tuple[Path, Path]:
    old = make_release(
        root / "old",
        "demo",
        "1.0",
        {"demo/__init__.py": "", "demo/m.py": OLD_M, "demo/other.py": OTHER},
    )
    new = make_release(
        root / "new",
        "demo",
        "1.1",
        {"demo/__init__.py": "", "demo/m.py": NEW_M, "demo/other.py": OTHER},
    )
    return old, new


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A package using every action kind (function, define, rebuild, bases) and every field."""
    old, new = _releases(tmp_path_factory.mktemp("releases"))
    return build(str(old), str(new), patch_id="KB1", cves=("CVE-2024-1234",)).to_bytes()


# -- helpers ---------------------------------------------------------------------------------


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _zip(members: list[tuple[str, bytes]], compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), blob, compress)
    return buf.getvalue()


def _manifest(data: bytes) -> dict[str, Any]:
    return dict(json.loads(dict(_members(data))["manifest.json"]))


def _with_manifest(data: bytes, manifest: object) -> bytes:
    return _with(data, "manifest.json", manifest)


def _sources(data: bytes) -> list[Any]:
    return list(json.loads(dict(_members(data))["sources.json"]))


def _with(data: bytes, member: str, document: object) -> bytes:
    """``data`` with one member's JSON replaced."""
    return _zip(
        [
            (name, json.dumps(document).encode() if name == member else blob)
            for name, blob in _members(data)
        ]
    )


def _refused(data: bytes, match: str | None, limits: Limits | None = None) -> PackageError:
    with pytest.raises(PackageError, match=match) as info:
        if limits is None:
            read_package(data)
        else:
            read_package(data, limits)
    return info.value


# -- round trip and determinism --------------------------------------------------------------


def test_round_trip_keeps_manifest_and_sources(valid: bytes) -> None:
    package = read_package(valid)
    assert package.digest == hashlib.sha256(valid).hexdigest()
    assert package.size == len(valid)
    assert package.manifest.id == "KB1"
    assert package.manifest.cves == ("CVE-2024-1234",)
    kinds = {a.kind for t in package.manifest.targets for m in t.modules for a in m.actions}
    assert kinds == {"function", "define", "rebuild", "bases"}
    assert set(package.sources) == package.manifest.source_digests()
    for digest, text in package.sources.items():
        assert source_digest(text) == digest
    assert package_bytes(package.manifest, package.sources) == valid
    assert Manifest.from_json(package.manifest.to_json()) == package.manifest


def test_write_is_atomic_and_returns_sha256(valid: bytes, tmp_path: Path) -> None:
    package = read_package(valid)
    target = tmp_path / "KB1.hotpatch"
    digest = write_package(target, package.manifest, package.sources)
    assert digest == hashlib.sha256(valid).hexdigest()
    assert target.read_bytes() == valid
    assert read_package(target) == package
    assert [p.name for p in tmp_path.iterdir()] == ["KB1.hotpatch"]  # no temp file left behind


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = _releases(tmp_path / "one")
    second = _releases(tmp_path / "two")  # other directories, other mtimes
    a = build(str(first[0]), str(first[1]))
    b = build(str(second[0]), str(second[1]))
    assert a.manifest.id == b.manifest.id  # a derived id is derived from the content
    assert a.to_bytes() == b.to_bytes() == a.to_bytes()
    out1, out2 = tmp_path / "a.hotpatch", tmp_path / "b.hotpatch"
    assert a.write(out1) == b.write(out2)
    assert out1.read_bytes() == out2.read_bytes()


def test_layout_is_canonical(valid: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(valid)) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == ["manifest.json", "sources.json"]
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    package = read_package(valid)
    assert dict(_members(valid))["manifest.json"] == dumps_manifest(package.manifest)
    assert dumps_manifest(package.manifest).endswith(b"\n")
    pairs = _sources(valid)
    assert [d for d, _ in pairs] == package.manifest.source_order()
    assert all(source_digest(text) == d for d, text in pairs)


def test_writer_refuses_sources_that_do_not_match_the_manifest(valid: bytes) -> None:
    package = read_package(valid)
    missing = dict(package.sources)
    missing.popitem()
    with pytest.raises(PackageError, match="sources do not match"):
        package_bytes(package.manifest, missing)
    with pytest.raises(PackageError, match="sources do not match"):
        package_bytes(package.manifest, {**package.sources, source_digest("x"): "x"})


# -- not a package, truncated, oversized ----------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello", b"PK\x03\x04garbage", b"\x00" * 100])
def test_not_a_zip(data: bytes) -> None:
    _refused(data, "not a hotpatch package")


@pytest.mark.parametrize("cut", [1, 4, 30, 0.25, 0.5, 0.9, -22, -1])
def test_truncated_file(valid: bytes, cut: float) -> None:
    end = int(len(valid) * cut) if isinstance(cut, float) else cut
    _refused(valid[:end], "not a hotpatch package|is corrupt")


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="cannot read package"):
        read_package(str(tmp_path / "absent.hotpatch"))
    with pytest.raises(PackageError, match="cannot read package"):
        read_package(tmp_path)


def test_oversized_file(valid: bytes, tmp_path: Path) -> None:
    limits = Limits(max_file_bytes=len(valid) - 1)
    _refused(valid, f"larger than {len(valid) - 1} bytes", limits)
    path = tmp_path / "big.hotpatch"
    path.write_bytes(valid)
    with pytest.raises(PackageError, match="larger than"):
        read_package(path, limits)
    assert read_package(path, Limits(max_file_bytes=len(valid))).size == len(valid)


def test_oversized_member(valid: bytes) -> None:
    biggest = max(len(blob) for _, blob in _members(valid))
    _refused(valid, "manifest.json is larger than", Limits(max_entry_bytes=biggest - 1))


def test_oversized_total(valid: bytes) -> None:
    total = sum(len(blob) for _, blob in _members(valid))
    _refused(valid, f"unpacks to more than {total - 1} bytes", Limits(max_total_bytes=total - 1))
    assert read_package(valid, Limits(max_total_bytes=total)).size == len(valid)


def test_too_many_members(valid: bytes) -> None:
    count = len(_members(valid))
    _refused(valid, f"more than {count - 1} members", Limits(max_entries=count - 1))


def test_zip_bomb_ratio(valid: bytes) -> None:
    manifest = dict(_members(valid))["manifest.json"]
    padded = manifest + b" " * 2_000_000  # still valid JSON, compresses about 1000:1
    bomb = _zip([("manifest.json", padded), *_members(valid)[1:]])
    _refused(bomb, "implausible compression ratio")


def test_member_lying_about_its_size(valid: bytes) -> None:
    """A central directory that understates a member's size cannot smuggle more data in."""
    members = _members(valid)
    name, blob = members[0]
    data = bytearray(_zip([(name, blob + b" " * 50_000), *members[1:]]))
    offset = data.find(b"PK\x01\x02")  # first central directory entry: manifest.json
    struct.pack_into("<I", data, offset + 24, len(blob))  # uncompressed size field
    _refused(bytes(data), "is corrupt|wrong size")


# -- members ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "extra.txt",
        "sources/" + "a" * 64 + ".py",
        "manifest.json/",
        "Manifest.json",
        "sources.json.bak",
        "signature.sig",
    ],
)
def test_unknown_member(valid: bytes, name: str) -> None:
    _refused(_zip([*_members(valid), (name, b"{}")]), "unexpected member")


@pytest.mark.parametrize(
    "name",
    ["../manifest.json", "/manifest.json", "./sources.json", "x/../manifest.json", "..\\evil.py"],
)
def test_path_traversal_names(valid: bytes, name: str) -> None:
    _refused(_zip([*_members(valid), (name, b"{}")]), "unexpected member")


def test_duplicate_members(valid: bytes) -> None:
    members = _members(valid)
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = _zip([*members, members[-1]])
    _refused(data, "duplicate members")


def test_missing_manifest(valid: bytes) -> None:
    _refused(_zip(_members(valid)[1:]), "no manifest.json")


def test_missing_sources(valid: bytes) -> None:
    _refused(_zip(_members(valid)[:1]), "no sources.json")


def test_encrypted_member(valid: bytes) -> None:
    data = bytearray(valid)
    offset = data.find(b"PK\x01\x02")
    flags = struct.unpack_from("<H", data, offset + 8)[0]
    struct.pack_into("<H", data, offset + 8, flags | 0x1)
    _refused(bytes(data), "encrypted")


def test_unsupported_compression(valid: bytes) -> None:
    _refused(_zip(_members(valid), zipfile.ZIP_BZIP2), "unsupported compression")


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [
        (6, "<H", 64),  # "version needed to extract" beyond what zipfile supports
        (8, "<H", 1 << 5),  # flag bit 5: compressed patched data
        (8, "<H", 1 << 6),  # flag bit 6: strong encryption
    ],
    ids=["version-needed", "patched-data", "strong-encryption"],
)
def test_unsupported_zip_features(valid: bytes, offset: int, fmt: str, value: int) -> None:
    """Zip features the reader cannot handle are a PackageError, not a stray exception."""
    data = bytearray(valid)
    entry = data.find(b"PK\x01\x02")  # the central directory entry of manifest.json
    current = struct.unpack_from(fmt, data, entry + offset)[0]
    struct.pack_into(fmt, data, entry + offset, current | value)
    with pytest.raises(PackageError):
        read_package(bytes(data))


def test_stored_members_are_accepted(valid: bytes) -> None:
    package = read_package(_zip(_members(valid), zipfile.ZIP_STORED))
    assert package.manifest == read_package(valid).manifest


# -- the manifest ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "manifest must be a JSON object"),
        (b"null", "manifest must be a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"format": NaN}', "manifest.format must be a string"),
    ],
)
def test_bad_json(valid: bytes, text: bytes, match: str) -> None:
    data = _zip([("manifest.json", text), *_members(valid)[1:]])
    _refused(data, match, Limits(max_ratio=100_000))  # the deep nesting compresses very well


def test_unsupported_format_version(valid: bytes) -> None:
    manifest = _manifest(valid)
    manifest["format"] = "pyhotpatch-package/2"
    error = _refused(_with_manifest(valid, manifest), "unsupported package format")
    assert "pyhotpatch-package/2" in str(error) and FORMAT in str(error)


# Actions are found by what they are, not by their position in the builder's output.
_FN = ("targets", 0, "modules", 0, "actions", "function")
_DEF = ("targets", 0, "modules", 0, "actions", "define-with-aliases")
_BASES = ("targets", 0, "modules", 0, "actions", "bases")
_REBUILD_EXPR = ("targets", 0, "modules", 0, "actions", "rebuild-expression")
_MOD = ("targets", 0, "modules", 0)
_T = ("targets", 0)
_DELETE = object()

# (path to the field, new value, what the message must name)
BAD_FIELDS: list[tuple[tuple[Any, ...], object, str]] = [
    ((), "manifest", "manifest must be a JSON object"),
    (("format",), 1, "manifest.format must be a string"),
    (("format",), _DELETE, "manifest.format"),
    (("id",), "", "manifest.id '' is not a valid hotpatch id"),
    (("id",), "1KB", "not a valid hotpatch id"),
    (("id",), "KB" + "1" * 70, "not a valid hotpatch id"),
    (("id",), "KB/../x", "not a valid hotpatch id"),
    (("id",), 5, "manifest.id must be a string"),
    (("title",), None, "manifest.title must be a string"),
    (("title",), "x" * 5000, "manifest.title must be a string of at most"),
    (("classification",), "Important", "manifest.classification 'Important'"),
    (("classification",), ["Security"], "manifest.classification must be a string"),
    (("cves",), "CVE-2024-1234", "manifest.cves must be a list"),
    (("cves",), ["cve 2024 1"], "manifest.cves: 'cve 2024 1' is not an advisory id"),
    (("cves",), ["../x"], "manifest.cves: '../x' is not an advisory id"),
    (("cves",), [1], "manifest.cves must be a list of strings"),
    (("notes",), [None], "manifest.notes must be a list of strings"),
    (("surprise",), 1, "manifest has unknown field"),
    (("targets",), [], "manifest.targets is empty"),
    (("targets",), {}, "manifest.targets must be a list"),
    (("targets", 0), "demo", r"manifest.targets\[0\] must be a JSON object"),
    ((*_T, "distribution"), "-demo", "distribution '-demo' is not a distribution name"),
    ((*_T, "distribution"), 3, r"targets\[0\].distribution must be a string"),
    ((*_T, "baseline_version"), "", "'' is not a version"),
    ((*_T, "fixed_version"), "1.0 beta", "'1.0 beta' is not a version"),
    ((*_T, "modules"), {}, r"targets\[0\].modules must be a list"),
    ((*_T, "extra"), 1, r"targets\[0\] has unknown field"),
    ((*_MOD, "name"), "demo..m", "'demo..m' is not a module name"),
    ((*_MOD, "name"), "1demo.m", "is not a module name"),
    ((*_MOD, "path"), "/etc/passwd.py", "must be a relative .py path"),
    ((*_MOD, "path"), "../demo/m.py", "must be a relative .py path"),
    ((*_MOD, "path"), "demo//m.py", "must be a relative .py path"),
    ((*_MOD, "path"), "demo/m.so", "must be a relative .py path"),
    ((*_MOD, "baseline_sha256"), "abc", "baseline_sha256 must be a sha256 hex digest"),
    ((*_MOD, "baseline_sha256"), "A" * 64, "baseline_sha256 must be a sha256 hex digest"),
    ((*_MOD, "future"), ["not a feature"], "is not a __future__ feature"),
    ((*_MOD, "future"), [1], "future must be a list of strings"),
    ((*_MOD, "actions"), None, "actions must be a list"),
    ((*_MOD, "extra"), 1, r"modules\[0\] has unknown field"),
    ((*_FN, "kind"), "delete", r"actions\[\d+\].kind 'delete' is not one of"),
    ((*_FN, "scope"), [1], r"actions\[\d+\].scope must be a list of strings"),
    ((*_FN, "scope"), ["a-b"], "'a-b' is not an identifier"),
    ((*_FN, "name"), "f()", "'f\\(\\)' is not an identifier"),
    ((*_FN, "name"), "", "a 'function' action is missing required fields"),
    ((*_FN, "fingerprint"), _DELETE, "a 'function' action is missing required fields"),
    ((*_FN, "fingerprint"), "zz", "fingerprint must be a sha256 hex digest"),
    ((*_FN, "fingerprint"), 5, "fingerprint must be a sha256 hex digest"),
    ((*_FN, "old"), _DELETE, "a 'function' action is missing required fields"),
    ((*_FN, "old"), "abc", r"actions\[\d+\].old must be a JSON object"),
    ((*_FN, "old", "line"), 0, r"actions\[\d+\].old.line must be a positive line number"),
    ((*_FN, "old", "line"), True, "line must be a positive line number"),
    ((*_FN, "old", "line"), "1", "line must be a positive line number"),
    ((*_FN, "old", "line"), 10**8, "line must be a positive line number"),
    ((*_FN, "new", "digest"), "0" * 63, r"actions\[\d+\].new.digest must be a sha256"),
    ((*_FN, "new", "extra"), 1, r"actions\[\d+\].new has unknown field"),
    ((*_FN, "rebind_defaults"), "yes", "rebind_defaults must be a boolean"),
    ((*_FN, "extra"), 1, r"actions\[\d+\] has unknown field"),
    ((*_DEF, "names"), [], r"a 'define' action is missing required fields"),
    ((*_DEF, "names"), ["1x"], "names must be identifiers"),
    ((*_DEF, "names"), "PATTERN", "names must be a list"),
    ((*_DEF, "new"), _DELETE, "a 'define' action is missing required fields"),
    ((*_DEF, "aliases"), [["demo.other"]], r"aliases\[0\] must be \[module, name\]"),
    ((*_DEF, "aliases"), [["demo.other", "a b"]], r"aliases\[0\] must be \[module, name\]"),
    ((*_DEF, "aliases"), [["demo..other", "X"]], r"aliases\[0\] must be \[module, name\]"),
    ((*_DEF, "aliases"), [[1, 2]], r"aliases\[0\] must be \[module, name\]"),
    ((*_DEF, "aliases"), "demo.other", "aliases must be a list"),
    ((*_BASES, "expression"), 5, "expression must be a short string"),
    ((*_BASES, "expression"), "(" + "A, " * 2000 + ")", "expression must be a short string"),
    ((*_BASES, "expression"), _DELETE, "a 'bases' action is missing required fields"),
    ((*_BASES, "name"), "C", "a 'bases' action is missing required fields"),
    ((*_BASES, "scope"), [], "a 'bases' action is missing required fields"),
    ((*_REBUILD_EXPR, "new"), {"digest": "0" * 64, "line": 1}, "a 'rebuild' action is missing"),
    ((*_REBUILD_EXPR, "expression"), _DELETE, "a 'rebuild' action is missing required fields"),
]


_FINDERS = {
    "function": lambda a: a["kind"] == "function",
    "define-with-aliases": lambda a: a["kind"] == "define" and "aliases" in a,
    "bases": lambda a: a["kind"] == "bases",
    "rebuild-expression": lambda a: a["kind"] == "rebuild" and "expression" in a,
}


def _resolve(document: Any, path: tuple[Any, ...]) -> tuple[Any, ...]:
    """``path`` with each action kind replaced by the index of the first such action."""
    out: list[Any] = []
    node = document
    for key in path:
        if key in _FINDERS:
            key = next(i for i, action in enumerate(node) if _FINDERS[key](action))
        out.append(key)
        node = node[key] if not isinstance(node, dict) or key in node else None
    return tuple(out)


def _set(document: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    path = _resolve(document, path)
    node = document
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "match"),
    BAD_FIELDS,
    ids=[".".join(map(str, p)) + "=" + repr(v)[:20] for p, v, _ in BAD_FIELDS],
)
def test_bad_manifest_field(valid: bytes, path: tuple[Any, ...], value: object, match: str) -> None:
    manifest = _set(copy.deepcopy(_manifest(valid)), path, value)
    _refused(_with_manifest(valid, manifest), match)
    with pytest.raises(PackageError, match=match):
        Manifest.from_json(manifest)


def test_module_listed_twice(valid: bytes) -> None:
    manifest = _manifest(valid)
    manifest["targets"].append(copy.deepcopy(manifest["targets"][0]))
    _refused(_with_manifest(valid, manifest), "module demo.m appears twice")


# -- sources ---------------------------------------------------------------------------------


def test_tampered_source(valid: bytes) -> None:
    pairs = _sources(valid)
    pairs[0][1] += "import os; os.system('id')\n"
    _refused(
        _with(valid, "sources.json", pairs), "does not match its digest: the package was tampered"
    )


def test_missing_source(valid: bytes) -> None:
    _refused(_with(valid, "sources.json", _sources(valid)[1:]), "lacks 1 source")


def test_extra_source(valid: bytes) -> None:
    extra = "def backdoor():\n    pass\n"
    pairs = [*_sources(valid), [source_digest(extra), extra]]
    _refused(_with(valid, "sources.json", pairs), "1 source\\(s\\) its manifest does not mention")


def test_repeated_source(valid: bytes) -> None:
    pairs = _sources(valid)
    _refused(_with(valid, "sources.json", [*pairs, pairs[0]]), "repeats source")


@pytest.mark.parametrize(
    ("document", "match"),
    [
        ({}, "sources.json must be a list"),
        ("text", "sources.json must be a list"),
        ([["0" * 64]], r"sources.json\[0\] must be a \[sha256, text\] pair"),
        ([["0" * 64, 1]], r"sources.json\[0\] must be a \[sha256, text\] pair"),
        (["x"], r"sources.json\[0\] must be a \[sha256, text\] pair"),
    ],
)
def test_malformed_sources(valid: bytes, document: object, match: str) -> None:
    _refused(_with(valid, "sources.json", document), match)


def test_sources_not_json(valid: bytes) -> None:
    members = [(n, b"[" if n == "sources.json" else b) for n, b in _members(valid)]
    _refused(_zip(members), "sources.json is not valid JSON")


def test_source_that_is_not_unicode(valid: bytes) -> None:
    """A lone surrogate is not text: it could not be compiled or written back."""
    text = "x = '\ud800'\n"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    manifest = _manifest(valid)
    manifest["targets"][0]["modules"][0]["actions"][0]["new"]["digest"] = digest
    wanted = _referenced(manifest)
    pairs = [p for p in _sources(valid) if p[0] in wanted] + [[digest, text]]
    data = _zip(
        [
            ("manifest.json", json.dumps(manifest).encode()),
            ("sources.json", json.dumps(pairs).encode()),
        ]
    )
    _refused(data, "not .*text|UTF-8|surrogate")


def _referenced(manifest: dict[str, Any]) -> set[str]:
    return {
        ref["digest"]
        for target in manifest["targets"]
        for module in target["modules"]
        for action in module["actions"]
        for ref in (action.get("old"), action.get("new"))
        if ref
    }


# -- no input crashes the reader -------------------------------------------------------------


def _content(package: Package) -> tuple[Manifest, dict[str, str]]:
    return package.manifest, package.sources


def _outcome(data: bytes, expected: tuple[Manifest, dict[str, str]]) -> str:
    try:
        package = read_package(data)
    except PackageError:
        return "refused"
    assert _content(package) == expected, "a damaged package was read back with other content"
    return "identical"


def test_every_single_byte_flip_is_caught_or_harmless(valid: bytes) -> None:
    """Flip each byte of the package in turn: identical content or PackageError, nothing else."""
    expected = _content(read_package(valid))
    escaped: list[str] = []
    for offset in range(len(valid)):
        damaged = bytearray(valid)
        damaged[offset] ^= 0x80
        try:
            _outcome(bytes(damaged), expected)
        except Exception as exc:  # collect every escape, to report them all at once
            escaped.append(f"offset {offset}: {type(exc).__name__}: {exc}")
    assert not escaped, f"{len(escaped)} flip(s) escaped as non-PackageError:\n" + "\n".join(
        escaped[:10]
    )


def test_random_byte_flips_are_caught_or_harmless(valid: bytes) -> None:
    """Hypothesis: any few random byte changes give identical content or PackageError."""
    expected = _content(read_package(valid))

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        flips=st.lists(
            st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)), min_size=1, max_size=8
        )
    )
    def check(flips: list[tuple[int, int]]) -> None:
        damaged = bytearray(valid)
        for offset, mask in flips:
            damaged[offset] ^= mask
        _outcome(bytes(damaged), expected)

    check()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
)
@given(
    document=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_manifest_is_refused_cleanly(document: object) -> None:
    with pytest.raises(PackageError):
        Manifest.from_json(document)


def test_hand_made_manifest_round_trips() -> None:
    ref = SourceRef(source_digest("def f():\n    return 1\n"), 3)
    manifest = Manifest(
        id="KB5031001",
        title="t",
        classification="Critical",
        cves=("CVE-2024-0001", "GHSA-abcd-efgh-jkmp"),
        targets=(
            Target(
                "demo",
                "1.0",
                "1.1",
                (
                    ModulePatch(
                        "demo.m",
                        "demo/m.py",
                        "0" * 64,
                        ("annotations",),
                        (
                            Action(
                                "function", ("C",), "f", ref, ref, "1" * 64, rebind_defaults=True
                            ),
                            Action(
                                "define", (), "", new=ref, names=("g",), aliases=(("demo.o", "g"),)
                            ),
                            Action("rebuild", ("C",), "", names=("D",), expression="C(3)"),
                            Action("bases", ("C",), "", expression="(A, B, )"),
                        ),
                    ),
                ),
            ),
        ),
        notes=("n",),
    )
    assert Manifest.from_json(json.loads(dumps_manifest(manifest))) == manifest
    data = package_bytes(manifest, {ref.digest: "def f():\n    return 1\n"})
    assert read_package(data).manifest == manifest
