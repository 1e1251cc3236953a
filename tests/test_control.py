"""The control socket of real enabled processes: files, apply/revert/status, bad input, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from procs.harness import (
    BASE,
    FIXED1,
    FIXED2,
    PROBE,
    Big,
    Children,
    Demo,
    b64,
    build_big,
    decode_reply,
    frame,
    hotpatch,
    json_frame,
    raw_exchange,
)
from pyhotpatch import BaselineMismatch, BusyError, NotActive, PackageError, TransportError
from pyhotpatch.runtime import client


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Big:
    return build_big(tmp_path_factory.mktemp("big"))


@pytest.fixture
def local_kids() -> Iterator[Children]:
    """Children of this interpreter, for tests of the client side only."""
    children = Children(sys.executable)
    yield children
    children.close()


def probe(child: Any) -> dict[str, Any]:
    result: dict[str, Any] = child.ask(PROBE)
    return result


# --------------------------------------------------------------------------- the socket itself


def test_socket_is_private_and_answers_status(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    sock = kids.socket(child.pid)
    info = os.stat(sock)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(os.stat(kids.run_dir).st_mode) == 0o700

    status = client.status(child.pid, kids.run_dir)
    assert status["pid"] == child.pid
    assert status["active"] is None
    assert status["transition"] == {"complete": True, "threads": [], "suspended": 0}
    assert status["python"] == child.ask("import platform; result = platform.python_version()")
    assert client.call(child.pid, {"op": "ping"}, kids.run_dir) == {"pid": child.pid}

    local = child.ask("import pyhotpatch; result = pyhotpatch.status()")
    assert local["enabled"] is True
    assert local["socket"] == str(sock)


def test_loose_run_dir_is_tightened(kids: Children) -> None:
    kids.run_dir.mkdir(mode=0o755)
    os.chmod(kids.run_dir, 0o755)
    child = kids.repl()
    assert stat.S_IMODE(os.stat(kids.run_dir).st_mode) == 0o700
    assert client.status(child.pid, kids.run_dir)["pid"] == child.pid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the run dir away")
def test_run_dir_of_another_user_is_refused(kids: Children) -> None:
    kids.run_dir.mkdir(mode=0o700)
    os.chown(kids.run_dir, 65534, 65534)
    child = kids.repl(enable=False)
    with pytest.raises(Exception) as info:
        child.ask("import pyhotpatch; pyhotpatch.enable()")
    assert getattr(info.value, "error", None) == "TransportError", info.value
    assert "another user" in str(info.value)
    assert list(kids.run_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_peer_of_another_user_is_turned_away(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    sock = kids.socket(child.pid)
    # Open the way on purpose, so that only the peer-credential check stands between them.
    os.chmod(kids.base, 0o711)
    os.chmod(kids.run_dir, 0o711)
    os.chmod(sock, 0o666)
    request = json_frame({"op": "apply", "package": b64(demo.data("kb1"))})
    code = textwrap.dedent(
        f"""
        import os, socket, struct, sys
        os.setgid(65534)
        os.setuid(65534)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect({str(sock)!r})
        try:
            s.sendall({request!r})
        except OSError:
            pass
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        sys.stdout.write(data[4:].decode())
        """
    )
    done = subprocess.run(
        [kids.python, "-S", "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["ok"] is False
    assert reply["error"]["type"] == "PermissionDenied"
    assert probe(child) == BASE
    assert client.status(child.pid, kids.run_dir)["active"] is None


def test_socket_removed_when_process_exits(kids: Children) -> None:
    child = kids.repl()
    sock = kids.socket(child.pid)
    assert sock.exists()
    assert child.close() == 0
    assert not sock.exists()


# --------------------------------------------------------------------------- apply, revert


def test_apply_status_revert_round_trip(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask(
        "import phdemo_target\n"
        "from phdemo_target import validate as alias\n"
        "routes = {'check': phdemo_target.validate}\n"
    )
    assert probe(child) == BASE

    report = client.apply(child.pid, str(demo.kb1), kids.run_dir)
    assert report["id"] == "KB1"
    assert report["already_active"] is False
    assert report["replaced"] is None
    assert report["modules"] == ["phdemo_target"]
    assert report["pending_modules"] == ["phdemo_pkg.rules"]
    assert report["functions"] == 5
    assert probe(child) == FIXED1
    # References taken before the patch see the fix too.
    assert child.ask("result = [alias('../x'), routes['check']('../x')]") == [False, False]

    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["id"] == "KB1"
    assert status["active"]["digest"] == hashlib.sha256(demo.data("kb1")).hexdigest()
    assert status["active"]["pending_modules"] == ["phdemo_pkg.rules"]
    assert status["active"]["targets"] == [
        {"distribution": "phdemo", "baseline_version": "1.0", "fixed_version": "1.1"}
    ]

    again = client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert again["already_active"] is True
    assert probe(child) == FIXED1

    assert client.revert(child.pid, "KB1", kids.run_dir)["reverted"] is True
    assert probe(child) == BASE
    assert child.ask("result = [alias('../x'), routes['check']('../x')]") == [True, True]
    assert client.status(child.pid, kids.run_dir)["active"] is None
    with pytest.raises(NotActive):
        client.revert(child.pid, "KB1", kids.run_dir)


def test_cumulative_package_replaces_active_one(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    report = client.apply(child.pid, demo.data("kb2"), kids.run_dir)
    assert report["id"] == "KB2"
    assert report["replaced"] == "KB1"
    assert probe(child) == FIXED2
    assert client.status(child.pid, kids.run_dir)["active"]["id"] == "KB2"
    with pytest.raises(NotActive):
        client.revert(child.pid, "KB1", kids.run_dir)
    assert probe(child) == FIXED2
    client.revert(child.pid, "KB2", kids.run_dir)
    assert probe(child) == BASE
    # And back up again, straight to the cumulative package.
    client.apply(child.pid, demo.data("kb2"), kids.run_dir)
    assert probe(child) == FIXED2


def test_wrong_baseline_is_refused_and_changes_nothing(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    with pytest.raises(BaselineMismatch) as info:
        client.apply(child.pid, demo.data("wrong"), kids.run_dir)
    assert "phdemo_target.validate" in str(info.value)
    assert probe(child) == BASE
    assert client.status(child.pid, kids.run_dir)["active"] is None

    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    with pytest.raises(BaselineMismatch):
        client.apply(child.pid, demo.data("wrong"), kids.run_dir)
    assert probe(child) == FIXED1
    assert client.status(child.pid, kids.run_dir)["active"]["id"] == "KB1"


def test_status_of_process_without_socket_is_transport_error(kids: Children) -> None:
    child = kids.repl(enable=False)
    with pytest.raises(TransportError):
        client.status(child.pid, kids.run_dir)


# --------------------------------------------------------------------------- hostile input


def _random_bytes() -> bytes:
    return random.Random(20240601).randbytes(512)


GARBAGE: dict[str, tuple[bytes, str | None]] = {
    # name: (bytes sent, expected error type; None = an error reply or a closed connection)
    "empty": (b"", None),
    "random-bytes": (_random_bytes(), None),
    "truncated-header": (b"\x00\x00", "BadRequest"),
    "huge-length": (b"\xff\xff\xff\xff" + b"x" * 64, "BadRequest"),
    "just-over-limit": (struct.pack(">I", 32 * 1024 * 1024 + 1), "BadRequest"),
    "truncated-frame": (struct.pack(">I", 1000) + b'{"op": "sta', "BadRequest"),
    "not-utf8": (frame(b"\xff\xfe\xfd"), "BadRequest"),
    "not-json": (frame(b"hello there"), "BadRequest"),
    "json-array": (json_frame([1, 2, 3]), "BadRequest"),
    "json-string": (json_frame("status"), "BadRequest"),
    "deep-nesting": (frame(b"[" * 200_000 + b"]" * 200_000), "BadRequest"),
    "missing-op": (json_frame({"package": "x"}), "BadRequest"),
    "unknown-op": (json_frame({"op": "reboot"}), "BadRequest"),
    "op-not-string": (json_frame({"op": ["status"]}), "BadRequest"),
    "bad-base64": (json_frame({"op": "apply", "package": "not base64 at all!"}), "BadRequest"),
    "package-not-string": (json_frame({"op": "apply", "package": 12}), "BadRequest"),
    "non-package-blob": (
        json_frame({"op": "apply", "package": b64(b"PK\x03\x04 this is no zip")}),
        "PackageError",
    ),
    "empty-package": (json_frame({"op": "apply", "package": ""}), "PackageError"),
    "revert-without-id": (json_frame({"op": "revert"}), "BadRequest"),
    "revert-unknown-id": (json_frame({"op": "revert", "id": "KB404"}), "NotActive"),
}


def test_garbage_on_socket_gets_error_and_process_keeps_serving(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    for case, (payload, expected) in GARBAGE.items():
        received = raw_exchange(kids.socket(child.pid), payload)
        if expected is not None or received != b"":  # b"": the process hung up, also fine
            reply = decode_reply(received)
            assert reply["ok"] is False, (case, reply)
            assert isinstance(reply["error"]["message"], str), (case, reply)
            assert reply["error"]["message"], (case, reply)
            if expected is not None:
                assert reply["error"]["type"] == expected, (case, reply)
        assert child.alive(), case
        status = client.status(child.pid, kids.run_dir)
        assert status["pid"] == child.pid, case
        assert status["active"]["id"] == "KB1", case
        assert probe(child) == FIXED1, case
    assert client.revert(child.pid, "KB1", kids.run_dir)["reverted"] is True
    assert probe(child) == BASE


def test_client_errors_arrive_as_hotpatch_errors(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    with pytest.raises(PackageError):
        client.apply(child.pid, b"definitely not a package", kids.run_dir)
    with pytest.raises(NotActive):
        client.revert(child.pid, "KB1", kids.run_dir)
    assert client.status(child.pid, kids.run_dir)["active"] is None


def test_idle_connection_then_status(kids: Children) -> None:
    import socket

    child = kids.repl()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(kids.socket(child.pid)))
    time.sleep(0.3)
    sock.close()
    assert client.status(child.pid, kids.run_dir)["pid"] == child.pid


# --------------------------------------------------------------------------- concurrency

_BUSY_SETUP = """
import sys, threading, time
import phbig_mod
from pyhotpatch.runtime._engine import ENGINE
from pyhotpatch.package import read_package
from pyhotpatch.errors import BusyError

