"""Turn a release given on the command line into the files a Python import would see.

A release is a directory (a project checkout, an unpacked sdist or wheel), an
sdist, a wheel, or ``name==version`` fetched with pip into a cache. Whatever the
form, the result is a ``Release``: distribution name, version, and the files of
its importable packages and modules by relative path. Test suites, docs and
build scripts are left out; everything under an importable package is kept,
data files included, so that changes to them can be refused.
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from pyhotpatch.errors import SourceError

_SKIP_TOP = {
    "test",
    "tests",
    "testing",
    "docs",
    "doc",
    "examples",
    "example",
    "benchmarks",
    "bench",
    "scripts",
    "tools",
    "build",
    "dist",
    "venv",
    ".venv",
}
_SKIP_FILES = {"setup.py", "conftest.py", "noxfile.py", "fabfile.py", "tasks.py", "dodo.py"}
_SPEC_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")
_MAX_RELEASE_BYTES = 512 * 1024 * 1024  # refuse archives that unpack to more than this


@dataclass
class Release:
    """The importable files of one release of one distribution."""

    name: str
    version: str
    origin: str
    files: dict[str, bytes] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    @property
    def top_level(self) -> set[str]:
        """Top-level import names the release provides."""
        return {PurePosixPath(p).parts[0].removesuffix(".py") for p in self.files}


def cache_dir() -> Path:
    """Where downloaded releases are kept (``PYHOTPATCH_CACHE`` or ``~/.cache/pyhotpatch``)."""
    return Path(os.environ.get("PYHOTPATCH_CACHE") or Path.home() / ".cache" / "pyhotpatch")


def load_release(spec: str) -> Release:
    """Load a release from a directory, an sdist, a wheel, or ``name==version``."""
    path = Path(spec)
    if path.is_dir():
        return _from_directory(path, spec)
    if path.is_file():
        if path.suffix == ".whl":
            return _from_wheel(path.read_bytes(), spec)
        if path.name.endswith((".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz")):
            return _from_sdist(path, spec)
        raise SourceError(f"{spec}: not a wheel, an sdist or a directory")
    match = _SPEC_RE.match(spec)
    if match:
        return load_release(str(fetch(match.group(1), match.group(2))))
    raise SourceError(f"{spec}: no such file or directory, and not of the form name==version")


def fetch(name: str, version: str) -> Path:
    """Download ``name==version`` with pip into the cache (pure wheel, else sdist); reuse it."""
    target = cache_dir() / "releases" / f"{canonicalize_name(name)}-{version}"
    existing = sorted(target.glob("*")) if target.is_dir() else []
    if existing:
        return existing[0]
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=parent))
    try:
        base = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--quiet",
            "-d",
            str(tmp),
            f"{name}=={version}",
        ]
        pure = [
            "--only-binary=:all:",
            "--platform",
            "any",
            "--implementation",
            "py",
            "--abi",
            "none",
            "--python-version",
            f"{sys.version_info[0]}.{sys.version_info[1]}",
        ]
        attempts = [base + pure, [*base, "--no-binary=:all:"]]
        errors = []
        for command in attempts:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            files = sorted(tmp.glob("*"))
            if done.returncode == 0 and files:
                # another process may have fetched the same release meanwhile: keep theirs
                with contextlib.suppress(OSError):
                    tmp.rename(target)
                kept = sorted(target.glob("*"))
                if kept:
                    return kept[0]
            errors.append(done.stderr.strip().splitlines()[-1:] or ["pip failed"])
        raise SourceError(f"cannot fetch {name}=={version} with pip: {errors[-1][0]}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _from_wheel(data: bytes, origin: str) -> Release:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{origin}: not a valid wheel: {exc}") from exc
    with zf:
        metadata = next(
            (n for n in zf.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)), None
        )
        if metadata is None:
            raise SourceError(f"{origin}: wheel has no .dist-info/METADATA")
        name, version = _metadata(zf.read(metadata))
        release = Release(name, version, origin)
        total = 0
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or not parts:
                continue
            if parts[0].endswith(".dist-info"):
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            total += info.file_size
            if total > _MAX_RELEASE_BYTES:
                raise SourceError(
                    f"{origin}: wheel unpacks to more than {_MAX_RELEASE_BYTES} bytes"
                )
            _add(release, PurePosixPath(*parts), zf.read(info))
    return release


def _from_sdist(path: Path, origin: str) -> Release:
    """Read an sdist in memory (no extraction): only its regular files, bounded in size."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        total += info.file_size
                        _check_total(total, origin)
                        files[_safe_member(info.filename, origin)] = zf.read(info)
        else:
            with tarfile.open(path) as tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    total += member.size
                    _check_total(total, origin)
                    handle = tf.extractfile(member)
                    if handle is not None:
                        files[_safe_member(member.name, origin)] = handle.read()
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"{origin}: cannot read sdist: {exc}") from exc
    tops = {PurePosixPath(p).parts[0] for p in files}
    if len(tops) == 1:
        prefix = tops.pop() + "/"
        files = {p[len(prefix) :]: data for p, data in files.items() if p.startswith(prefix)}
    if "PKG-INFO" not in files:
        raise SourceError(f"{origin}: sdist has no PKG-INFO")
    name, version = _metadata(files["PKG-INFO"])
    return _select(files, Release(name, version, origin))


