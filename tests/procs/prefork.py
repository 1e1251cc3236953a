"""A pre-forking server for the runtime tests: enable, import the target, fork workers.

``python prefork.py PROBE_DIR WORKERS [PACKAGE]``: the parent calls
``pyhotpatch.enable()``, imports ``phdemo_target``, applies ``PACKAGE`` if given,
then forks ``WORKERS`` workers with ``os.fork``. Every process writes
``PROBE_DIR/<pid>.json`` about every 20 ms: its pid, a counter, and what
``phdemo_target`` answers now. Once every worker has written its first probe the
parent prints ``{"ready": true, "pid": ..., "workers": [...]}``. A worker exits
on SIGTERM (through ``sys.exit``, so ``atexit`` runs) or when its parent is
gone; the parent ends its workers when stdin closes or it gets SIGTERM.
"""

import json
import os
import signal
import sys
import threading
import time


def write_probe(directory: str, count: int) -> None:
    """Record what this process's ``phdemo_target`` answers now."""
    import phdemo_target

    data = {
        "pid": os.getpid(),
        "count": count,
        "version": phdemo_target.version(),
        "dotdot": phdemo_target.validate("../etc/passwd"),
    }
    tmp = os.path.join(directory, f".{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(directory, f"{os.getpid()}.json"))


def worker(directory: str, parent: int) -> None:
    """Probe until told to stop or orphaned."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    count = 0
    while os.getppid() == parent:
        write_probe(directory, count)
        count += 1
        time.sleep(0.02)
    sys.exit(0)


def main() -> None:
    """Fork the workers, then probe and watch stdin until told to stop."""
    directory, workers = sys.argv[1], int(sys.argv[2])
    import pyhotpatch

    pyhotpatch.enable()
    import phdemo_target  # noqa: F401 - imported before forking, as a pre-forking server does

    if len(sys.argv) > 3:
        pyhotpatch.apply(sys.argv[3])
    parent = os.getpid()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            worker(directory, parent)
        pids.append(pid)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    deadline = time.monotonic() + 30
    while not all(os.path.exists(os.path.join(directory, f"{p}.json")) for p in pids):
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start")
        time.sleep(0.01)
    write_probe(directory, 0)
    print(json.dumps({"ready": True, "pid": parent, "workers": pids}), flush=True)
    count = 1
    live = set(pids)
    while not stop.is_set():
        write_probe(directory, count)
        count += 1
        for pid in list(live):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                live.discard(pid)
        stop.wait(0.02)
    for pid in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for pid in live:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
