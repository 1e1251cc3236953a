"""Machinery shared by the process tests: real interpreters, child processes, demo releases.

Not a test module and not a program: ``test_control``, ``test_process``,
``test_service`` and ``test_transition`` import it as ``procs.harness``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyhotpatch.build import build
from support import ROOT, SRC, make_release

PROCS = Path(__file__).resolve().parent
HOTPATCH = ROOT / ".venv" / "bin" / "hotpatch"
T = TypeVar("T")

#: what the demo target answers, and the answers at its baseline and after KB1 and KB2
PROBE = r"""
import phdemo_target as t
result = {
    "version": t.version(),
    "dotdot": t.validate("../etc/passwd"),
    "backslash": t.validate("a\\b"),
}
"""
BASE = {"version": "1.0", "dotdot": True, "backslash": True}
FIXED1 = {"version": "1.1", "dotdot": False, "backslash": True}
FIXED2 = {"version": "1.2", "dotdot": False, "backslash": False}


# --------------------------------------------------------------------------- directories


def short_dir() -> Path:
    """A fresh private directory under /tmp, short enough for Unix socket paths."""
    return Path(tempfile.mkdtemp(prefix="ph", dir="/tmp"))


def wait_for(
    probe: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.02,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"condition not met within {timeout} s (last {last!r}){detail}")
        time.sleep(interval)
        last = probe()
    return last


# --------------------------------------------------------------------------- demo releases

_TARGET = '''\
"""Demo service code ({version})."""


class _Pause:
    """An awaitable that suspends a coroutine once."""

    def __await__(self):
        yield "paused"


def validate(value):
    """Whether a user-supplied relative path is safe to open."""
    return {check}


def wait_inside(entered, release, value):
    """Signal ``entered``, block until ``release`` is set, then answer."""
    entered.set()
    release.wait()
    return "{tag}:" + value


def stream(n):
    """Yield ``n`` tagged items."""
    for i in range(n):
        yield "{tag}%d" % i


async def fetch(value):
    """Suspend once, then answer."""
    await _Pause()
    return "{tag}:" + value


def version():
    """The release whose behaviour this is."""
    return "{version}"
'''

_CHECKS = {
    "1.0": 'not value.startswith("/")',
    "1.1": 'not value.startswith("/") and ".." not in value',
    "1.2": 'not value.startswith("/") and ".." not in value and "\\\\" not in value',
}
_WRONG = {
    "1.0": 'not value.startswith("/") and len(value) < 100',
    "1.1": 'not value.startswith("/") and len(value) < 100 and ".." not in value',
}
_RULES = {"1.0": "return True", "1.1": 'return user != "admin"', "1.2": 'return user != "admin"'}


def _demo_files(version: str, checks: dict[str, str]) -> dict[str, str]:
    tag = {"1.0": "old", "1.1": "new", "1.2": "newer"}[version]
    return {
        "phdemo_target.py": _TARGET.format(version=version, check=checks[version], tag=tag),
        "phdemo_pkg/__init__.py": '"""Demo package."""\n',
        "phdemo_pkg/rules.py": (
            f'"""Access rules."""\n\n\ndef allowed(user):\n    """May ``user`` log in."""\n'
            f"    {_RULES[version]}\n"
        ),
    }


@dataclass(frozen=True)
class Demo:
    """The ``phdemo`` distribution at 1.0 and the packages built for it."""

    old: Path  # release directory of 1.0, importable
    site: Path  # a directory holding only phdemo-1.0.dist-info ("installed at 1.0")
    site_other: Path  # phdemo-0.9.dist-info: installed at another version
    kb1: Path  # 1.0 -> 1.1: validate refuses "..", rules.allowed refuses admin, old -> new
    kb2: Path  # 1.0 -> 1.2, cumulative: also refuses backslashes, new -> newer
    wrong: Path  # built from a 1.0 whose validate differs from the real one

    def data(self, name: str) -> bytes:
        """The bytes of package ``name`` (kb1, kb2 or wrong)."""
        return Path(getattr(self, name)).read_bytes()


def _dist_info(root: Path, version: str) -> Path:
    info = root / f"phdemo-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: phdemo\nVersion: {version}\n")
    return root


def build_demo(root: Path) -> Demo:
    """Write the demo releases under ``root`` and build its packages."""
    releases = {v: make_release(root / "r", "phdemo", v, _demo_files(v, _CHECKS)) for v in _CHECKS}
    wrong = {v: make_release(root / "w", "phdemo", v, _demo_files(v, _WRONG)) for v in _WRONG}
    kb1, kb2, kbw = root / "KB1.hotpatch", root / "KB2.hotpatch", root / "KBW.hotpatch"
    build(str(releases["1.0"]), str(releases["1.1"]), patch_id="KB1").write(kb1)
    build(str(releases["1.0"]), str(releases["1.2"]), patch_id="KB2").write(kb2)
    build(str(wrong["1.0"]), str(wrong["1.1"]), patch_id="KBW").write(kbw)
    return Demo(
        old=releases["1.0"],
        site=_dist_info(root / "site", "1.0"),
        site_other=_dist_info(root / "site09", "0.9"),
        kb1=kb1,
        kb2=kb2,
        wrong=kbw,
    )


@dataclass(frozen=True)
class Big:
    """A module of many functions, all changed by one package (planning takes a while)."""

    old: Path
    package: Path
    count: int


def build_big(root: Path, count: int = 1200) -> Big:
    """A release of ``count`` functions and a package that changes every one of them."""

    def source(offset: int) -> str:
        return "\n".join(f"def f{i}(x):\n    return x + {i + offset}\n\n" for i in range(count))

    old = make_release(root, "phbig", "1.0", {"phbig_mod.py": source(0)})
    new = make_release(root, "phbig", "1.1", {"phbig_mod.py": source(1_000_000)})
    package = root / "KBBIG.hotpatch"
    build(str(old), str(new), patch_id="KBBIG").write(package)
    return Big(old, package, count)


# --------------------------------------------------------------------------- child processes


class ChildError(Exception):
    """Code run in a child raised; ``error`` is the exception's type name there."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class Child:
    """A child process whose stdout carries one JSON document per line."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, grace: float = 5.0) -> None:
        self.log = log
        self.grace = grace  # seconds the child gets to exit by itself once stdin closes
        self._stderr = log.open("w+")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.others: list[int] = []  # processes the child started that must also end
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pump = threading.Thread(target=self._read_stdout, daemon=True)
        self._pump.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        """Everything the child wrote to stderr so far."""
        return self.log.read_text()

    def read(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next JSON object the child prints (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"child {self.pid} said nothing for {timeout} s; stderr:\n{self.stderr()}"
                ) from None
            if line is None:
                self._lines.put(None)
                raise AssertionError(
                    f"child {self.pid} exited ({self.proc.wait(5)}); stderr:\n{self.stderr()}"
                )
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    return message

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the child's ``ready`` line; remember the pid it reports."""
        message = self.read(timeout)
        assert message.get("ready") is True, message
        self.pid = int(message["pid"])
        return message

    def ask(self, code: str, timeout: float = 30.0) -> Any:
        """Run ``code`` in a ``repl.py`` child; return its ``result`` or raise ``ChildError``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"code": textwrap.dedent(code)}) + "\n")
        self.proc.stdin.flush()
        reply = self.read(timeout)
        if not reply.get("ok"):
            raise ChildError(str(reply.get("error")), str(reply.get("message")))
        return reply.get("result")

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> int | None:
        """End the child (stdin closed, then SIGTERM, then SIGKILL) and every process it named."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        for pid in self.others:
            end_pid(pid)
        self._pump.join(timeout=timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode


def end_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM process ``pid`` (not our direct child), then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        # reaped between the two looks: gone, unless the pid still answers
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


class Children:
    """Starts children of one interpreter with one run directory; ends them all at teardown."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.base = short_dir()
        self.run_dir = self.base / "run"
        self._children: list[Child] = []

    def env(
        self,
        paths: Iterable[Path | str] = (),
        extra: dict[str, str] | None = None,
        src: bool = True,
    ) -> dict[str, str]:
        """An environment without inherited PYHOTPATCH* settings, sockets in ``run_dir``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PYHOTPATCH") and k not in ("PYTHONPATH", "PYTHONHOME")
        }
        entries = ([str(SRC)] if src else []) + [str(p) for p in paths]
        if entries:
            env["PYTHONPATH"] = os.pathsep.join(entries)
        env["PYHOTPATCH_RUN_DIR"] = str(self.run_dir)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def start(self, argv: list[str], env: dict[str, str], grace: float = 0.2) -> Child:
        """Start ``argv`` with ``env``; the caller reads its first line."""
        child = Child(argv, env, self.base / f"stderr-{len(self._children)}.txt", grace)
        self._children.append(child)
        return child

    def repl(
        self,
        paths: Iterable[Path | str] = (),
        *,
        enable: bool = True,
        extra: dict[str, str] | None = None,
        python: str | None = None,
        src: bool = True,
    ) -> Child:
        """A ready ``repl.py`` child (``pyhotpatch.enable()`` called unless ``enable`` is false)."""
        argv = [python or self.python, str(PROCS / "repl.py")]
        if not enable:
            argv.append("--no-enable")
        child = self.start(argv, self.env(paths, extra, src), grace=5.0)
        child.ready()
        return child

    def socket(self, pid: int) -> Path:
        """Where process ``pid`` serves its control socket."""
        return self.run_dir / f"{pid}.sock"

    def close(self) -> None:
        """End every child and remove the directory."""
        for child in self._children:
            child.close()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- raw control socket


