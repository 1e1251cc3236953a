"""Reading and writing ``.hotpatch`` files: a deterministic zip of a manifest and sources.

Layout: ``manifest.json`` plus ``sources.json``, a JSON list of ``[sha256, text]``
pairs holding every piece of source text the manifest refers to, each keyed by
the digest of its own UTF-8 bytes, in the order the manifest first mentions
them (so a function's baseline and fixed text sit side by side and compress
together). Writing is deterministic (fixed order, timestamps and modes), so the
same inputs give the same bytes. Reading is all or nothing: size limits are checked
before anything is decompressed, every entry is verified, and only then is a
``Package`` returned.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from pyhotpatch.errors import PackageError
from pyhotpatch.package._manifest import Manifest

MANIFEST = "manifest.json"
SOURCES = "sources.json"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Limits:
    """Safety limits for reading a package from an untrusted source."""

    max_file_bytes: int = 16 * 1024 * 1024  # the whole .hotpatch file
    max_entries: int = 8  # zip members (a valid package has two)
    max_entry_bytes: int = 4 * 1024 * 1024  # one member, uncompressed
    max_total_bytes: int = 64 * 1024 * 1024  # all members, uncompressed
    max_ratio: int = 200  # uncompressed / compressed, per member


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Package:
    """A validated package: its manifest, its source texts by digest, and its own digest."""

    manifest: Manifest
    sources: dict[str, str]
    digest: str
    size: int

    def source(self, digest: str) -> str:
        """The source text stored under ``digest``."""
        return self.sources[digest]


def dumps_manifest(manifest: Manifest) -> bytes:
    """Canonical JSON bytes of a manifest (sorted keys, no spaces, trailing newline)."""
    text = json.dumps(manifest.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text + "\n").encode()


def _json(blob: bytes, name: str) -> object:
    try:
        return json.loads(blob.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PackageError(f"{name} is not valid JSON: {exc}") from exc


def source_digest(text: str) -> str:
    """The digest under which ``text`` is stored in a package."""
    return hashlib.sha256(text.encode()).hexdigest()


def package_bytes(manifest: Manifest, sources: dict[str, str]) -> bytes:
    """Serialize a package deterministically; sources must be exactly those referenced."""
    order = manifest.source_order()
    if set(sources) != set(order):
        raise PackageError("sources do not match the digests the manifest refers to")
    payload = json.dumps(
        [[d, sources[d]] for d in order], separators=(",", ":"), ensure_ascii=False
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in ((MANIFEST, dumps_manifest(manifest)), (SOURCES, payload.encode())):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=9)
    return buf.getvalue()


def write_package(path: str | os.PathLike[str], manifest: Manifest, sources: dict[str, str]) -> str:
    """Write a package atomically to ``path`` and return its sha256."""
    data = package_bytes(manifest, sources)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".hotpatch", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def read_package(
    source: str | os.PathLike[str] | bytes, limits: Limits = DEFAULT_LIMITS
) -> Package:
    """Read and fully validate a package from a path or from bytes.

    Raises ``PackageError`` for anything malformed, truncated, oversized or
    inconsistent; nothing is returned unless every check passed.
    """
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read(limits.max_file_bytes + 1)
        except OSError as exc:
            raise PackageError(
                f"cannot read package {os.fspath(source)!r}: {exc.strerror}"
            ) from exc
    if len(data) > limits.max_file_bytes:
        raise PackageError(f"package is larger than {limits.max_file_bytes} bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as exc:
        raise PackageError(f"not a hotpatch package (bad zip: {exc})") from exc
    with zf:
        members = _check_members(zf.infolist(), limits)
        contents: dict[str, bytes] = {}
        for info in members:
            try:
                blob = zf.read(info)
            except (
                zipfile.BadZipFile,
                zlib.error,
                ValueError,
                OSError,
                EOFError,
                NotImplementedError,
            ) as exc:
                raise PackageError(f"package member {info.filename} is corrupt: {exc}") from exc
            if len(blob) != info.file_size:
                raise PackageError(f"package member {info.filename} has the wrong size")
            contents[info.filename] = blob
    manifest = Manifest.from_json(_json(contents[MANIFEST], MANIFEST))
    pairs = _json(contents[SOURCES], SOURCES)
    if not isinstance(pairs, list):
        raise PackageError("sources.json must be a list of [sha256, text] pairs")
    sources: dict[str, str] = {}
    for i, pair in enumerate(pairs):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise PackageError(f"sources.json[{i}] must be a [sha256, text] pair")
        digest, text = pair
        try:
            raw = text.encode()
        except UnicodeEncodeError as exc:
            raise PackageError(f"sources.json[{i}] is not valid Unicode text") from exc
        if hashlib.sha256(raw).hexdigest() != digest:
            raise PackageError(
                f"sources.json[{i}] does not match its digest: the package was tampered with"
            )
        if digest in sources:
            raise PackageError(f"sources.json[{i}] repeats source {digest[:12]}")
        sources[digest] = text
    missing = manifest.source_digests() - set(sources)
    if missing:
        raise PackageError(f"package lacks {len(missing)} source(s) its manifest refers to")
    extra = set(sources) - manifest.source_digests()
    if extra:
        raise PackageError(f"package holds {len(extra)} source(s) its manifest does not mention")
    return Package(manifest, sources, hashlib.sha256(data).hexdigest(), len(data))


def _check_members(infos: list[zipfile.ZipInfo], limits: Limits) -> list[zipfile.ZipInfo]:
    if len(infos) > limits.max_entries:
        raise PackageError(f"package has more than {limits.max_entries} members")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise PackageError("package has duplicate members")
    for required in (MANIFEST, SOURCES):
        if required not in names:
            raise PackageError(f"package has no {required}")
    total = 0
    for info in infos:
        name = info.filename
        if name not in (MANIFEST, SOURCES):
            raise PackageError(f"unexpected member {name!r} in package")
        if info.flag_bits & 0x1:
            raise PackageError(f"member {name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(f"member {name} uses an unsupported compression method")
        if info.file_size > limits.max_entry_bytes:
            raise PackageError(f"member {name} is larger than {limits.max_entry_bytes} bytes")
        if info.file_size > limits.max_ratio * max(info.compress_size, 1) + 1024:
            raise PackageError(f"member {name} has an implausible compression ratio")
        total += info.file_size
    if total > limits.max_total_bytes:
        raise PackageError(f"package unpacks to more than {limits.max_total_bytes} bytes")
    return infos