big = read_package({big!r})

def inside_apply(thread):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_apply":
            return True
        frame = frame.f_back
    return False

def start_big_apply():
    # start the big apply on a thread and hold it just before its swap until released
    box = {{}}
    held, release = threading.Event(), threading.Event()
    def hold(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_commit" and not held.is_set():
            held.set()
            release.wait(20)
    def run():
        sys.setprofile(hold)
        try:
            box["report"] = ENGINE.apply(big)
        except Exception as exc:
            box["error"] = repr(exc)
        finally:
            sys.setprofile(None)
    worker = threading.Thread(target=run, name="big-apply")
    worker.release = release
    worker.start()
    if not held.wait(20) or not inside_apply(worker):
        raise AssertionError("the big apply was not seen running: " + repr(box))
    return worker, box

def patched_count():
    return sum(getattr(phbig_mod, "f%d" % i)(0) >= 1_000_000 for i in range({count}))
"""


def test_two_threads_apply_at_once_one_is_busy(kids: Children, big: Big) -> None:
    child = kids.repl([big.old])
    child.ask(_BUSY_SETUP.format(big=str(big.package), count=big.count))
    outcomes = child.ask(
        """
        barrier = threading.Barrier(2)
        outcomes = []
        def go():
            barrier.wait()
            try:
                outcomes.append(["ok", ENGINE.apply(big)["functions"]])
            except BusyError as exc:
                outcomes.append(["busy", str(exc)])
        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result = sorted(outcomes)
        """
    )
    assert [o[0] for o in outcomes] == ["busy", "ok"], outcomes
    assert outcomes[1][1] == big.count
    assert child.ask("result = patched_count()") == big.count
    status = client.status(child.pid, kids.run_dir)
    assert status["pid"] == child.pid
    assert status["active"]["id"] == "KBBIG"
    assert status["active"]["functions"] == big.count


def test_revert_apply_and_socket_during_apply_are_busy(
    kids: Children, big: Big, demo: Demo
) -> None:
    child = kids.repl([big.old, demo.old])
    child.ask(_BUSY_SETUP.format(big=str(big.package), count=big.count))
    child.ask("import phdemo_target")
    seen = child.ask(
        """
        worker, box = start_big_apply()
        seen = []
        for action in (lambda: ENGINE.revert("KBBIG"), lambda: ENGINE.apply(big)):
            try:
                action()
                seen.append("done")
            except BusyError:
                seen.append("busy")
        still_running = worker.is_alive()
        status = ENGINE.status()
        worker.release.set()
        worker.join()
        result = [seen, still_running, status["pid"], box.get("error")]
        """
    )
    assert seen[0] == ["busy", "busy"], seen
    assert seen[1] is True
    assert seen[3] is None
    assert child.ask("result = patched_count()") == big.count

    # Now the same through the socket: an apply arriving while one runs gets BusyError.
    client.revert(child.pid, "KBBIG", kids.run_dir)
    assert child.ask("result = patched_count()") == 0
    child.ask("worker, box = start_big_apply()")
    with pytest.raises(BusyError):
        client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    child.ask("worker.release.set(); worker.join(); result = box")
    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["id"] == "KBBIG"
    assert child.ask("result = patched_count()") == big.count
    assert probe(child) == BASE


def test_concurrent_socket_applies_of_one_package(kids: Children, big: Big) -> None:
    child = kids.repl([big.old])
    child.ask(_BUSY_SETUP.format(big=str(big.package), count=big.count))
    data = big.package.read_bytes()
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        try:
            results.append(client.apply(child.pid, data, kids.run_dir))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2
    fresh = [r for r in results if isinstance(r, dict) and r.get("already_active") is False]
    others = [r for r in results if r not in fresh]
    assert len(fresh) == 1, results
    assert fresh[0]["functions"] == big.count
    # The other one either waited its turn (already active) or was turned away as busy.
    assert isinstance(others[0], BusyError) or others[0].get("already_active") is True, others
    assert child.ask("result = patched_count()") == big.count
    assert client.status(child.pid, kids.run_dir)["active"]["functions"] == big.count


def test_concurrent_socket_applies_of_two_packages_end_consistent(
    kids: Children, demo: Demo
) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def go(name: str) -> None:
        barrier.wait()
        try:
            results[name] = client.apply(child.pid, demo.data(name), kids.run_dir)
        except Exception as exc:
            results[name] = exc

    threads = [threading.Thread(target=go, args=(n,)) for n in ("kb1", "kb2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    active = client.status(child.pid, kids.run_dir)["active"]["id"]
    assert active in ("KB1", "KB2")
    assert probe(child) == (FIXED1 if active == "KB1" else FIXED2)
    winner = results[active.lower()]
    assert isinstance(winner, dict) and winner["id"] == active, results
    loser = results["kb2" if active == "KB1" else "kb1"]
    if isinstance(loser, dict):
        # Served one after the other: the last one replaced the first.
        assert winner["replaced"] == loser["id"], results
    else:
        assert isinstance(loser, BusyError), results


# --------------------------------------------------------------------------- discovery


def test_processes_lists_live_pids_and_removes_stale_sockets(kids: Children) -> None:
    alive = kids.repl()
    dead = kids.repl()
    other = kids.run_dir / "notes.sock"
    other.touch()
    dead.proc.kill()
    dead.proc.wait(10)
    assert kids.socket(dead.pid).exists()  # SIGKILL leaves no time to clean up

    with pytest.raises(TransportError):
        client.status(dead.pid, kids.run_dir)
    assert client.processes(kids.run_dir) == [alive.pid]
    assert not kids.socket(dead.pid).exists()
    assert kids.socket(alive.pid).exists()
    assert other.exists()
    assert client.status(alive.pid, kids.run_dir)["pid"] == alive.pid

    alive.close()
    assert client.processes(kids.run_dir) == []


def test_processes_of_missing_run_dir_is_empty(kids: Children) -> None:
    assert client.processes(kids.run_dir / "nowhere") == []


# --------------------------------------------------------------------------- the CLI


def test_cli_apply_ps_revert(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    env = kids.env()
    pid = str(child.pid)

    done = hotpatch(["apply", str(demo.kb1), "--pid", pid], env)
    assert done.returncode == 0, done.stderr
    assert f"pid {pid}: ok KB1 applied: 5 function(s)" in done.stdout
    assert probe(child) == FIXED1

    ps = hotpatch(["ps", "--json"], env)
    assert ps.returncode == 0, ps.stderr
    rows = {row["pid"]: row for row in json.loads(ps.stdout)}
    assert rows[child.pid]["active"]["id"] == "KB1"

    table = hotpatch(["ps"], env)
    assert table.returncode == 0, table.stderr
    assert any(pid in line and "KB1" in line for line in table.stdout.splitlines()), table.stdout

    again = hotpatch(["apply", str(demo.kb1), "--pid", pid, "--json"], env)
    assert again.returncode == 0, again.stderr
    [entry] = json.loads(again.stdout)
    assert entry["pid"] == child.pid and entry["ok"] is True
    assert entry["report"]["already_active"] is True

    rev = hotpatch(["revert", "KB1", "--pid", pid], env)
    assert rev.returncode == 0, rev.stderr
    assert f"pid {pid}: ok KB1 reverted" in rev.stdout
    assert probe(child) == BASE
    rows = {row["pid"]: row for row in json.loads(hotpatch(["ps", "--json"], env).stdout)}
    assert rows[child.pid]["active"] is None

    rev = hotpatch(["revert", "KB1", "--pid", pid], env)
    assert rev.returncode == 1
    assert "NotActive" in rev.stderr


def test_cli_apply_wrong_baseline_fails_with_one_line(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    done = hotpatch(["apply", str(demo.wrong), "--pid", str(child.pid)], kids.env())
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"pid {child.pid}: BaselineMismatch: "), lines[0]
    assert "validate" in lines[0]
    assert done.stdout.strip() == ""
    assert probe(child) == BASE
    assert client.status(child.pid, kids.run_dir)["active"] is None


def test_cli_apply_to_process_without_runtime_fails(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old], enable=False)
    done = hotpatch(["apply", str(demo.kb1), "--pid", str(child.pid)], kids.env())
    assert done.returncode == 1
    assert "TransportError" in done.stderr
    assert probe(child) == BASE


def test_cli_apply_all(kids: Children, demo: Demo) -> None:
    first = kids.repl([demo.old])
    second = kids.repl([demo.old])
    for child in (first, second):
        child.ask("import phdemo_target")
    done = hotpatch(["apply", str(demo.kb1), "--all", "--json"], kids.env())
    assert done.returncode == 0, done.stderr
    assert sorted(entry["pid"] for entry in json.loads(done.stdout)) == sorted(
        [first.pid, second.pid]
    )
    assert probe(first) == FIXED1
    assert probe(second) == FIXED1


def test_process_dying_mid_request_is_transport_error(local_kids: Children) -> None:
    kids = local_kids
    child = kids.repl()
    os.kill(child.pid, signal.SIGSTOP)  # it accepts nothing now; our send fills the buffer
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            client.apply(child.pid, b"x" * 4_000_000, kids.run_dir)
        except BaseException as exc:
            outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    child.proc.kill()
    child.proc.wait(10)
    sender.join(30)
    assert len(outcome) == 1
    assert isinstance(outcome[0], TransportError), repr(outcome[0])
