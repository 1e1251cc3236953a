"""Run the managed service's workers and keep them running, through restarts of the agent.

Invariants the supervisor keeps:

- ``spec.workers`` copies of the service's command run; one that exits is started
  again at once, and with a backoff (1 s, 2 s, 4 s … 60 s) while workers keep
  dying within seconds of starting.
- Workers run in a session of their own, so a Ctrl-C to the agent's terminal never
  reaches them; only the supervisor stops them (``SIGTERM``, then ``SIGKILL`` on
  their whole process group after ``stop_timeout``).
- With ``listen``, the agent binds the port (``SO_REUSEADDR`` and ``SO_REUSEPORT``)
  and hands the socket to every worker as fd 3, systemd's way (``LISTEN_FDS=1``,
  ``LISTEN_PID`` = the worker's own pid, ``LISTEN_FDNAMES=http``). Since the agent
  holds the socket too, connections queue while workers come and go: a rolling
  restart starts a new worker, waits until it is ready (``READY=1`` on
  ``NOTIFY_SOCKET``, or its control socket answering), and only then stops an old
  one gracefully, so the service keeps serving throughout.
- The record file lists every running worker with its ``/proc`` start time, written
  atomically whenever the set changes, so a restarted agent adopts exactly the
  workers it left (never a process that reused a pid). When it starts a worker of
  its own beside them, it hands it the adopted workers' socket, copied out of one
  of them (``pidfd_getfd``), and binds the port again with ``SO_REUSEPORT`` only
  if that cannot be done.

All methods may be called from several threads (the agent's main loop calls
``check``; its work thread restarts workers); the lock is never held while waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyhotpatch.agent import _listener
from pyhotpatch.agent._files import read_json, write_json
from pyhotpatch.agent._proc import start_time
from pyhotpatch.errors import AgentError, HotpatchError
from pyhotpatch.runtime import client

log = logging.getLogger("pyhotpatch.agent.supervisor")

#: the most workers one service may run
MAX_WORKERS = 256
#: the longest stop or readiness timeout, in seconds
MAX_TIMEOUT = 3600.0
#: a worker that exits sooner than this many seconds after starting counts as crash-looping
QUICK_EXIT = 10.0
#: the longest wait before starting a crash-looping worker again, in seconds
BACKOFF_CAP = 60.0
#: the token in ``command`` that stands for the environment's interpreter
PYTHON_TOKEN = "{python}"

_SHELL = "/bin/sh"
# exec keeps the shell's pid, so $$ is the worker's own pid, as LISTEN_PID must be
_WRAPPER = 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
_SET_HERE = frozenset(
    {
        "PYHOTPATCH_RUN_DIR",
        "PYHOTPATCH_PACKAGE",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_SOCKADDR_UN_MAX = 107  # bytes of a socket path, without its NUL


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a host and a port; ``AgentError`` if malformed."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AgentError(f"listen {listen!r} is not host:port with a port from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True)
class ServiceSpec:
    """The managed service: its command, how many copies run, and how they are handed work.

    ``command`` is an argv in which ``{python}`` stands for the environment's
    interpreter. ``listen`` (``host:port``) makes the agent bind the port and hand it
    to every worker. A worker gets ``stop_timeout`` seconds to stop after ``SIGTERM``
    and ``ready_timeout`` seconds to become ready: by sending ``READY=1`` to
    ``NOTIFY_SOCKET`` if ``notify``, else by answering on its control socket.
    ``environment`` adds variables to the workers' environment. ``AgentError`` for
    any bad value.
    """

    command: tuple[str, ...]
    workers: int = 1
    listen: str | None = None
    stop_timeout: float = 20.0
    ready_timeout: float = 60.0
    notify: bool = True
    environment: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.command, str) or not isinstance(self.command, (list, tuple)):
            raise AgentError("the service command must be a list of arguments")
        command = tuple(self.command)
        if not command or not all(isinstance(arg, str) and arg for arg in command):
            raise AgentError("the service command must be one or more non-empty strings")
        if any("\0" in arg for arg in command):
            raise AgentError("the service command contains a NUL character")
        object.__setattr__(self, "command", command)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int):
            raise AgentError("the service's workers must be a whole number")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise AgentError(f"the service's workers must be between 1 and {MAX_WORKERS}")
        if self.listen is not None:
            if not isinstance(self.listen, str):
                raise AgentError("the service's listen address must be a string host:port")
            parse_listen(self.listen)
        for name in ("stop_timeout", "ready_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise AgentError(f"the service's {name} must be a number of seconds")
            if not 0 < value <= MAX_TIMEOUT:
                raise AgentError(
                    f"the service's {name} must be above 0 and at most {MAX_TIMEOUT:g} seconds"
                )
        if not isinstance(self.notify, bool):
            raise AgentError("the service's notify must be true or false")
        if not isinstance(self.environment, dict):
            raise AgentError("the service's environment must map names to values")
        for key, value in self.environment.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key):
                raise AgentError(f"the service's environment has a bad variable name {key!r}")
            if not isinstance(value, str) or "\0" in value:
                raise AgentError(f"the service's environment variable {key} must be a string")
            if key in _SET_HERE:
                raise AgentError(f"the service's environment may not set {key}: the agent does")

    def to_json(self) -> dict[str, Any]:
        """The configuration file form."""
        return {
            "command": list(self.command),
            "workers": self.workers,
            "listen": self.listen,
            "stopTimeout": self.stop_timeout,
            "readyTimeout": self.ready_timeout,
            "notify": self.notify,
            "environment": dict(self.environment),
        }

    @classmethod
    def from_json(cls, data: Any) -> ServiceSpec:
        """Read the configuration file form; ``AgentError`` says what is wrong."""
        if not isinstance(data, dict):
            raise AgentError("the service must be a JSON object")
        known = {"command", "workers", "listen", "stopTimeout", "readyTimeout", "notify"}
        unknown = set(data) - known - {"environment"}
        if unknown:
            raise AgentError(f"the service has unknown fields: {', '.join(sorted(unknown))}")
        if "command" not in data:
            raise AgentError("the service has no command")
        command, environment = data["command"], data.get("environment") or {}
        if not isinstance(command, list):
            raise AgentError("the service command must be a list of arguments")
        if not isinstance(environment, dict):
            raise AgentError("the service's environment must map names to values")
        return cls(
            command=tuple(command),
            workers=data.get("workers", 1),
            listen=data.get("listen"),
            stop_timeout=data.get("stopTimeout", 20.0),
            ready_timeout=data.get("readyTimeout", 60.0),
            notify=data.get("notify", True),
            environment=dict(environment),
        )


@dataclass(eq=False)
class _Worker:
    """One top-level worker process."""

    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells this process from a later one with its pid
    python: str
    started: float  # time.monotonic() when started or adopted
    spawned: bool  # a child of this process, so it can be waited for; else adopted, so polled
    ready: bool = False
    probation: bool = False  # started by a rolling restart and not ready yet
    retiring: bool = False  # being stopped
    exited: bool = False
    code: int | None = None  # exit code (negative: killed by that signal); None if unknown

    def record(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "startTime": self.start_time,
            "python": self.python,
            "retiring": self.retiring,
        }


class Supervisor:
    """Starts, watches, restarts and stops the service's workers.

    ``run_dir`` holds the workers' control sockets and the notify socket;
    ``package_path`` is the hotpatch new workers apply at start-up (it may not
    exist); ``record`` is where the running workers are written down for the next
    agent; workers' output is appended to ``log_file``.
    """

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        run_dir: Path,
        package_path: Path,
        record: Path,
        log_file: Path,
    ) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.package_path = package_path
        self.record = record
        self.log_file = log_file
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._python: Path | None = None
        self._listener: socket.socket | None = None
        self._notify: socket.socket | None = None
        self._notify_address = ""
        self._notify_path: Path | None = None
        self._restarts = 0
        self._quick_exits = 0
        self._not_before = 0.0
        self._rolling = False
        self._gone: list[int] = []  # pids of exited workers not replaced yet

    # --- life cycle ------------------------------------------------------------------------

    def start(self, python: Path) -> None:
        """Adopt the live workers the record lists, then start new ones up to ``spec.workers``.

        New workers run on ``python``'s environment. Waits (up to ``ready_timeout``)
        for them to become ready; one that does not is logged and left to ``check``,
        and so is a worker that cannot be started at all (the port is taken, say):
        a broken service must not stop the agent that can fix it. ``RuntimeError``
        if already started.
        """
        with self._lock:
            if self._python is not None:
                raise RuntimeError("the supervisor is already started")
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.run_dir, 0o700)
            self._open_notify()
            self._python = python
            adopted = self._adopt()
            retire = [w for w in adopted if w.retiring]
            keep = [w for w in adopted if not w.retiring]
            retire += keep[self.spec.workers :]
            for worker in retire:
                worker.retiring = True
            fresh = []
            for _ in range(self.spec.workers - len(keep)):
                try:
                    fresh.append(self._spawn(python))
                except AgentError as exc:
                    self._quick_exits += 1
                    log.error("%s; trying again soon", exc)
                    break
            self._save()
        if retire:
            log.info("stopping %d surplus worker(s): %s", len(retire), [w.pid for w in retire])
            self._terminate(retire)
            with self._lock:
                self._workers = [w for w in self._workers if w not in retire]
                self._save()
        late = self._await_ready(fresh, self.spec.ready_timeout)
        for worker in late:
            log.warning("worker %d did not become ready: %s", worker.pid, self._why(worker))

    def check(self) -> list[dict[str, Any]]:
        """Reap workers that exited and start their replacements; what happened, as events.

        A replacement waits out the crash-loop backoff. Events are
        ``{"event": "exited", "pid", "code", "seconds"}`` (``code`` is None for an
        adopted worker, whose status cannot be known), ``{"event": "backoff",
        "seconds"}``, ``{"event": "started", "pid", "replaces"}`` and ``{"event":
        "failed", "error", "seconds"}`` when a replacement cannot be started.
        """
        events: list[dict[str, Any]] = []
        with self._lock:
            if self._python is None:
                return events
            self._drain_notify()
            now = time.monotonic()
            gone = self._gone
            for worker in list(self._workers):
                if worker.retiring or worker.probation or not self._exited(worker):
                    continue
                self._workers.remove(worker)
                _end_group(worker.pid)
                gone.append(worker.pid)
                lived = now - worker.started
                events.append(
                    {
                        "event": "exited",
                        "pid": worker.pid,
                        "code": worker.code,
                        "seconds": round(lived, 3),
                    }
                )
                log.warning(
                    "worker %d exited (%s) after %.1f s; it will be replaced",
                    worker.pid,
                    _describe(worker.code),
                    lived,
                )
                self._quick_exits = self._quick_exits + 1 if lived < QUICK_EXIT else 0
                if self._quick_exits > 1:
                    delay = _backoff(self._quick_exits)
                    self._not_before = now + delay
                    events.append({"event": "backoff", "seconds": delay})
                    log.warning("workers keep exiting; next start in %.0f s", delay)
            missing = self.spec.workers - sum(1 for w in self._workers if not w.retiring)
            if missing > 0 and now >= self._not_before:
                for _ in range(missing):
                    try:
                        worker = self._spawn(self._python)
                    except AgentError as exc:
                        self._quick_exits += 1
                        delay = _backoff(self._quick_exits)
                        self._not_before = now + delay
                        events.append({"event": "failed", "error": str(exc), "seconds": delay})
                        log.error("%s; trying again in %.0f s", exc, delay)
                        break
                    self._restarts += 1
                    replaces = gone.pop(0) if gone else None
                    events.append({"event": "started", "pid": worker.pid, "replaces": replaces})
                    log.info("started worker %d (replacing %s)", worker.pid, replaces)
            elif missing <= 0:
                gone.clear()
            if events:
                try:
                    self._save()
                except OSError as exc:  # the service matters more than its record
                    log.error("cannot record the workers in %s: %s", self.record, exc)
        return events

    def pids(self) -> list[int]:
        """The top-level workers' pids (a pre-forking worker's children are not listed)."""
        with self._lock:
            return sorted(w.pid for w in self._workers if not w.exited)

    def liveness(self) -> dict[str, Any]:
        """``{"expected", "alive", "restarts", "pids"}`` for the health signal."""
        with self._lock:
            alive = [
                w.pid
                for w in self._workers
                if not w.retiring and not w.exited and start_time(w.pid) == w.start_time
            ]
            return {
                "expected": self.spec.workers,
                "alive": len(alive),
                "restarts": self._restarts,
                "pids": sorted(alive),
            }

    def rolling_restart(
        self, python: Path, progress: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Replace every worker with one on ``python``, one at a time, without a pause in service.

        For each old worker: start a new one, wait until it is ready, then stop the
        old one gracefully. Returns ``[{"old", "new", "seconds"}]`` (also passed to
        ``progress`` as each completes). ``AgentError`` if a new worker does not
        become ready: it is stopped, and the old workers not yet replaced keep
        serving. ``RuntimeError`` if not started.
        """
        with self._lock:
            if self._python is None:
                raise RuntimeError("the supervisor is not started")
            if self._rolling:
                raise AgentError("a rolling restart of the service is already running")
            self._rolling = True
            previous, self._python = self._python, python
            old = [w for w in self._workers if not w.retiring and not w.probation]
        done: list[dict[str, Any]] = []
        try:
            for worker in old:
                with self._lock:
                    if worker not in self._workers or self._exited(worker):
                        continue  # it died meanwhile and check() replaced it on ``python``
                    began = time.monotonic()
                    new = self._spawn(python, probation=True)
                    self._save()
                if self._await_ready([new], self.spec.ready_timeout):
                    reason = self._why(new)
                    self._terminate([new])
                    with self._lock:
                        self._workers.remove(new)
                        self._save()
                    raise AgentError(
                        f"a new worker on {python} did not become ready within "
                        f"{self.spec.ready_timeout:g} s ({reason}); "
                        "the workers not yet restarted keep serving"
                    )
                with self._lock:
                    new.probation = False
                    worker.retiring = True
                    self._save()
                self._terminate([worker])
                with self._lock:
                    with contextlib.suppress(ValueError):
                        self._workers.remove(worker)
                    self._save()
                event = {
                    "old": worker.pid,
                    "new": new.pid,
                    "seconds": round(time.monotonic() - began, 3),
                }
                log.info("worker %d replaced by %d on %s", worker.pid, new.pid, python)
                done.append(event)
                if progress is not None:
                    progress(event)
        except BaseException:
            with self._lock:
                self._python = previous
            raise
        finally:
            with self._lock:
                self._rolling = False
        return done

    def stop(self) -> None:
        """Stop every worker gracefully (``SIGKILL`` after ``stop_timeout``) and forget them.

        Before ``start``, the workers the record lists are the ones stopped.
        """
        with self._lock:
            if self._python is None:
                self._workers = self._adopt()
            workers = list(self._workers)
            for worker in workers:
                worker.retiring = True
            self._save()
        self._terminate(workers)
        with self._lock:
            self._workers = [w for w in self._workers if w not in workers]
            self._save()
            self._close()
            self._python = None

    def detach(self) -> None:
        """Forget the workers but leave them running, for the next agent to adopt."""
        with self._lock:
            if self._python is not None:
                self._save()
            self._workers = []
            self._close()
            self._python = None

    # --- workers ---------------------------------------------------------------------------

    def _spawn(self, python: Path, *, probation: bool = False) -> _Worker:
        """Start one worker on ``python``'s environment (lock held)."""
        argv = [arg.replace(PYTHON_TOKEN, str(python)) for arg in self.spec.command]
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            output = os.open(self.log_file, flags, 0o600)
        except OSError as exc:
            raise AgentError(f"cannot open the service log {self.log_file}: {exc}") from exc
        try:
            actions: list[tuple[Any, ...]] = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, output, 1),
                (os.POSIX_SPAWN_DUP2, output, 2),
            ]
            listener = self._listening()
            if listener is not None:
                actions.append((os.POSIX_SPAWN_DUP2, listener.fileno(), _listener.LISTEN_FD))
            pid = os.posix_spawn(
                _SHELL,
                [_SHELL, "-c", _WRAPPER, "sh", *argv],
                self._environment(python),
                file_actions=actions,
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM),
            )
        except OSError as exc:
            raise AgentError(f"cannot start the service command {argv[0]!r}: {exc}") from exc
        finally:
            os.close(output)
        began = start_time(pid) or 0  # 0 only if it died already; check() reaps it
        worker = _Worker(pid, began, str(python), time.monotonic(), True, probation=probation)
        self._workers.append(worker)
        log.info("started worker %d: %s", pid, " ".join(argv))
        return worker

    def _listening(self) -> socket.socket | None:
        """The socket new workers serve, found or bound on first use (lock held).

        Next to adopted workers it is the socket they accept on, taken back from
        them, so the old workers' last stop resets no queued connection. Only when
        that cannot be done is a second ``SO_REUSEPORT`` socket bound, and only when
        a worker is about to get it: one that nobody accepts on would swallow the
        share of connections the kernel gives it.
        """
        if self._listener is None and self.spec.listen is not None:
            host, port = parse_listen(self.spec.listen)
            adopted = [
                (w.pid, w.start_time) for w in self._workers if not w.spawned and not w.exited
            ]
            if adopted:
                self._listener = _listener.take_back(adopted, host, port)
            if self._listener is None:
                self._listener = _listener.bind(host, port)
        return self._listener

    def _environment(self, python: Path) -> dict[str, str]:
        """The workers' environment: the agent's, pointed at ``python``'s environment."""
        env_dir = Path(os.path.abspath(python)).parent.parent
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _SET_HERE and k not in ("PYTHONHOME", "VIRTUAL_ENV")
        }
        env["PYHOTPATCH"] = "1"
        env["PYHOTPATCH_RUN_DIR"] = str(self.run_dir)
        env["PYHOTPATCH_PACKAGE"] = str(self.package_path)
        if (env_dir / "pyvenv.cfg").exists():
            env["VIRTUAL_ENV"] = str(env_dir)
        env["PATH"] = os.pathsep.join([str(env_dir / "bin"), env.get("PATH", os.defpath)])
        env.update(self.spec.environment)
        env["NOTIFY_SOCKET"] = self._notify_address
        if self._listener is not None:
            env["LISTEN_FDS"] = "1"
            env["LISTEN_FDNAMES"] = "http"
        return env

    def _adopt(self) -> list[_Worker]:
        """Take over the live workers the record lists (lock held)."""
        try:
            data = read_json(self.record, {})
        except ValueError as exc:
            log.error("ignoring %s, which is not JSON: %s", self.record, exc)
            data = {}
        entries = data.get("workers") if isinstance(data, dict) else None
        adopted = []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            pid, began, python = entry.get("pid"), entry.get("startTime"), entry.get("python")
            if not (isinstance(pid, int) and pid > 1 and isinstance(began, int)):
                continue
            if start_time(pid) != began:
                log.info("worker %d in %s is gone", pid, self.record)
                continue
            worker = _Worker(
                pid,
                began,
                str(python),
                time.monotonic(),
                False,
                ready=True,
                retiring=entry.get("retiring") is True,
            )
            self._workers.append(worker)
            adopted.append(worker)
            log.info("adopted worker %d", pid)
        return adopted

    def _exited(self, worker: _Worker) -> bool:
        """Whether ``worker`` has exited, reaping it if it is a child (lock held)."""
        if worker.exited:
            return True
        if worker.spawned:
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, None
            if pid == 0:
                return False
            worker.code = os.waitstatus_to_exitcode(status) if status is not None else None
        elif start_time(worker.pid) == worker.start_time:
            return False
        worker.exited = True
        return True

    def _signal(self, worker: _Worker, signum: int, *, group: bool = False) -> None:
        """Send ``signum`` to a worker (and its process group) if it is still that process."""
        with self._lock:
            if self._exited(worker):
                return
            if not worker.spawned and start_time(worker.pid) != worker.start_time:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group and os.getpgid(worker.pid) == worker.pid:
                    os.killpg(worker.pid, signum)
                else:
                    os.kill(worker.pid, signum)

    def _terminate(self, workers: list[_Worker]) -> None:
        """Stop ``workers`` gracefully; ``SIGKILL`` the ones still running after ``stop_timeout``."""
        for worker in workers:
            self._signal(worker, signal.SIGTERM)
        if self._wait_exit(workers, self.spec.stop_timeout):
            return
        for worker in workers:
            if not worker.exited:
                log.warning(
                    "worker %d did not stop within %g s; killing it",
                    worker.pid,
                    self.spec.stop_timeout,
                )
                self._signal(worker, signal.SIGKILL, group=True)
        self._wait_exit(workers, 10.0)

    def _wait_exit(self, workers: list[_Worker], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if all(self._exited(w) for w in workers):
                    for worker in workers:
                        _end_group(worker.pid)
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # --- readiness -------------------------------------------------------------------------

    def _await_ready(self, workers: list[_Worker], timeout: float) -> list[_Worker]:
        """Wait until every worker is ready; the ones that exited or ran out of time."""
        deadline = time.monotonic() + timeout
        pending, failed = list(workers), []
        while pending:
            with self._lock:
                self._drain_notify()
                for worker in list(pending):
                    if worker.ready:
                        pending.remove(worker)
                    elif self._exited(worker):
                        pending.remove(worker)
                        failed.append(worker)
            if not self.spec.notify:
                for worker in list(pending):
                    if self._ping(worker):
                        worker.ready = True
                        pending.remove(worker)
            if not pending:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._wait_notify(min(left, 0.1))
        return failed + pending

    def _ping(self, worker: _Worker) -> bool:
        try:
            client.call(worker.pid, {"op": "ping"}, self.run_dir, timeout=2.0)
        except (HotpatchError, OSError):
            return False
        return True

    def _open_notify(self) -> None:
        """Listen for ``sd_notify`` datagrams, learning each sender's pid (lock held)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        path = self.run_dir / "notify.sock"
        if len(os.fsencode(path)) <= _SOCKADDR_UN_MAX:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            sock.bind(str(path))
            os.chmod(path, 0o600)
            self._notify_path, self._notify_address = path, str(path)
        else:  # too long a path: an abstract name; senders are still checked by their pid
            name = f"pyhotpatch-notify-{os.getpid()}-{secrets.token_hex(8)}"
            sock.bind("\0" + name)
            self._notify_path, self._notify_address = None, "@" + name
        sock.setblocking(False)
        self._notify = sock

    def _drain_notify(self) -> None:
        """Read every waiting notification; mark workers that said ``READY=1`` (lock held)."""
        sock = self._notify
        if sock is None:
            return
        by_pid = {w.pid: w for w in self._workers}
        while True:
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(
                    4096, socket.CMSG_SPACE(_CREDENTIALS.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket failed: %s", exc)
                return
            for level, kind, payload in ancillary:
                if level != socket.SOL_SOCKET or kind != socket.SCM_CREDENTIALS:
                    continue
                pid, uid, _gid = _CREDENTIALS.unpack(payload[: _CREDENTIALS.size])
                worker = by_pid.get(pid)
                ready = b"READY=1" in data.split(b"\n")
                if worker is not None and uid in (os.getuid(), 0) and ready:
                    worker.ready = True

    def _wait_notify(self, timeout: float) -> None:
        sock = self._notify
        if sock is None:
            time.sleep(timeout)
            return
        with contextlib.suppress(OSError, ValueError):
            select.select([sock], [], [], timeout)

    def _why(self, worker: _Worker) -> str:
        """Why a worker is not ready, with the last line of the service log."""
        with self._lock:
            exited = self._exited(worker)
        reason = f"exited ({_describe(worker.code)})" if exited else "not ready in time"
        last = _last_line(self.log_file)
        return f"{reason}; the service log ends: {last!r}" if last else reason

    # --- record and sockets ----------------------------------------------------------------

    def _save(self) -> None:
        """Write the running workers down for the next agent (lock held)."""
        workers = [w.record() for w in self._workers if not w.exited]
        write_json(self.record, {"listen": self.spec.listen, "workers": workers})

    def _close(self) -> None:
        """Close the listening and notify sockets (lock held); workers keep their copies."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._notify_path.unlink()
            self._notify_path = None


def _end_group(pid: int) -> None:
    """Ask what is left of a worker's process group (its session) to stop.

    A process group's id is never given to a new process while any member lives,
    so this reaches only the exited worker's own descendants.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def _backoff(quick_exits: int) -> float:
    """Seconds to wait after the ``quick_exits``-th exit in a row soon after a start."""
    return 0.0 if quick_exits < 2 else min(BACKOFF_CAP, 2.0 ** (quick_exits - 2))


def _describe(code: int | None) -> str:
    if code is None:
        return "status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""
