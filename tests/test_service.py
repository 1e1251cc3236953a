"""A real HTTP service hotpatched while loopback clients keep it busy: no failed request."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from procs.harness import PROCS, Child, Children, Demo
from pyhotpatch import BaselineMismatch
from pyhotpatch.runtime import client

VALUES = ("../etc/passwd", "a\\b", "notes/today.txt")
SAFE = {
    "1.0": {"../etc/passwd": True, "a\\b": True, "notes/today.txt": True},
    "1.1": {"../etc/passwd": False, "a\\b": True, "notes/today.txt": True},
    "1.2": {"../etc/passwd": False, "a\\b": False, "notes/today.txt": True},
}


@dataclass
class Service:
    child: Child
    pid: int
    port: int


def start_service(kids: Children, demo: Demo) -> Service:
    child = kids.start([kids.python, str(PROCS / "service.py")], kids.env([demo.old]), grace=5.0)
    ready = child.ready()
    return Service(child, int(ready["pid"]), int(ready["port"]))


@dataclass
class Response:
    started: float
    ended: float
    version: str
    safe: bool


@dataclass
class Loader:
    """One client thread asking about one value over a kept-alive connection."""

    port: int
    value: str
    stop: threading.Event
    responses: list[Response] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        target = "/check?path=" + urllib.parse.quote(self.value)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", target)
                reply = conn.getresponse()
                body = reply.read()
                if reply.status != 200:
                    self.failures.append(f"HTTP {reply.status}: {body[:200]!r}")
                    continue
                doc = json.loads(body)
                if set(doc) != {"path", "safe", "version", "pid"} or doc["path"] != self.value:
                    self.failures.append(f"malformed answer {doc!r}")
                    continue
                self.pids.add(doc["pid"])
                self.responses.append(
                    Response(started, time.monotonic(), doc["version"], doc["safe"])
                )
            except Exception as exc:
                self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


@dataclass
class Step:
    """An action run while the service is under load, and the version it leads to."""

    action: Callable[[], Any]
    version: str
    began: float = 0.0
    ended: float = 0.0
    outcome: Any = None


def run_under_load(port: int, steps: list[Step], gap: float) -> list[Loader]:
    """Keep the service busy from every value's thread; run ``steps`` ``gap`` seconds apart."""
    stop = threading.Event()
    loaders = [Loader(port, value, stop) for value in VALUES]
    threads = [threading.Thread(target=loader.run, daemon=True) for loader in loaders]
    for thread in threads:
        thread.start()
    try:
        for step in steps:
            time.sleep(gap)
            step.began = time.monotonic()
            try:
                step.outcome = step.action()
            except Exception as exc:
                step.outcome = exc
            step.ended = time.monotonic()
        time.sleep(gap)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return loaders


def check_history(loaders: list[Loader], first: str, steps: list[Step], pid: int) -> None:
    """Every answer 200 and well-formed, from ``pid``, and behaviour only ever moves forward.

    Stage 0 is the state before any step, stage k the one step k-1 leads to. A
    response shows a stage that could have been live while it was served, and
    going through one thread's responses in order the stage never goes back.
    Responses served entirely while one stage was surely live show exactly it.
    """
    versions = [first] + [s.version for s in steps]
    may_begin = [float("-inf")] + [s.began for s in steps]
    has_ended = [s.ended for s in steps] + [float("inf")]
    surely_from = [float("-inf")] + [s.ended for s in steps]
    surely_until = [s.began for s in steps] + [float("inf")]
    for loader in loaders:
        assert loader.failures == [], loader.failures[:5]
        assert loader.pids == {pid}
        stage = 0
        for n, r in enumerate(loader.responses):
            possible = [
                k
                for k in range(len(versions))
                if may_begin[k] <= r.ended and r.started <= has_ended[k]
            ]
            forward = [k for k in possible if k >= stage and versions[k] == r.version]
            assert forward, (
                f"{loader.value!r}: response {n} says {r.version} after stage {stage} "
                f"({versions[stage]}); stages possible then: {possible}"
            )
            stage = forward[0]
            assert r.safe in {SAFE[versions[k]][loader.value] for k in possible}, (loader.value, r)
        for k, version in enumerate(versions):
            inside = [
                r
                for r in loader.responses
                if r.started >= surely_from[k] and r.ended <= surely_until[k]
            ]
            assert inside, f"{loader.value!r}: no answer while stage {k} ({version}) was live"
            assert {(r.version, r.safe) for r in inside} == {
                (version, SAFE[version][loader.value])
            }, (loader.value, k)


def test_hotpatch_under_load_then_revert(kids: Children, demo: Demo) -> None:
    service = start_service(kids, demo)
    apply = Step(lambda: client.apply(service.pid, demo.data("kb1"), kids.run_dir), "1.1")
    loaders = run_under_load(service.port, [apply], gap=1.2)

    assert isinstance(apply.outcome, dict) and apply.outcome["id"] == "KB1", apply.outcome
    check_history(loaders, "1.0", [apply], service.pid)
    # Everything asked after the apply returned got the fixed answer.
    for loader in loaders:
        late = [r for r in loader.responses if r.started > apply.ended]
        assert late and all(r.version == "1.1" for r in late)
        assert all(r.safe == SAFE["1.1"][loader.value] for r in late)

    assert service.child.alive()
    status = client.status(service.pid, kids.run_dir)
    assert status["pid"] == service.pid
    assert status["active"]["id"] == "KB1"

    client.revert(service.pid, "KB1", kids.run_dir)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    try:
        for value in VALUES:
            conn.request("GET", "/check?path=" + urllib.parse.quote(value))
            reply = conn.getresponse()
            assert reply.status == 200
            doc = json.loads(reply.read())
            assert (doc["version"], doc["safe"], doc["pid"]) == (
                "1.0",
                SAFE["1.0"][value],
                service.pid,
            )
    finally:
        conn.close()
    assert client.status(service.pid, kids.run_dir)["active"] is None


def test_refusal_replace_and_revert_under_load(kids: Children, demo: Demo) -> None:
    service = start_service(kids, demo)
    steps = [
        Step(lambda: client.apply(service.pid, demo.data("wrong"), kids.run_dir), "1.0"),
        Step(lambda: client.apply(service.pid, demo.data("kb1"), kids.run_dir), "1.1"),
        Step(lambda: client.apply(service.pid, demo.data("kb2"), kids.run_dir), "1.2"),
        Step(lambda: client.revert(service.pid, "KB2", kids.run_dir), "1.0"),
    ]
    loaders = run_under_load(service.port, steps, gap=0.5)

    assert isinstance(steps[0].outcome, BaselineMismatch), steps[0].outcome
    assert steps[1].outcome["id"] == "KB1"
    assert steps[2].outcome["replaced"] == "KB1"
    assert steps[3].outcome["reverted"] is True
    check_history(loaders, "1.0", steps, service.pid)
    for loader in loaders:
        during_refusal = [r for r in loader.responses if r.ended < steps[1].began]
        assert all(r.version == "1.0" for r in during_refusal)
    assert service.child.alive()
    assert client.status(service.pid, kids.run_dir)["active"] is None
