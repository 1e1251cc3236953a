"""The service supervisor, the demo worker and the health signal, with real processes.

Workers are ``python -m pyhotpatch.demo.worker`` on this interpreter, whose
environment has pyhotpatch and its ``.pth`` hook, so ``PYHOTPATCH=1`` gives every
worker a control socket. The demo app comes from its own wheel, unpacked onto
``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from loopback import Load, free_port, get, wait_for
from pyhotpatch.agent import _listener
from pyhotpatch.agent._health import ProbeSpec, health, probe
from pyhotpatch.agent._supervisor import ServiceSpec, Supervisor, start_time
from pyhotpatch.build import build
from pyhotpatch.demo.stack import demo_wheels
from pyhotpatch.errors import AgentError, NotHotpatchable
from pyhotpatch.runtime import client

PYTHON = Path(sys.executable)
WORKER = ("{python}", "-m", "pyhotpatch.demo.worker", "--app", "demoapp.web:handle")
TRAVERSAL = "/files?name=../secrets/token"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo app's wheels, and each unpacked as ``app-<version>`` beside them."""
    root = tmp_path_factory.mktemp("stack")
    wheels = demo_wheels(root / "wheels")
    found = {}
    for version, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root / f"app-{version}")
        found[version] = wheel
        found[f"app-{version}"] = root / f"app-{version}"
    return found


class Service:
    """A supervisor over a state directory, with the port its workers serve."""

    def __init__(self, state: Path, spec: ServiceSpec, port: int) -> None:
        self.state, self.spec, self.port = state, spec, port
        self.supervisor = self.fresh()

    def fresh(self) -> Supervisor:
        return Supervisor(
            self.spec,
            run_dir=self.state / "run",
            package_path=self.state / "active.hotpatch",
            record=self.state / "service.json",
            log_file=self.state / "logs" / "service.log",
        )

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    def processes(self) -> list[int]:
        return client.processes(self.run_dir)

    def log(self) -> str:
        path = self.state / "logs" / "service.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def services(tmp_path: Path, stack: dict[str, Path]) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(workers: int = 2, *, command: tuple[str, ...] = WORKER, **options: Any) -> Service:
        port = free_port()
        environment = {"PYTHONPATH": str(stack["app-1.0.0"]), **options.pop("environment", {})}
        spec = ServiceSpec(
            command=command,
            workers=workers,
            listen=f"127.0.0.1:{port}",
            stop_timeout=10.0,
            ready_timeout=30.0,
            environment=environment,
            **options,
        )
        service = Service(tmp_path / f"state{len(made)}", spec, port)
        made.append(service)
        return service

    yield make
    for service in made:
        service.supervisor.stop()
        for pid in service.processes():  # anything a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def until_replaced(supervisor: Supervisor, pid: int) -> list[dict[str, Any]]:
    """Run ``check()`` until worker ``pid`` has a replacement; every event it returned."""
    events: list[dict[str, Any]] = []

    def replaced() -> bool:
        events.extend(supervisor.check())
        return any(e["event"] == "started" and e["replaces"] == pid for e in events)

    wait_for(f"a replacement of worker {pid}", replaced)
    return events


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


# --- serving ---------------------------------------------------------------------------------


def test_workers_share_the_agents_port_and_every_process_has_a_control_socket(
    services: Callable[..., Service],
) -> None:
    service = services(2, command=(*WORKER, "--processes", "2"))
    service.supervisor.start(PYTHON)
    top = service.supervisor.pids()
    assert len(top) == 2
    # each worker forked one child; all four serve a control socket of their own
    everyone = set(top)
    for pid in top:
        everyone |= wait_for("a forked child", partial(children_of, pid))
    assert len(everyone) == 4
    wait_for("four control sockets", lambda: set(service.processes()) == everyone)
    for pid in everyone:
        assert client.status(pid, service.run_dir)["active"] is None
    # the workers were handed the agent's socket: they never bound a port themselves
    seen = {get(service.port, "/version")[1]["pid"] for _ in range(40)}
    assert seen <= everyone
    status, body = get(service.port, "/health")
    assert status == 200 and body["status"] == "ok" and body["pid"] in everyone
    assert get(service.port, "/version")[1]["version"] == "1.0.0"
    assert service.supervisor.liveness() == {
        "expected": 2,
        "alive": 2,
        "restarts": 0,
        "pids": top,
    }
    record = json.loads((service.state / "service.json").read_text())
    assert sorted(w["pid"] for w in record["workers"]) == top