def frame(payload: bytes) -> bytes:
    """``payload`` with the control protocol's 4-byte big-endian length header."""
    return struct.pack(">I", len(payload)) + payload


def json_frame(message: Any) -> bytes:
    """A well-framed JSON message."""
    return frame(json.dumps(message).encode())


def b64(data: bytes) -> str:
    """Base64 text, as the ``apply`` request carries a package."""
    return base64.b64encode(data).decode()


def raw_exchange(path: Path, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload``, close our sending side, return everything received until EOF."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    received = b""
    try:
        sock.connect(str(path))
        with contextlib.suppress(OSError):
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return received


def decode_reply(data: bytes) -> dict[str, Any]:
    """The single framed JSON reply in ``data``."""
    assert len(data) >= 4, data
    (length,) = struct.unpack(">I", data[:4])
    assert len(data) == 4 + length, (length, data[:200])
    reply = json.loads(data[4:])
    assert isinstance(reply, dict), reply
    return reply


# --------------------------------------------------------------------------- CLI and venvs


def hotpatch(
    args: list[str], env: dict[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the ``hotpatch`` command of the project's virtualenv."""
    return subprocess.run(
        [str(HOTPATCH), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
        check=False,
    )


def make_venv(python: str, dest: Path) -> tuple[str, Path]:
    """A bare virtualenv (no pip) of ``python``; return its interpreter and site-packages."""
    subprocess.run(
        [python, "-m", "venv", "--without-pip", str(dest)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    interpreter = str(dest / "bin" / "python")
    done = subprocess.run(
        [interpreter, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYHOTPATCH"))},
    )
    return interpreter, Path(done.stdout.strip())
