"""The node agent's verified view of the control plane's releases, through TUF.

``ReleaseFeed`` wraps python-tuf's ``ngclient``: it walks the root chain from the
root the agent shipped with, refuses rolled-back, expired, mixed or wrongly signed
metadata, and hands out only artifacts whose length and sha256 match what the
targets role signed. Every failure becomes a ``DistributionError`` whose message
says what was refused and why, with python-tuf's exception kept as ``__cause__``,
and nothing unverified is left in the cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib import parse

import urllib3.exceptions
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]  # not in __all__
from tuf.api.serialization import DeserializationError
from tuf.ngclient.updater import Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from pyhotpatch.errors import (
    DistributionError,
    PackageError,
    ReleaseServerUnreachable,
    WrongBaseline,
)
from pyhotpatch.package import read_package

#: where the control plane serves metadata and artifacts, below its base URL
METADATA_PATH = "/hotpatch/tuf/metadata/"
TARGETS_PATH = "/hotpatch/tuf/targets/"

_ROLE_FILE = re.compile(r"^(?:[0-9]+\.)?([a-z]+)\.json$")
_ROLE_IN_TEXT = re.compile(r"\b(root|timestamp|snapshot|targets)\b")
_FAILURES = (
    tuf_errors.RepositoryError,
    tuf_errors.DownloadError,
    urllib3.exceptions.HTTPError,
    OSError,
)


@dataclass(frozen=True)
class TargetInfo:
    """One artifact the targets role signed: where it is, its size, digest and release fields."""

    path: str
    length: int
    sha256: str
    custom: Mapping[str, Any]


class _Fetcher(Urllib3Fetcher):
    """python-tuf's default fetcher, naming the URL in HTTP errors and keeping what it read.

    The metadata bytes last downloaded for each role let an expiry error say when
    the refused metadata expired. ``ca_bundle`` is the CA to trust for HTTPS when the
    control plane's certificate is not signed by one the system trusts.
    """

    def __init__(self, ca_bundle: str | None = None) -> None:
        super().__init__(app_user_agent="pyhotpatch-agent")
        if ca_bundle is not None:
            from tuf.ngclient._internal.proxy import ProxyEnvironment

            # python-tuf builds its urllib3 pools through ProxyEnvironment, which
            # passes its keyword arguments on to every PoolManager.
            self._proxy_env = ProxyEnvironment(
                headers={"User-Agent": "pyhotpatch-agent"}, ca_certs=ca_bundle
            )
        self.downloaded: dict[str, bytes] = {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            return super()._fetch(url)
        except tuf_errors.DownloadHTTPError as exc:
            raise tuf_errors.DownloadHTTPError(
                f"{url} answered HTTP {exc.status_code}", exc.status_code
            ) from exc

    def download_bytes(self, url: str, max_length: int) -> bytes:
        """Download ``url`` and remember the bytes under the role its file name names."""
        data = super().download_bytes(url, max_length)
        match = _ROLE_FILE.match(parse.unquote(url.rsplit("/", 1)[-1]))
        if match is not None:
            self.downloaded[match.group(1)] = data
        return data


class ReleaseFeed:
    """Verified access to the control plane's releases through TUF.

    ``base_url`` is the control plane's root URL; ``state_dir`` keeps the verified
    metadata and artifacts between runs (created 0700). ``trusted_root`` is the
    root metadata the agent ships with; it is needed the first time, after which
    the cached, verified root chain is used. Like ngclient's ``Updater``, one feed
    at a time may use a state directory.
    """

    def __init__(
        self,
        base_url: str,
        state_dir: Path,
        *,
        trusted_root: bytes | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.state_dir = Path(state_dir)
        self._metadata_dir = self.state_dir / "metadata"
        self._targets_dir = self.state_dir / "targets"
        self._trusted_root = trusted_root
        for folder in (self.state_dir, self._metadata_dir, self._targets_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)
        if trusted_root is None and not (self._metadata_dir / "root.json").exists():
            raise DistributionError(
                f"no trusted root: {self._metadata_dir} holds no verified root.json yet; "
                "pass the root.json the agent ships with as trusted_root"
            )
        self._fetcher = _Fetcher(ca_bundle)
        self._updater: Updater | None = self._new_updater()
        self._refreshed = False

    @property
    def targets_dir(self) -> Path:
        """Where verified artifacts are kept."""
        return self._targets_dir

    def refresh(self) -> None:
        """Download and verify the newest metadata: root chain, timestamp, snapshot, targets."""
        updater = self._updater if self._updater is not None and not self._refreshed else None
        if updater is None:
            updater = self._new_updater()
        self._updater = None
        self._refreshed = False
        try:
            updater.refresh()
        except _FAILURES as exc:
            self._refuse(exc)
        self._updater = updater
        self._refreshed = True

    def targets(self) -> dict[str, TargetInfo]:
        """Every target the verified targets metadata lists, by path (refreshing first if needed)."""
        self._ready()
        try:
            data = (self._metadata_dir / "targets.json").read_bytes()
            signed = Metadata[Targets].from_bytes(data).signed
        except _FAILURES as exc:
            self._refuse(exc)
        out: dict[str, TargetInfo] = {}
        for path, info in signed.targets.items():
            custom = info.custom
            out[path] = TargetInfo(
                path=path,
                length=info.length,
                sha256=info.hashes.get("sha256", ""),
                custom=dict(custom) if isinstance(custom, dict) else {},
            )
        return out

    def download(self, path: str) -> Path:
        """The verified artifact at target ``path``; cached if an earlier download verified."""
        updater = self._ready()
        try:
            info = updater.get_targetinfo(path)
        except _FAILURES as exc:
            self._refuse(exc)
        if info is None:
            raise DistributionError(
                f"no signed target {path} in the release feed at {self.base_url}"
            )
        final = self._targets_dir / parse.quote(path, "")
        if updater.find_cached_target(info, str(final)) is not None:
            return final
        final.unlink(missing_ok=True)  # a stale or damaged copy must not stay behind
        partial = self._targets_dir / f".partial-{uuid.uuid4().hex}"
        try:
            updater.download_target(info, str(partial))
            os.replace(partial, final)
        except _FAILURES as exc:
            partial.unlink(missing_ok=True)
            self._refuse(exc, target=path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final

    def fetch_hotpatch(self, kb: str, running_baseline: str) -> Path:
        """The verified ``.hotpatch`` of release ``kb``, if it is built for ``running_baseline``.

        The baseline is checked against the signed release fields before anything
        is downloaded (``WrongBaseline``); the package must then open and carry
        ``kb`` as its id, or it is deleted and refused.
        """
        candidates = [
            t for t in self.targets().values() if t.custom.get("kbId") == kb and _is_hotpatch(t)
        ]
        if not candidates:
            raise DistributionError(
                f"release {kb} has no signed hotpatch in the release feed at {self.base_url}"
            )
        if len(candidates) > 1:
            paths = ", ".join(sorted(t.path for t in candidates))
            raise DistributionError(f"release {kb} lists several signed hotpatches: {paths}")
        target = candidates[0]
        baseline = target.custom.get("baseline")
        if not isinstance(baseline, str) or not baseline:
            raise DistributionError(
                f"the signed metadata of hotpatch {kb} names no baseline: refusing to install it"
            )
        if baseline != running_baseline:
            raise WrongBaseline(
                f"hotpatch {kb} is built for baseline {baseline}, but this machine runs "
                f"baseline {running_baseline}: nothing was downloaded"
            )
        file = self.download(target.path)
        try:
            package = read_package(file)
        except PackageError as exc:
            file.unlink(missing_ok=True)
            raise DistributionError(
                f"signed artifact {target.path} is not a valid hotpatch package: {exc}"
            ) from exc
        if package.manifest.id != kb:
            file.unlink(missing_ok=True)
            raise DistributionError(
                f"signed artifact {target.path} holds hotpatch {package.manifest.id}, not {kb}: refused"
            )
        return file

    # -- internals ---------------------------------------------------------------------

    def _new_updater(self) -> Updater:
        try:
            return Updater(
                metadata_dir=str(self._metadata_dir),
                metadata_base_url=self.base_url + METADATA_PATH,
                target_dir=str(self._targets_dir),
                target_base_url=self.base_url + TARGETS_PATH,
                fetcher=self._fetcher,
                bootstrap=self._trusted_root,
            )
        except _FAILURES as exc:
            raise DistributionError(
                f"no trusted root: the root metadata to start from is not valid: {exc}"
            ) from exc

    def _ready(self) -> Updater:
        if self._updater is None or not self._refreshed:
            self.refresh()
        assert self._updater is not None
        return self._updater

    def _refuse(self, exc: BaseException, *, target: str | None = None) -> NoReturn:
        cls = ReleaseServerUnreachable if _unreachable(exc) else DistributionError
        raise cls(self._explain(exc, target)) from exc

    def _explain(self, exc: BaseException, target: str | None) -> str:
        text = str(exc)
        server = f"the release server at {self.base_url}"
        if isinstance(exc, tuf_errors.UnsignedMetadataError):
            match = re.match(r"(\S+) was signed by (\d+)/(\d+) keys", text)
            if match is None:
                return f"signature check failed: {text}"
            role, signed, threshold = match.groups()
            return (
                f"signature check failed for {role}: not signed by enough trusted keys "
                f"({signed} of the {threshold} required)"
            )
        if isinstance(exc, tuf_errors.ExpiredMetadataError):
            found = _ROLE_IN_TEXT.search(text)
            role = found.group(1) if found else "metadata"
            return (
                f"metadata expired: {role} expired at {self._expiry(role)}; {server} has not "
                "re-signed it (a frozen or stale repository), refusing to trust it"
            )
        if isinstance(exc, tuf_errors.BadVersionNumberError):
            return _version_message(text)
        if target is not None and isinstance(
            exc, (tuf_errors.LengthOrHashMismatchError, tuf_errors.DownloadLengthMismatchError)
        ):
            return f"artifact does not match its signed digest: {target} ({text})"
        if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
            return f"metadata does not match the length and digest signed for it: {text}"
        if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
            return f"metadata from {server} is larger than allowed: {text}"
        if isinstance(exc, tuf_errors.DownloadHTTPError):
            what = f"artifact {target}" if target else "metadata"
            return f"{server} could not serve the {what}: {text}"
        if isinstance(exc, tuf_errors.SlowRetrievalError) and not _refused_connection(exc):
            return f"{server} is too slow to answer: {_root_cause(exc)}"
        if isinstance(exc, (tuf_errors.DownloadError, urllib3.exceptions.HTTPError)):
            return f"cannot reach {server}: {_root_cause(exc)}"
        if isinstance(exc, DeserializationError):
            return f"malformed metadata from {server}: {text}"
        if isinstance(exc, tuf_errors.RepositoryError):
            return f"metadata refused: {text}"
        return f"cannot use the local release cache in {self.state_dir}: {exc}"

    def _expiry(self, role: str) -> str:
        """When the refused ``role`` metadata expired, from what was just read."""
        candidates = [self._fetcher.downloaded.get(role)]
        with contextlib.suppress(OSError):
            candidates.append((self._metadata_dir / f"{role}.json").read_bytes())
        for data in candidates:
            if data is None:
                continue
            try:
                expires = Metadata.from_bytes(data).signed.expires
            except tuf_errors.RepositoryError:
                continue
            return expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        return "an unknown time"


def _is_hotpatch(target: TargetInfo) -> bool:
    """Whether ``target`` is a release's ``.hotpatch`` (by its signed role, else its name)."""
    role = target.custom.get("role")
    return role == "hotpatch" if role is not None else target.path.endswith(".hotpatch")


