"""Transition tracking in real processes: frames and generators still running replaced code."""

from __future__ import annotations

from typing import Any

from procs.harness import Child, Children, Demo
from pyhotpatch.runtime import client

DONE = {"complete": True, "threads": [], "suspended": 0}
BLOCKED = {"thread": "blocked-worker", "function": "wait_inside"}

# Start a thread that blocks inside phdemo_target.wait_inside until ``release`` is set.
_BLOCK = """
import threading, phdemo_target as t
entered, release, box = threading.Event(), threading.Event(), {}
def _run():
    box["result"] = t.wait_inside(entered, release, "x")
worker = threading.Thread(target=_run, name="blocked-worker", daemon=True)
worker.start()
assert entered.wait(10)
"""
_UNBLOCK = "release.set(); worker.join(10); result = [worker.is_alive(), box.get('result')]"
_FRESH_CALL = """
go = threading.Event(); go.set()
result = t.wait_inside(threading.Event(), go, "y")
"""


def transition(kids: Children, child: Child) -> dict[str, Any]:
    """The transition as reported through the socket, checked against the in-process view."""
    remote: dict[str, Any] = client.status(child.pid, kids.run_dir)["transition"]
    local = child.ask("import pyhotpatch; result = pyhotpatch.status()['transition']")
    assert local["complete"] == remote["complete"]
    assert local["suspended"] == remote["suspended"]
    return remote


def test_blocked_thread_and_suspended_generator(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask(_BLOCK)
    assert child.ask("gen = t.stream(5); result = next(gen)") == "old0"
    assert transition(kids, child) == DONE

    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    state = transition(kids, child)
    assert state["complete"] is False
    assert state["threads"] == [BLOCKED]
    assert state["suspended"] == 1

    # New calls run the new code at once, while the old frames still run the old code.
    assert child.ask(_FRESH_CALL) == "new:y"
    assert child.ask("result = list(t.stream(2))") == ["new0", "new1"]
    assert child.ask("result = next(gen)") == "old1"
    assert transition(kids, child)["complete"] is False

    assert child.ask(_UNBLOCK) == [False, "old:x"]
    state = transition(kids, child)
    assert state == {"complete": False, "threads": [], "suspended": 1}

    child.ask("gen.close()")
    assert transition(kids, child) == DONE
    assert transition(kids, child) == DONE


def test_exhausted_generator_completes_transition(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target as t; gens = [t.stream(3), t.stream(3)]; next(gens[0])")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    # One started and one not yet started generator: both hold old frames.
    assert transition(kids, child) == {"complete": False, "threads": [], "suspended": 2}
    assert child.ask("result = list(gens[0])") == ["old1", "old2"]
    assert transition(kids, child)["suspended"] == 1
    assert child.ask("result = list(gens[1])") == ["old0", "old1", "old2"]
    assert transition(kids, child) == DONE


def test_suspended_coroutine_is_tracked(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    assert child.ask(
        "import phdemo_target as t; coro = t.fetch('x'); result = coro.send(None)"
    ) == ("paused")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert transition(kids, child) == {"complete": False, "threads": [], "suspended": 1}
    finish = """
def drive(c):
    try:
        while True:
            c.send(None)
    except StopIteration as stop:
        return stop.value
result = [drive(coro), drive(t.fetch('y'))]
"""
    assert child.ask(finish) == ["old:x", "new:y"]
    assert transition(kids, child) == DONE


def test_nothing_running_old_code_is_complete_at_once(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert transition(kids, child) == DONE
    client.revert(child.pid, "KB1", kids.run_dir)
    assert transition(kids, child) == DONE


def test_revert_tracks_threads_in_patched_code(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    child.ask(_BLOCK)
    assert transition(kids, child) == DONE  # the thread runs the live (patched) code

    client.revert(child.pid, "KB1", kids.run_dir)
    state = transition(kids, child)
    assert state["complete"] is False
    assert state["threads"] == [BLOCKED]
    assert child.ask(_FRESH_CALL) == "old:y"
    assert child.ask(_UNBLOCK) == [False, "new:x"]
    assert transition(kids, child) == DONE


def test_replace_tracks_threads_in_previous_patch(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    child.ask(_BLOCK)  # blocked inside KB1's wait_inside

    client.apply(child.pid, demo.data("kb2"), kids.run_dir)  # replaces it with 1.2's
    assert child.ask(_FRESH_CALL) == "newer:y"
    state = transition(kids, child)
    assert state["complete"] is False, state
    assert state["threads"] == [BLOCKED]
    assert child.ask(_UNBLOCK) == [False, "new:x"]
    assert transition(kids, child) == DONE


def test_several_threads_are_each_reported(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask(
        """
import threading, phdemo_target as t
release = threading.Event()
workers = []
for n in range(3):
    entered = threading.Event()
    w = threading.Thread(
        target=t.wait_inside, args=(entered, release, str(n)), name=f"w{n}", daemon=True
    )
    w.start()
    entered.wait(10)
    workers.append(w)
"""
    )
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    state = transition(kids, child)
    assert sorted(state["threads"], key=lambda e: e["thread"]) == [
        {"thread": f"w{n}", "function": "wait_inside"} for n in range(3)
    ]
    child.ask("release.set()\nfor w in workers: w.join(10)")
    assert transition(kids, child) == DONE