def test_a_killed_worker_is_replaced_and_liveness_shows_the_gap(
    services: Callable[..., Service],
) -> None:
    service = services(2)
    supervisor = service.supervisor
    supervisor.start(PYTHON)
    victim, survivor = supervisor.pids()
    os.kill(victim, signal.SIGKILL)
    gap = wait_for(
        "the death to show", lambda: (now := supervisor.liveness())["alive"] == 1 and now
    )
    assert gap["pids"] == [survivor]
    assert health(gap, None)["status"] == "Unhealthy"

    events = until_replaced(supervisor, victim)
    assert {"event": "exited", "pid": victim, "code": -signal.SIGKILL} == {
        k: v for k, v in events[0].items() if k != "seconds"
    }
    started = next(e for e in events if e["event"] == "started")
    assert started["replaces"] == victim
    assert supervisor.pids() == sorted([survivor, started["pid"]])
    wait_for("the replacement serving", lambda: started["pid"] in service.processes())
    live = supervisor.liveness()
    assert live["alive"] == 2 and live["restarts"] == 1 and victim not in live["pids"]
    assert health(live, None)["status"] == "Healthy"


def test_a_crash_looping_worker_backs_off(services: Callable[..., Service]) -> None:
    service = services(1, command=("{python}", "-c", "raise SystemExit(3)"), notify=False)
    supervisor = service.supervisor
    supervisor.start(PYTHON)
    delays: list[float] = []

    def two_backoffs() -> bool:
        for event in supervisor.check():
            if event["event"] == "exited":
                assert event["code"] == 3
            if event["event"] == "backoff":
                delays.append(event["seconds"])
        return len(delays) >= 2

    wait_for("two backoffs", two_backoffs)
    assert delays[:2] == [1.0, 2.0]  # the first quick exit is restarted at once


# --- rolling restart -------------------------------------------------------------------------