def _version_message(text: str) -> str:
    """Explain one of ngclient's version-number refusals."""
    patterns: list[tuple[str, str]] = [
        (
            r"New (\w+) version (\d+) must be >= (\d+)",
            "rollback refused: {0} version {1} is older than the trusted version {2}",
        ),
        (
            r"New snapshot version must be >= (\d+), got version (\d+)",
            "rollback refused: the timestamp names snapshot version {1}, older than the "
            "trusted version {0}",
        ),
        # ngclient words this one with the new version first: "Expected <file> version <new>,
        # got <trusted>."
        (
            r"Expected (\w+)\.json version (\d+), got (\d+)\.",
            "rollback refused: the snapshot lists {0} version {1}, older than the trusted "
            "version {2}",
        ),
        (
            r"Expected root version (\d+) instead got version (\d+)",
            "root version {1} was served where version {0} was expected: refused",
        ),
        (
            r"Expected snapshot version (\d+), got (\d+)",
            "snapshot version {1} is not the version {0} the timestamp signs: refused "
            "(inconsistent or replayed metadata)",
        ),
        (
            r"Expected (\w+) v(\d+), got v(\d+)",
            "{0} version {2} is not the version {1} the snapshot signs: refused "
            "(inconsistent or replayed metadata)",
        ),
    ]
    for pattern, message in patterns:
        match = re.search(pattern, text)
        if match is not None:
            return message.format(*match.groups())
    return f"version check failed: {text}"


def _unreachable(exc: BaseException) -> bool:
    """Whether the server did not answer (in time), rather than answered with something wrong."""
    if isinstance(exc, (tuf_errors.DownloadHTTPError, tuf_errors.DownloadLengthMismatchError)):
        return False
    return isinstance(exc, (tuf_errors.DownloadError, urllib3.exceptions.HTTPError))


def _refused_connection(exc: BaseException) -> bool:
    """Whether a "slow retrieval" is really a connection that could not be made.

    urllib3's ``NewConnectionError`` subclasses its ``ConnectTimeoutError``, so
    ngclient reports a refused connection as a timeout.
    """
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, urllib3.exceptions.NewConnectionError):
            return True
        reason = getattr(current, "reason", None)
        current = current.__cause__ or (reason if isinstance(reason, BaseException) else None)
    return False


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of a network failure, which names what actually went wrong."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        following = current.__cause__ or (reason if isinstance(reason, BaseException) else None)
        if following is None:
            break
        current = following
    return str(current) or type(current).__name__