def _check_total(total: int, origin: str) -> None:
    if total > _MAX_RELEASE_BYTES:
        raise SourceError(f"{origin}: archive unpacks to more than {_MAX_RELEASE_BYTES} bytes")


def _safe_member(name: str, origin: str) -> str:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts:
        raise SourceError(f"{origin}: archive member {name!r} escapes the archive")
    return PurePosixPath(name).as_posix()


def _from_directory(path: Path, origin: str) -> Release:
    name, version = _directory_identity(path, origin)
    if any(path.glob("*.dist-info")):
        files = {
            f.relative_to(path).as_posix(): f.read_bytes()
            for f in path.rglob("*")
            if f.is_file() and not any(p.endswith(".dist-info") for p in f.relative_to(path).parts)
        }
        release = Release(name, version, origin)
        for rel, data in sorted(files.items()):
            _add(release, PurePosixPath(rel), data)
        return release
    root = path / "src" if (path / "src").is_dir() else path
    wanted: dict[str, bytes] = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / "__init__.py").is_file() and child.name not in _SKIP_TOP:
            for file in sorted(child.rglob("*")):
                if file.is_file():
                    wanted[file.relative_to(path).as_posix()] = file.read_bytes()
        elif child.is_file() and child.suffix == ".py":
            wanted[child.relative_to(path).as_posix()] = child.read_bytes()
    return _select(wanted, Release(name, version, origin))


def _select(files: dict[str, bytes], release: Release) -> Release:
    """Keep the importable packages and modules of a project tree (``src/`` layout or flat)."""
    has_src = any(p.startswith("src/") for p in files)
    prefix = "src/" if has_src else ""
    tree = {p[len(prefix) :]: d for p, d in files.items() if p.startswith(prefix)}
    packages = {
        PurePosixPath(p).parts[0]
        for p in tree
        if len(PurePosixPath(p).parts) == 2 and PurePosixPath(p).name == "__init__.py"
    } - _SKIP_TOP
    for rel, data in sorted(tree.items()):
        parts = PurePosixPath(rel).parts
        if parts[0].startswith(".") or parts[0].endswith((".dist-info", ".egg-info")):
            continue
        if len(parts) == 1:
            if rel.endswith(".py") and rel not in _SKIP_FILES:
                _add(release, PurePosixPath(rel), data)
        elif parts[0] in packages:
            _add(release, PurePosixPath(rel), data)
    if not release.files:
        raise SourceError(f"{release.origin}: no importable Python package or module found")
    return release


def _add(release: Release, rel: PurePosixPath, data: bytes) -> None:
    if "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo"):
        return
    if any(p in ("test", "tests") for p in rel.parts[:-1]) or re.match(
        r"^(test_.*|.*_test)\.py$", rel.name
    ):
        release.ignored.append(f"{rel}: test module, not part of the service's code")
        return
    release.files[rel.as_posix()] = data


def _directory_identity(path: Path, origin: str) -> tuple[str, str]:
    for candidate in [path / "PKG-INFO", *sorted(path.glob("*.dist-info/METADATA"))]:
        if candidate.is_file():
            return _metadata(candidate.read_bytes())
    pyproject = path / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text()
        project = re.search(r"(?ms)^\[project\]\s*$(.*?)(^\[|\Z)", text)
        if project:
            name = re.search(r'(?m)^name\s*=\s*"([^"]+)"', project.group(1))
            version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', project.group(1))
            if name and version:
                return name.group(1), version.group(1)
    match = re.match(r"^(.+?)-(\d[A-Za-z0-9.+!_-]*)$", path.name)
    if match:
        return match.group(1), match.group(2)
    raise SourceError(
        f"{origin}: cannot tell the distribution's name and version "
        "(no PKG-INFO, .dist-info/METADATA or [project] in pyproject.toml)"
    )


def _metadata(raw: bytes) -> tuple[str, str]:
    msg = email.parser.BytesParser().parsebytes(raw, headersonly=True)
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        raise SourceError("package metadata lacks Name or Version")
    return str(name), str(version)


def digest(data: bytes) -> str:
    """sha256 of a file's bytes, as recorded in the manifest."""
    return hashlib.sha256(data).hexdigest()