def test_a_rolling_restart_replaces_every_worker_one_at_a_time_without_a_failed_request(
    services: Callable[..., Service],
) -> None:
    service = services(4)
    supervisor = service.supervisor
    supervisor.start(PYTHON)
    before = supervisor.pids()
    ready_counts: list[int] = []

    def progress(event: dict[str, Any]) -> None:
        # the old worker is gone only now, and its replacement already serves
        pids = supervisor.pids()
        assert event["old"] not in pids and event["new"] in pids
        assert event["new"] in service.processes()
        ready_counts.append(len(pids))

    stop = threading.Event()
    lowest = [4]

    def watch() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], supervisor.liveness()["alive"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    with Load(service.port) as load:
        watcher.start()
        events = supervisor.rolling_restart(PYTHON, progress)
        stop.set()
        watcher.join()
        wait_for("requests served by the new workers", lambda: load.pids & set(supervisor.pids()))
    assert load.failed == [] and load.ok > 0
    assert [e["old"] for e in events] == before
    after = supervisor.pids()
    assert set(after).isdisjoint(before) and len(after) == 4
    assert sorted(e["new"] for e in events) == after
    assert ready_counts == [4, 4, 4, 4]
    assert lowest[0] >= 4
    assert set(service.processes()) == set(after)


def test_a_rolling_restart_that_cannot_start_keeps_the_old_workers(
    services: Callable[..., Service], tmp_path: Path
) -> None:
    service = services(2)
    supervisor = service.supervisor
    supervisor.start(PYTHON)
    before = supervisor.pids()
    broken = tmp_path / "broken" / "bin" / "python"
    broken.parent.mkdir(parents=True)
    broken.write_text("#!/bin/sh\necho 'this interpreter is broken' >&2\nexit 7\n")
    broken.chmod(0o755)
    with pytest.raises(AgentError, match=r"did not become ready.*exit 7.*broken"):
        supervisor.rolling_restart(broken)
    assert supervisor.pids() == before
    assert get(service.port, "/health")[0] == 200
    assert supervisor.check() == []  # the old interpreter is still the one replacements use


# --- adoption and stopping -------------------------------------------------------------------


def test_a_new_supervisor_adopts_the_running_workers_and_can_add_to_them(
    services: Callable[..., Service],
) -> None:
    service = services(2)
    service.supervisor.start(PYTHON)
    before = service.supervisor.pids()
    service.supervisor.detach()
    assert all(start_time(pid) for pid in before)  # detaching stopped nothing
    assert get(service.port, "/health")[0] == 200

    service.supervisor = service.fresh()
    service.supervisor.start(PYTHON)
    assert service.supervisor.pids() == before
    assert service.supervisor.liveness()["alive"] == 2

    # an adopted worker cannot be waited for, but its death is still seen
    os.kill(before[0], signal.SIGKILL)
    events = until_replaced(service.supervisor, before[0])
    new = next(e["pid"] for e in events if e["event"] == "started")
    assert events[0]["event"] == "exited" and events[0]["code"] is None
    # the new worker serves the same port, beside the adopted one
    wait_for("the new worker's answer", lambda: get(service.port, "/version")[1]["pid"] == new)
    # and a reused pid is never adopted: the record keys workers by start time too
    record = json.loads((service.state / "service.json").read_text())
    assert {w["pid"] for w in record["workers"]} == {before[1], new}


def listening_socket_of(pid: int) -> str:
    """Which socket (``socket:[inode]``) a worker serves on fd 3."""
    return os.readlink(f"/proc/{pid}/fd/3")


def test_a_new_supervisor_gives_its_workers_the_socket_the_adopted_ones_accept_on(
    services: Callable[..., Service],
) -> None:
    service = services(2)
    service.supervisor.start(PYTHON)
    before = service.supervisor.pids()
    (shared,) = {listening_socket_of(pid) for pid in before}
    service.supervisor.detach()

    service.supervisor = service.fresh()
    service.supervisor.start(PYTHON)
    with Load(service.port) as load:
        service.supervisor.rolling_restart(PYTHON)
        after = set(service.supervisor.pids())
        wait_for("requests served by the new workers", lambda: load.pids & after)
    assert after.isdisjoint(before)
    # not a second SO_REUSEPORT socket, whose queue the old workers' last stop would reset
    assert {listening_socket_of(pid) for pid in after} == {shared}
    assert load.failed == [] and load.ok > 0


def test_the_listening_socket_is_taken_only_from_a_worker_that_listens_on_it() -> None:
    own = (os.getpid(), start_time(os.getpid()) or 0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        taken = _listener.take_back([own], "127.0.0.1", port)
        assert taken is not None
        with taken:
            assert os.fstat(taken.fileno()).st_ino == os.fstat(server.fileno()).st_ino
            assert taken.fileno() != 3
        assert _listener.take_back([own], "127.0.0.1", free_port()) is None
        assert _listener.take_back([(own[0], own[1] + 1)], "127.0.0.1", port) is None  # reused pid


def test_stop_before_start_stops_the_recorded_workers(services: Callable[..., Service]) -> None:
    service = services(2)
    service.supervisor.start(PYTHON)
    before = service.supervisor.pids()
    service.supervisor.detach()
    service.supervisor = service.fresh()
    service.supervisor.stop()  # an agent told to stop its service before it got to start
    assert all(start_time(pid) is None for pid in before)


def test_a_taken_port_leaves_the_agent_running_and_the_service_unhealthy(
    services: Callable[..., Service],
) -> None:
    service = services(1)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.port))
        squatter.listen()
        service.supervisor.start(PYTHON)  # does not raise: check() keeps trying
        live = service.supervisor.liveness()
        assert live["alive"] == 0 and health(live, None)["reasons"] == ["0 of 1 workers alive"]
        failed = wait_for(
            "a failed start",
            lambda: [e for e in service.supervisor.check() if e["event"] == "failed"],
        )
        assert f"cannot listen on 127.0.0.1:{service.port}" in failed[0]["error"]
    wait_for(
        "a worker, once the port is free",
        lambda: (service.supervisor.check(), service.supervisor.pids())[1],
        60,
    )
    wait_for("the service", lambda: get(service.port, "/health")[0] == 200)


