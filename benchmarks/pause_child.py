"""Child of the pause benchmark: application threads that record stalls, driven over stdin.

Two threads loop calling every function of ``benchmod`` (the module being patched) and sleep
50 us, like a service doing short requests between I/O waits; every gap between two consecutive
iterations longer than 20 us is recorded. The parent writes ``start`` and ``stop`` lines to bound
a measurement window and reads back one JSON line: the longest gap in the window, and how many
loop iterations completed while the engine's swap critical section was running (the engine's
``_commit`` and ``_clear`` are wrapped to timestamp it; nothing else about the engine changes).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import benchmod

import pyhotpatch
from pyhotpatch.runtime import _engine

THREADS = 2
SLEEP_S = 50e-6
MIN_GAP_NS = 20_000

GAPS: list[tuple[int, int]] = []  # (previous iteration, this iteration), perf_counter_ns
ITERATIONS = [0] * THREADS
SWAP: list[int] = []  # [start, end] of the last swap critical section

_commit, _clear = _engine._commit, _engine._clear


def _timed_commit(*args: Any) -> Any:
    SWAP[:] = [time.perf_counter_ns()]
    return _commit(*args)


def _timed_clear(*args: Any) -> Any:
    try:
        return _clear(*args)
    finally:
        SWAP.append(time.perf_counter_ns())


def _work(index: int) -> None:
    funcs: list[Callable[[int], int]] = [getattr(benchmod, n) for n in benchmod.FUNCTIONS]
    objs = [cls() for cls in benchmod.CLASSES]
    methods = [getattr(o, n) for o in objs for n in sorted(vars(type(o))) if n[0] == "m"]
    calls = funcs + methods
    prev = time.perf_counter_ns()
    i = 0
    while True:
        for f in calls:
            f(i)
        time.sleep(SLEEP_S)
        now = time.perf_counter_ns()
        if now - prev > MIN_GAP_NS:
            GAPS.append((prev, now))
        prev = now
        i += 1
        ITERATIONS[index] += 1


def _window(start: int, stop: int) -> dict[str, Any]:
    gaps = [(a, b) for a, b in list(GAPS) if a >= start and b <= stop]
    swap = list(SWAP) if len(SWAP) == 2 and start <= SWAP[0] and SWAP[1] <= stop else None
    inside = sum(1 for _, b in gaps if swap and swap[0] < b < swap[1])
    return {
        "window_ns": stop - start,
        "max_gap_ns": max((b - a for a, b in gaps), default=0),
        "swap_ns": swap[1] - swap[0] if swap else None,
        "iterations_inside_swap": inside,
        "iterations": sum(ITERATIONS),
        "threads_alive": sum(t.name.startswith("app-") for t in threading.enumerate()),
    }


def main() -> None:
    _engine._commit = _timed_commit  # type: ignore[assignment]
    _engine._clear = _timed_clear  # type: ignore[assignment]
    pyhotpatch.enable()
    for n in range(THREADS):
        threading.Thread(target=_work, args=(n,), name=f"app-{n}", daemon=True).start()
    print("ready", flush=True)
    start = time.perf_counter_ns()
    for line in sys.stdin:
        command = line.strip()
        if command == "start":
            GAPS.clear()
            SWAP.clear()
            start = time.perf_counter_ns()
            print("ok", flush=True)
        elif command == "stop":
            print(json.dumps(_window(start, time.perf_counter_ns())), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)


if __name__ == "__main__":
    main()
