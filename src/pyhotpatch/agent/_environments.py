"""The baseline environments of one machine: one Python virtual environment per baseline.

Layout under the root directory::

    <KB>/                   a complete environment (venv) of baseline KB
    <KB>/pyhotpatch-env.json  its marker: written last, so it exists only in a complete one
    <KB>.adopted.json       the marker of an adopted environment (then <KB> links to that venv)
    current -> <KB>         the environment the service runs from
    .building-<KB>-<rand>   a build in progress; renamed to <KB> only once verified
    .removing-<KB>-<rand>   an environment being deleted by ``prune``
    .current-<rand>         a new ``current`` link about to replace the old one
    .build.lock, .lock      lock files: one build at a time; one change of entries at a time

Invariants: ``<KB>`` appears in one rename, complete and verified, so a killed agent
leaves at most a ``.building-*``, ``.removing-*`` or ``.current-*`` entry, which the next
``Environments`` or ``build`` removes; ``current`` is replaced in one rename and is
always a valid link (or absent); ``prune`` never removes the current environment.
Wheels are checked against the lock (names, versions, sha256, platform tags) before
anything is installed, and installed without pip and without the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import installer
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename

import pyhotpatch
from pyhotpatch.agent._files import read_json, sync_dir, write_json
from pyhotpatch.catalog._lock import Pin, normal_version, parse_lock, wheel_pin
from pyhotpatch.catalog._model import KB_RE
from pyhotpatch.clock import Clock, system_clock
from pyhotpatch.errors import AgentError, HotpatchError

MARKER = "pyhotpatch-env.json"
CURRENT = "current"
PTH_NAME = "pyhotpatch_autoenable.pth"
_PTH_LINE = "import pyhotpatch._autoenable\n"
_BUILD_LOCK = ".build.lock"  # held for a whole build
_SET_LOCK = ".lock"  # held while entries are added, removed or switched
_OLDEST = (3, 10)  # the oldest CPython the hotpatch runtime supports
_TIMEOUT = 600.0  # seconds allowed to each interpreter run during a build

# Run by the chosen interpreter: make the venv. Before 3.11 a venv's interpreter names
# itself as its base, which would chain the new venv to that venv; use the real base.
_CREATE = """\
import os, sys, venv
if sys.prefix != sys.base_prefix and sys.version_info < (3, 11):
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    with open(cfg, encoding="utf-8") as handle:
        found = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition("=") for line in handle)
        )
    base = os.path.join(found.get("home", ""), "python%d.%d" % sys.version_info[:2])
    if os.path.exists(base):
        sys._base_executable = base
venv.EnvBuilder(with_pip=False, symlinks=True, prompt=sys.argv[2]).create(sys.argv[1])
"""

# Run by an environment's interpreter: what it is, what it holds, whether the runtime
# imports; with arguments, first compile its site-packages as they will be named later.
_PROBE = """\
import json, platform, sys, sysconfig
if len(sys.argv) > 1:
    import compileall
    compileall.compile_dir(sys.argv[1], quiet=2, stripdir=sys.argv[2], prependdir=sys.argv[3])
autoenable = "pyhotpatch._autoenable" in sys.modules
try:
    import pyhotpatch.runtime
    runtime = None
except Exception as exc:
    runtime = repr(exc)