def test_a_record_of_a_gone_process_is_not_adopted(
    services: Callable[..., Service], tmp_path: Path
) -> None:
    service = services(1)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (service.state).mkdir(parents=True, exist_ok=True)
        real = start_time(stranger.pid)
        assert real is not None
        (service.state / "service.json").write_text(
            json.dumps({"workers": [{"pid": stranger.pid, "startTime": real + 1, "python": "x"}]})
        )
        service.supervisor.start(PYTHON)
        assert stranger.pid not in service.supervisor.pids()
        assert len(service.supervisor.pids()) == 1
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_ends_every_worker_and_their_children(services: Callable[..., Service]) -> None:
    service = services(2, command=(*WORKER, "--processes", "2"))
    service.supervisor.start(PYTHON)
    wait_for("four processes", lambda: len(service.processes()) == 4)
    everyone = service.processes()
    service.supervisor.stop()
    assert all(start_time(pid) is None for pid in everyone)
    assert service.supervisor.pids() == []
    assert json.loads((service.state / "service.json").read_text())["workers"] == []
    with pytest.raises(OSError):
        get(service.port, "/health", timeout=2)


SLOW_APP = """
import os, time
from pathlib import Path

MARKS = Path(os.environ["MARKS"])


def handle(method, path, headers):
    if path == "/slow":
        (MARKS / "started").touch()
        while not (MARKS / "release").exists():
            time.sleep(0.01)
        return 200, {"slow": True}
    return 404, {}
"""


def test_the_worker_stops_gracefully_finishing_requests_in_flight(tmp_path: Path) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYHOTPATCH", "LISTEN_"))}
    env.update(PYTHONPATH=str(tmp_path), MARKS=str(marks))
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyhotpatch.demo.worker",
            "--app",
            "slowapp:handle",
            "--port",
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the worker", lambda: get(port, "/health")[0] == 200)
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        idle.request("GET", "/health")  # kept alive, then left idle
        assert idle.getresponse().read()
        answers: list[Any] = []

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("GET", "/slow")
                response = conn.getresponse()
                answers.append((response.status, response.getheader("Connection"), response.read()))
            finally:
                conn.close()

        thread = threading.Thread(target=slow)
        thread.start()
        wait_for("the slow request to start", (marks / "started").exists)
        worker.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                get(port, "/health", timeout=2)
            except ConnectionRefusedError:
                return True
            return False

        wait_for("the worker to stop accepting", refused)
        assert idle.sock is not None and idle.sock.recv(1) == b""  # the idle one is closed
        idle.close()
        assert worker.poll() is None  # still finishing the request in flight
        (marks / "release").touch()
        thread.join(30)
        assert answers == [(200, "close", b'{"slow": true}')]
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()


# --- the demo stack and a hotpatch -----------------------------------------------------------


def test_the_demo_fix_builds_as_a_hotpatch_and_the_layout_change_is_refused(
    stack: dict[str, Path],
) -> None:
    result = build(str(stack["1.0.0"]), str(stack["1.0.1"]), patch_id="KB0000101")
    actions = [a.name for m in result.manifest.targets[0].modules for a in m.actions]
    assert sorted(actions) == ["release", "resolve"]
    with pytest.raises(NotHotpatchable) as refused:
        build(str(stack["1.0.0"]), str(stack["1.1.0"]), patch_id="KB0000110")
    assert any("__slots__" in reason for reason in refused.value.reasons)


def test_a_hotpatch_fixes_every_running_worker_and_new_workers_start_patched(
    services: Callable[..., Service], stack: dict[str, Path]
) -> None:
    package = build(str(stack["1.0.0"]), str(stack["1.0.1"]), patch_id="KB0000101").to_bytes()
    service = services(1, command=(*WORKER, "--processes", "2"))
    supervisor = service.supervisor
    supervisor.start(PYTHON)
    everyone = wait_for("two processes", lambda: len(p := service.processes()) == 2 and p)
    assert get(service.port, TRAVERSAL) == (
        200,
        {"name": "../secrets/token", "body": "demo-api-token-7f3a9c\n"},
    )

    for pid in everyone:
        report = client.apply(pid, package, service.run_dir)
        assert report["id"] == "KB0000101"
    assert service.processes() == everyone  # nothing restarted
    for _ in range(20):  # whichever process answers
        status, body = get(service.port, TRAVERSAL)
        assert status == 403 and body["error"] == "Forbidden"
        assert get(service.port, "/version")[1]["version"] == "1.0.1"
    assert get(service.port, "/files?name=readme.txt")[0] == 200

    # a worker started after the install applies the installed package at start-up
    (service.state / "active.hotpatch").write_bytes(package)
    (old,) = supervisor.pids()
    os.kill(old, signal.SIGKILL)
    until_replaced(supervisor, old)
    fresh = wait_for(
        "only new processes",
        lambda: len(p := service.processes()) == 2 and set(p).isdisjoint(everyone) and p,
    )
    for pid in fresh:
        assert client.status(pid, service.run_dir)["active"]["id"] == "KB0000101"
    assert get(service.port, TRAVERSAL)[0] == 403


