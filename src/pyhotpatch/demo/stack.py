"""The ``pyhotpatch-demo`` product's service stack, written as real wheels.

The stack is one distribution, ``pyhotpatch-demo-app`` (import package ``demoapp``),
a small JSON web app served by ``python -m pyhotpatch.demo.worker --app
demoapp.web:handle``. Three releases tell the hotpatch story:

- ``1.0.0``, the vulnerable baseline: ``GET /files?name=../secrets/token`` walks
  out of the public documents and returns the secret token;
- ``1.0.1``, the fix, changing function bodies only, so the builder ships it as a
  hotpatch (``GET /version`` then answers ``1.0.1`` in the same process);
- ``1.1.0``, the fix plus a new ``__slots__`` field, which the builder refuses: it
  must ship as a baseline.

Wheels are written deterministically (fixed member order and timestamps), so the
same release always has the same sha256 and a lock file can pin it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

__all__ = ["APP", "VERSIONS", "demo_wheels", "lock_text", "write_wheel"]

#: the demo stack's distribution
APP = "pyhotpatch-demo-app"
#: its releases: the vulnerable baseline, the hotpatchable fix, the next baseline
VERSIONS = ("1.0.0", "1.0.1", "1.1.0")

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_STAMP = (2024, 1, 1, 0, 0, 0)  # every member's timestamp, so the bytes never vary

_INIT = '''"""The pyhotpatch demo web app: a tiny document store behind a JSON API."""

__version__ = "{version}"
'''

_WEB = '''"""Routes of the demo web app; ``handle`` is what the worker calls for every request."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

#: the documents the service holds, by path; only those under ``public/`` are served
STORE = {{
    "public/readme.txt": "pyhotpatch demo service: hotpatched, never restarted\\n",
    "public/motd.txt": "Security fixes here arrive without a restart.\\n",
    "secrets/token": "demo-api-token-7f3a9c\\n",
}}
PUBLIC = "public"


class Document:
    """One document as the API returns it."""

    __slots__ = ({slots})

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.body = body{init_extra}

    def to_json(self) -> dict[str, object]:
        """The JSON form of the document."""
        return {{{fields}}}


def release() -> str:
    """The release of the code that runs, as the service reports it."""
    return "{version}"


def resolve(name: str) -> str | None:
    """The store path of public document ``name``; None if it lies outside ``public/``."""
{resolve}


def files(query: Mapping[str, list[str]]) -> tuple[int, dict[str, object]]:
    """``GET /files?name=N``: one public document."""
    names = query.get("name") or []
    if len(names) != 1 or not names[0]:
        return 400, {{"error": "BadRequest", "detail": "exactly one 'name' is required"}}
    path = resolve(names[0])
    if path is None:
        return 403, {{"error": "Forbidden", "detail": f"{{names[0]!r}} is not a public document"}}
    body = STORE.get(path)
    if body is None:
        return 404, {{"error": "NotFound", "detail": f"no document {{names[0]!r}}"}}
    return 200, Document(names[0], body).to_json()


def handle(method: str, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, object]]:
    """Answer one request: its status and JSON body."""
    url = urlsplit(path)
    if method != "GET":
        return 405, {{"error": "MethodNotAllowed", "detail": method}}
    if url.path == "/version":
        return 200, {{"version": release(), "pid": os.getpid()}}
    if url.path == "/files":
        return files(parse_qs(url.query))
    return 404, {{"error": "NotFound", "detail": url.path}}
'''

_VULNERABLE = """    return posixpath.normpath(posixpath.join(PUBLIC, name))"""

_FIXED = """    path = posixpath.normpath(posixpath.join(PUBLIC, name))
    if not path.startswith(PUBLIC + "/"):
        return None
    return path"""


def app_files(version: str) -> dict[str, str]:
    """The sources of ``demoapp`` at one of ``VERSIONS``."""
    if version not in VERSIONS:
        raise ValueError(f"the demo app has no release {version!r} (known: {', '.join(VERSIONS)})")
    sized = version == "1.1.0"  # the layout change the builder refuses
    web = _WEB.format(
        version=version,
        slots='"body", "name", "size"' if sized else '"body", "name"',
        init_extra="\n        self.size = len(body)" if sized else "",
        fields=(
            '"name": self.name, "body": self.body, "size": self.size'
            if sized
            else '"name": self.name, "body": self.body'
        ),
        resolve=_VULNERABLE if version == "1.0.0" else _FIXED,
    )
    return {"demoapp/__init__.py": _INIT.format(version=version), "demoapp/web.py": web}


def write_wheel(root: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """Write a pure-Python wheel of ``files`` (paths inside site-packages) into ``root``.

    ``files`` may hold files of the ``.dist-info`` directory too (entry points, or
    a METADATA and WHEEL of its own; plain ones are written otherwise). The wheel
    installs with pip or ``installer`` and has a RECORD of sha256 digests; the same
    arguments always give the same bytes. ``ValueError`` for a bad distribution
    name, version or member path.
    """
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid distribution name")
    try:
        Version(version)
    except InvalidVersion:
        raise ValueError(f"{version!r} is not a valid version") from None
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    members: dict[str, bytes] = {}
    for rel, text in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts or rel == f"{info}/RECORD":
            raise ValueError(f"{rel!r} is not a relative path inside the wheel")
        members[rel] = text.encode()
    members.setdefault(
        f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    members.setdefault(
        f"{info}/WHEEL",
        b"Wheel-Version: 1.0\nGenerator: pyhotpatch\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    record = []
    for rel, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in members.items():
            member = zipfile.ZipInfo(rel, _STAMP)
            member.external_attr = 0o644 << 16
            archive.writestr(member, data)
    return path


def demo_wheels(root: Path) -> dict[str, Path]:
    """Write the demo app's wheel at every one of ``VERSIONS``; the paths by version."""
    return {version: write_wheel(root, APP, version, app_files(version)) for version in VERSIONS}


def lock_text(wheels: list[Path]) -> str:
    """A baseline lock pinning exactly ``wheels``: ``name==version --hash=sha256:…`` each."""
    lines = []
    for wheel in wheels:
        name, version, _build, _tags = parse_wheel_filename(wheel.name)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{canonicalize_name(name)}=={version} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"