from importlib import metadata
dists = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        dists[name] = dist.version
print(json.dumps({
    "implementation": sys.implementation.name,
    "version": platform.python_version(),
    "version_info": list(sys.version_info[:2]),
    "abiflags": getattr(sys, "abiflags", ""),
    "prefix": sys.prefix,
    "paths": sysconfig.get_paths(),
    "distributions": dists,
    "autoenable": autoenable,
    "runtime_error": runtime,
}))
"""


def _quiet(_message: str) -> None:
    """Progress sink used when the caller gives none."""


class Environments:
    """The baseline environments of one machine: ``<root>/<KB>/`` each, ``<root>/current -> <KB>``.

    Building, switching and pruning are safe against a killed agent (see the module
    docstring) and against another ``Environments`` on the same root: builds are
    serialised by a lock file, and so are changes to the set of environments.
    """

    def __init__(self, root: Path, *, clock: Clock = system_clock) -> None:
        self.root = Path(os.path.abspath(root))
        self._clock = clock
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(_BUILD_LOCK, wait=False) as mine:
            if mine:
                self._clean(".building-")
        with self._locked(_SET_LOCK, wait=False) as mine:
            if mine:
                self._clean(".removing-", ".current-")

    # -- queries -------------------------------------------------------------------------

    def has(self, kb: str) -> bool:
        """Whether environment ``kb`` is complete: its marker names it and its interpreter exists.

        Raises ``AgentError`` if ``kb`` is not a release id.
        """
        marker = self._read_marker(_check_kb(kb))
        return (
            isinstance(marker, dict)
            and marker.get("kb") == kb
            and (self.root / kb / "bin" / "python").exists()
        )

    def python(self, kb: str) -> Path:
        """The interpreter of environment ``kb``; ``AgentError`` if there is no complete one."""
        if not self.has(kb):
            raise AgentError(f"there is no complete environment for {kb} in {self.root}")
        return self.root / kb / "bin" / "python"

    def describe(self, kb: str) -> dict[str, Any]:
        """The marker of ``kb``: ``{"kb", "pins": {name: version}, "python", "created"}``.

        Raises ``AgentError`` if there is no complete environment ``kb``.
        """
        marker = self._read_marker(_check_kb(kb))
        if not self.has(kb) or not isinstance(marker, dict):
            raise AgentError(f"there is no complete environment for {kb} in {self.root}")
        return marker

    def current(self) -> str | None:
        """The KB the ``current`` link points at, or None before the first ``switch``.

        Raises ``AgentError`` if ``current`` exists but is not a link to a release id.
        """
        link = self.root / CURRENT
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AgentError(f"{link} is not a symbolic link to an environment: {exc}") from exc
        if not KB_RE.match(target):
            raise AgentError(f"{link} points at {target!r}, which is not a release id")
        return target

    # -- changes ---------------------------------------------------------------------------

    def build(
        self,
        kb: str,
        lock: Path,
        wheels: Sequence[Path],
        *,
        python: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Path:
        """Install baseline ``kb`` (its lock and one wheel per pin) as a new environment.

        The environment is made from ``python`` (default: this interpreter), gets the
        hotpatch runtime and its ``.pth`` hook, and appears at ``<root>/<KB>`` only once
        installed and verified. Building a KB that is already complete returns it at once.
        ``progress`` receives short messages as the build goes. Raises ``AgentError``
        for a bad lock, a wheel that is missing, extra, unpinned or does not match the
        lock's digest or the interpreter, an interpreter that cannot run the runtime,
        or an install that fails; nothing is left at ``<root>/<KB>`` then.
        """
        kb = _check_kb(kb)
        say = progress or _quiet
        pins = _read_lock(kb, lock)
        final = self.root / kb
        with self._locked(_BUILD_LOCK):
            self._clean(".building-")
            if self.has(kb):
                _same_pins(kb, self._read_marker(kb), pins)
                return final
            say(f"verifying {len(wheels)} wheels")
            chosen = _match_wheels(kb, pins, wheels)
            interpreter = _find_python(python)
            building = self.root / f".building-{kb}-{secrets.token_hex(6)}"
            try:
                building.mkdir()
                marker = self._make(kb, building, pins, chosen, interpreter, say)
                write_json(building / MARKER, marker, mode=0o644)
                _sync_tree(building)
                with self._locked(_SET_LOCK):
                    self._discard(kb)
                    os.replace(building, final)
                    sync_dir(self.root)
            except BaseException as exc:
                shutil.rmtree(building, ignore_errors=True)
                if isinstance(exc, OSError):
                    raise AgentError(
                        f"baseline {kb}: building its environment failed: {exc}"
                    ) from exc
                raise
        say(f"{kb} ready")
        return final

    def switch(self, kb: str) -> None:
        """Point ``current`` at ``kb`` in one rename; ``AgentError`` if ``kb`` is not complete."""
        kb = _check_kb(kb)
        with self._locked(_SET_LOCK):
            if not self.has(kb):
                raise AgentError(f"cannot switch to {kb}: there is no complete environment for it")
            try:
                self._link(self.root / CURRENT, kb)
            except OSError as exc:
                raise AgentError(f"cannot point {self.root / CURRENT} at {kb}: {exc}") from exc

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove every environment not in ``keep`` except the current one; return their KBs."""
        kept = set(keep)
        removed: list[str] = []
        with self._locked(_SET_LOCK):
            self._clean(".removing-", ".current-")
            current = self.current()
            for entry in sorted(self.root.iterdir()):
                if KB_RE.match(entry.name) and entry.name not in kept and entry.name != current:
                    self._remove(entry)
                    removed.append(entry.name)
        return removed

    def adopt(self, kb: str, python: Path) -> None:
        """Record an existing virtual environment as environment ``kb``, without touching it.

        For machines whose service already runs from a venv the agent did not build:
        ``<root>/<KB>`` becomes a link to that venv (``python`` is the venv or its
        interpreter) and its marker lists what it holds. Adopting the same venv again
        does nothing. Raises ``AgentError`` if ``python`` is not in a venv, its
        interpreter does not run, or ``kb`` already names another environment.
        """
        kb = _check_kb(kb)
        venv = Path(os.path.abspath(python if python.is_dir() else python.parent.parent))
        if not (venv / "pyvenv.cfg").is_file() or not (venv / "bin" / "python").exists():
            raise AgentError(
                f"cannot adopt {python}: {venv} is not a virtual environment (no pyvenv.cfg and bin/python)"
            )
        entry = self.root / kb
        with self._locked(_SET_LOCK):
            if self.has(kb):
                if entry.is_symlink() and os.readlink(entry) == str(venv):
                    return
                raise AgentError(f"cannot adopt {venv} as {kb}: {kb} already names {entry}")
            info = _probe(venv / "bin" / "python")
            pins = {str(canonicalize_name(n)): str(v) for n, v in info["distributions"].items()}
            self._discard(kb)
            marker = _marker(kb, pins, info["version"], self._clock().isoformat())
            write_json(self._adopted_marker(kb), {**marker, "adopted": str(venv)}, mode=0o644)
            self._link(entry, str(venv))

    # -- the build itself ------------------------------------------------------------------

    def _make(
        self,
        kb: str,
        building: Path,
        pins: Mapping[str, Pin],
        chosen: Mapping[str, Path],
        interpreter: str,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Create, fill and verify the venv in ``building``; return its marker."""
        final = self.root / kb
        say(f"creating the environment with {interpreter}")
        _run(
            [interpreter, "-I", "-c", _CREATE, str(building), kb],
            f"creating a venv with {interpreter}",
        )
        env_python = building / "bin" / "python"
        info = _probe(env_python)
        _check_interpreter(kb, info, building)
        _check_tags(kb, chosen, info)
        paths = info["paths"]
        headers = building / "include" / "site" / "python{}.{}".format(*info["version_info"])
        for name, wheel in sorted(chosen.items()):
            say(f"installing {name} {pins[name].version}")
            scheme = {key: paths[key] for key in ("purelib", "platlib", "scripts", "data")}
            scheme["headers"] = str(headers / name)
            _install(wheel, scheme, str(final / "bin" / "python"))
        purelib = Path(paths["purelib"])
        if "pyhotpatch" not in pins:
            say("installing the hotpatch runtime")
            _provision(purelib)
        _relocate(building, final)
        say("checking the environment")
        checked = _probe(env_python, str(purelib), str(building), str(final))
        _check_result(kb, checked, pins)
        versions = {name: pin.version for name, pin in pins.items()}
        return _marker(kb, versions, info["version"], self._clock().isoformat())

    # -- files and locks -------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the lock file ``name`` (yield True), or yield False if busy and not ``wait``."""
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _clean(self, *prefixes: str) -> None:
        """Remove what killed builds, prunes and switches left (the caller holds their lock)."""
        for entry in self.root.iterdir():
            if entry.name.startswith(prefixes):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _marker_path(self, kb: str) -> Path:
        """Where the marker of ``kb`` lives: beside an adopted venv's link, else inside the env."""
        if (self.root / kb).is_symlink():
            return self._adopted_marker(kb)
        return self.root / kb / MARKER

    def _adopted_marker(self, kb: str) -> Path:
        return self.root / f"{kb}.adopted.json"

    def _read_marker(self, kb: str) -> Any:
        try:
            return read_json(self._marker_path(kb))
        except (OSError, ValueError):
            return None

    def _link(self, link: Path, target: str) -> None:
        """Make ``link`` point at ``target`` in one rename (the caller holds the set lock)."""
        temp = self.root / f".current-{secrets.token_hex(6)}"
        os.symlink(target, temp)
        try:
            os.replace(temp, link)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        sync_dir(self.root)

    def _discard(self, kb: str) -> None:
        """Remove an incomplete ``<root>/<KB>`` before it is replaced (never the current one)."""
        entry = self.root / kb
        if not (entry.exists() or entry.is_symlink()):
            return
        if kb == self.current():
            raise AgentError(
                f"{entry} is the current environment but is incomplete; refusing to replace it"
            )
        self._remove(entry)

    def _remove(self, entry: Path) -> None:
        """Delete one environment: unlink an adopted one, move a built one aside then delete it."""
        if entry.is_symlink():
            entry.unlink()
            self._adopted_marker(entry.name).unlink(missing_ok=True)
        else:
            trash = self.root / f".removing-{entry.name}-{secrets.token_hex(6)}"
            os.replace(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        sync_dir(self.root)


def _check_kb(kb: str) -> str:
    if not isinstance(kb, str) or not KB_RE.match(kb):
        raise AgentError(f"{kb!r} is not a release id (expected KB and 4 to 10 digits)")
    return kb


def _marker(kb: str, pins: Mapping[str, str], python: str, created: str) -> dict[str, Any]:
    return {"kb": kb, "pins": dict(sorted(pins.items())), "python": python, "created": created}


def _read_lock(kb: str, lock: Path) -> dict[str, Pin]:
    try:
        return parse_lock(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentError(f"baseline {kb}: cannot read the lock file {lock}: {exc}") from exc
    except HotpatchError as exc:
        raise AgentError(f"baseline {kb}: bad lock file {lock}: {exc}") from exc


def _same_pins(kb: str, marker: Any, pins: Mapping[str, Pin]) -> None:
    """Refuse a lock that disagrees with the environment already built under its KB."""
    recorded = marker.get("pins", {}) if isinstance(marker, dict) else {}
    wrong = [
        f"{name}=={pin.version} (has {recorded.get(name, 'none')})"
        for name, pin in sorted(pins.items())
        if recorded.get(name) != pin.version
    ]
    if wrong:
        raise AgentError(
            f"environment {kb} already exists with other versions than its lock pins: {', '.join(wrong)}"
        )


def _match_wheels(kb: str, pins: Mapping[str, Pin], wheels: Sequence[Path]) -> dict[str, Path]:
    """One wheel per pin, by name, version and digest; every problem named in one error.

    A pin without ``--hash`` accepts any wheel of its name and version, as the catalog does.
    """
    problems: list[str] = []
    chosen: dict[str, Path] = {}
    for wheel in wheels:
        try:
            name, version = wheel_pin(wheel.name)
        except HotpatchError as exc:
            problems.append(str(exc))
            continue
        pin = pins.get(name)
        if pin is None:
            problems.append(f"wheel {wheel.name} is not pinned in the lock")
            continue
        if normal_version(version) != pin.version:
            problems.append(
                f"wheel {wheel.name} is version {version}, but the lock pins {name}=={pin.version}"
            )
            continue
        if name in chosen:
            problems.append(
                f"two wheels for {name}=={pin.version}: {chosen[name].name} and {wheel.name}"
            )
            continue
        try:
            digest = _sha256(wheel)
        except OSError as exc:
            problems.append(f"cannot read wheel {wheel}: {exc.strerror or exc}")
            continue
        if pin.hashes and digest not in pin.hashes:
            problems.append(
                f"wheel {wheel.name} has sha256 {digest}, which the lock does not allow for {name}=={pin.version}"
            )
            continue
        chosen[name] = wheel
    problems += [
        f"the lock pins {name}=={pin.version} but no wheel was given for it"
        for name, pin in sorted(pins.items())
        if name not in chosen and not any(name == _wheel_name(w) for w in wheels)
    ]
    if problems:
        raise AgentError(f"baseline {kb} refused: {'; '.join(problems)}")
    return chosen


def _wheel_name(wheel: Path) -> str | None:
    try:
        return wheel_pin(wheel.name)[0]
    except HotpatchError:
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_python(python: str | None) -> str:
    if python is None:
        return sys.executable
    found = shutil.which(python)
    if found is None:
        raise AgentError(f"there is no Python interpreter at {python!r}")
    return os.path.abspath(found)


def _run(command: list[str], what: str) -> str:
    """Run ``command`` without hotpatch settings in its environment; its stdout, or AgentError."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            env=environ,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise AgentError(
            f"{what} failed (exit {done.returncode}): {lines[-1] if lines else 'no message'}"
        )
    return done.stdout


def _probe(python: Path, *compile_args: str) -> dict[str, Any]:
    """What the interpreter of a venv reports about itself (see ``_PROBE``)."""
    out = _run([str(python), "-I", "-c", _PROBE, *compile_args], f"running {python}")
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise AgentError(f"running {python} gave no report: {out[-200:]!r}") from exc
    if not isinstance(info, dict):
        raise AgentError(f"running {python} gave a malformed report")
    return info


def _check_interpreter(kb: str, info: Mapping[str, Any], building: Path) -> None:
    """The new venv runs CPython the runtime supports, and installs only inside itself."""
    if info["implementation"] != "cpython" or tuple(info["version_info"]) < _OLDEST:
        raise AgentError(
            f"baseline {kb}: {info['implementation']} {info['version']} cannot run the hotpatch "
            f"runtime (CPython {_OLDEST[0]}.{_OLDEST[1]} or later is needed)"
        )
    inside = building.resolve()
    if Path(info["prefix"]).resolve() != inside:
        raise AgentError(
            f"baseline {kb}: the new environment's interpreter runs from {info['prefix']}"
        )
    for key in ("purelib", "platlib", "scripts", "data"):
        where = Path(info["paths"][key]).resolve()
        if where != inside and inside not in where.parents:
            raise AgentError(
                f"baseline {kb}: the new environment's {key} directory {where} is outside it"
            )


def _check_tags(kb: str, chosen: Mapping[str, Path], info: Mapping[str, Any]) -> None:
    """Every wheel is built for the environment's interpreter and this platform."""
    major, minor = info["version_info"]
    interpreter = f"cp{major}{minor}"
    platforms = list(tags.platform_tags())
    supported = {
        *tags.cpython_tags((major, minor), [interpreter + info["abiflags"]], platforms),
        *tags.compatible_tags((major, minor), interpreter, platforms),
    }
    wrong = [
        wheel.name
        for _name, wheel in sorted(chosen.items())
        if not parse_wheel_filename(wheel.name)[3] & supported
    ]
    if wrong:
        raise AgentError(
            f"baseline {kb} refused: {', '.join(wrong)} cannot run on CPython {info['version']} here"
        )


def _install(wheel: Path, scheme: dict[str, str], interpreter: str) -> None:
    """Install one verified wheel into ``scheme``; scripts run ``interpreter``."""
    destination = SchemeDictionaryDestination(scheme, interpreter, "posix")
    try:
        with WheelFile.open(wheel) as source:
            source.validate_record()
            installer.install(source, destination, {"INSTALLER": b"pyhotpatch\n"})
    except Exception as exc:  # installer raises many kinds; all mean this wheel is unusable
        raise AgentError(f"installing {wheel.name} failed: {exc}") from exc


def _provision(purelib: Path) -> None:
    """Copy this installation's pyhotpatch package and its ``.pth`` hook into ``purelib``."""
    package = Path(pyhotpatch.__file__).parent
    target = purelib / "pyhotpatch"
    if target.exists():
        raise AgentError(
            f"a wheel of the baseline installs {target}, where the hotpatch runtime goes"
        )
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pth = package.parent / PTH_NAME
    (purelib / PTH_NAME).write_text(pth.read_text() if pth.is_file() else _PTH_LINE)


def _relocate(building: Path, final: Path) -> None:
    """Name the final directory, not the build directory, in the venv's activation scripts."""
    texts = [building / "pyvenv.cfg", *sorted((building / "bin").glob("[aA]ctivate*"))]
    for path in texts:
        if path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace(str(building), str(final)), encoding="utf-8")


def _check_result(kb: str, info: Mapping[str, Any], pins: Mapping[str, Pin]) -> None:
    """The built venv holds exactly the pinned versions and its runtime hook loads."""
    found = {str(canonicalize_name(n)): normal_version(v) for n, v in info["distributions"].items()}
    wrong = [
        f"{name}=={pin.version} (found {found.get(name, 'none')})"
        for name, pin in sorted(pins.items())
        if found.get(name) != pin.version
    ]
    if wrong:
        raise AgentError(f"baseline {kb}: the built environment does not hold {', '.join(wrong)}")
    if info["runtime_error"] is not None or not info["autoenable"]:
        raise AgentError(
            f"baseline {kb}: the hotpatch runtime does not load in the built environment: "
            f"{info['runtime_error'] or 'the .pth hook did not run'}"
        )


def _sync_tree(root: Path) -> None:
    """Flush every file and directory under ``root``, so a rename of it is durable with them."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        sync_dir(Path(folder))