# --- health ----------------------------------------------------------------------------------


def test_probes_and_the_health_signal(services: Callable[..., Service]) -> None:
    service = services(1)
    service.supervisor.start(PYTHON)
    base = f"http://127.0.0.1:{service.port}"
    good = probe(ProbeSpec(url=f"{base}/health"))
    assert good["ok"] is True and "HTTP 200" in good["detail"]
    missing = probe(ProbeSpec(url=f"{base}/no-such-route"))
    assert missing["ok"] is False and "HTTP 404" in missing["detail"]
    closed = probe(ProbeSpec(url=f"http://127.0.0.1:{free_port()}/health", timeout=2))
    assert closed["ok"] is False and "ConnectError" in closed["detail"]
    assert probe(ProbeSpec(command=(sys.executable, "-c", "pass")))["ok"] is True
    failing = probe(ProbeSpec(command=(sys.executable, "-c", "import sys; sys.exit('db down')")))
    assert failing["ok"] is False and "exit 1: db down" in failing["detail"]
    slow = probe(
        ProbeSpec(command=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.5)
    )
    assert slow["ok"] is False and "still running" in slow["detail"]
    absent = probe(ProbeSpec(command=("/nonexistent/probe",)))
    assert absent["ok"] is False and "cannot run" in absent["detail"]

    live = service.supervisor.liveness()
    assert health(live, good) == {
        "status": "Healthy",
        "workers": live,
        "probe": good,
        "reasons": [],
    }
    sick = health(live, missing)
    assert sick["status"] == "Unhealthy" and sick["reasons"] == [
        f"probe failed: {missing['detail']}"
    ]
    short = health({**live, "alive": 0, "pids": []}, None)
    assert short["status"] == "Unhealthy" and short["reasons"] == ["0 of 1 workers alive"]


def test_specs_are_validated_and_round_trip() -> None:
    spec = ServiceSpec(
        command=("{python}", "-m", "app"), workers=3, listen="[::1]:8080", environment={"A": "b"}
    )
    assert ServiceSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    probe_spec = ProbeSpec(url="https://127.0.0.1/health", command=("true",), timeout=2)
    assert ProbeSpec.from_json(json.loads(json.dumps(probe_spec.to_json()))) == probe_spec

    bad_services: list[tuple[Any, str]] = [
        ({"command": []}, "one or more"),
        ({"command": "python -m app"}, "list of arguments"),
        ({"command": ["x"], "workers": 0}, "between 1 and"),
        ({"command": ["x"], "workers": True}, "whole number"),
        ({"command": ["x"], "listen": "8080"}, "host:port"),
        ({"command": ["x"], "listen": "127.0.0.1:99999"}, "host:port"),
        ({"command": ["x"], "stopTimeout": -1}, "stop_timeout"),
        ({"command": ["x"], "readyTimeout": "soon"}, "ready_timeout"),
        ({"command": ["x"], "environment": {"LISTEN_FDS": "2"}}, "may not set LISTEN_FDS"),
        ({"command": ["x"], "environment": {"A=B": "1"}}, "bad variable name"),
        ({"command": ["x"], "restart": "always"}, "unknown fields: restart"),
        ({"workers": 2}, "no command"),
        ([], "JSON object"),
    ]
    for data, message in bad_services:
        with pytest.raises(AgentError, match=message):
            ServiceSpec.from_json(data)
    bad_probes: list[tuple[Any, str]] = [
        ({"url": "ftp://host/x"}, "not an http"),
        ({"url": "http://"}, "not an http"),
        ({}, "url or a command"),
        ({"command": []}, "non-empty"),
        ({"url": "http://h/", "timeout": 0}, "timeout"),
        ({"url": "http://h/", "extra": 1}, "unknown fields"),
        ("http://h/", "JSON object"),
    ]
    for data, message in bad_probes:
        with pytest.raises(AgentError, match=message):
            ProbeSpec.from_json(data)
