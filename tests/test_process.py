"""Start-up and later imports in real processes: the .pth hook, installed packages, prefork."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from procs.harness import (
    BASE,
    FIXED1,
    FIXED2,
    PROBE,
    PROCS,
    Child,
    ChildError,
    Children,
    Demo,
    end_pid,
    make_venv,
    pid_alive,
    wait_for,
)
from pyhotpatch import BaselineMismatch
from pyhotpatch.runtime import client
from support import SRC

LOADED = "import sys; result = sorted(m for m in sys.modules if m.startswith('phdemo'))"
ADMIN = "from phdemo_pkg import rules; result = rules.allowed('admin')"


def probe(child: Child) -> dict[str, Any]:
    result: dict[str, Any] = child.ask(PROBE)
    return result


# --------------------------------------------------------------------------- the .pth hook


def _venv(kids: Children, demo: Demo | None = None) -> str:
    """A virtualenv with pyhotpatch "installed" (src on its path, the .pth hook in place)."""
    interpreter, site = make_venv(kids.python, kids.base / "venv")
    (site / "_pyhotpatch_src.pth").write_text(f"{SRC}\n")
    shutil.copy(SRC / "pyhotpatch_autoenable.pth", site / "pyhotpatch_autoenable.pth")
    if demo is not None:  # phdemo 1.0 installed like pip would: modules and metadata
        shutil.copy(demo.old / "phdemo_target.py", site)
        shutil.copytree(demo.old / "phdemo_pkg", site / "phdemo_pkg")
        shutil.copytree(demo.site / "phdemo-1.0.dist-info", site / "phdemo-1.0.dist-info")
    return interpreter


def test_pth_hook_enables_runtime_when_asked(kids: Children, demo: Demo) -> None:
    interpreter = _venv(kids, demo)
    child = kids.repl(enable=False, python=interpreter, src=False, extra={"PYHOTPATCH": "1"})
    assert kids.socket(child.pid).exists()
    state = child.ask(
        "import sys, pyhotpatch.runtime as r\n"
        "result = [r.enabled(), sys.prefix != sys.base_prefix, r.status()['socket']]"
    )
    assert state == [True, True, str(kids.socket(child.pid))]
    assert client.status(child.pid, kids.run_dir)["pid"] == child.pid
    child.ask("import phdemo_target")
    assert client.apply(child.pid, demo.data("kb1"), kids.run_dir)["id"] == "KB1"
    assert probe(child) == FIXED1


def test_pth_hook_stays_idle_without_the_flag(kids: Children) -> None:
    interpreter = _venv(kids)
    for value in (None, "0", "off", ""):
        extra = {} if value is None else {"PYHOTPATCH": value}
        child = kids.repl(enable=False, python=interpreter, src=False, extra=extra)
        loaded = child.ask("import sys; result = sorted(m for m in sys.modules if 'hotpatch' in m)")
        assert "pyhotpatch.runtime" not in loaded, (value, loaded)
        assert not kids.run_dir.exists(), value
        assert client.processes(kids.run_dir) == []
        child.close()


def test_pth_hook_with_unusable_run_dir_still_starts(kids: Children, demo: Demo) -> None:
    interpreter = _venv(kids, demo)
    blocker = kids.base / "file"
    blocker.write_text("not a directory")
    extra = {"PYHOTPATCH": "1", "PYHOTPATCH_RUN_DIR": str(blocker / "run")}
    child = kids.repl(enable=False, python=interpreter, src=False, extra=extra)
    assert probe(child) == BASE
    assert "pyhotpatch: runtime not enabled" in child.stderr()
    assert child.ask("import pyhotpatch.runtime as r; result = r.enabled()") is False


def test_pth_hook_with_installed_package_comes_up_patched(kids: Children, demo: Demo) -> None:
    interpreter = _venv(kids, demo)
    extra = {"PYHOTPATCH": "1", "PYHOTPATCH_PACKAGE": str(demo.kb1)}
    child = kids.repl(enable=False, python=interpreter, src=False, extra=extra)
    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["id"] == "KB1"
    assert status["active"]["pending_modules"] == ["phdemo_pkg.rules", "phdemo_target"]
    assert child.ask(LOADED) == []

    assert probe(child) == FIXED1
    assert child.ask(ADMIN) is False
    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["pending_modules"] == []
    assert status["active"]["errors"] == []
    assert status["active"]["functions"] == 6


# --------------------------------------------------------------------------- PYHOTPATCH_PACKAGE


def test_installed_package_patches_modules_imported_later(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site], extra={"PYHOTPATCH_PACKAGE": str(demo.kb1)})
    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["id"] == "KB1"
    assert status["active"]["functions"] == 0
    assert status["active"]["pending_modules"] == ["phdemo_pkg.rules", "phdemo_target"]

    assert probe(child) == FIXED1
    status = client.status(child.pid, kids.run_dir)
    assert status["active"]["pending_modules"] == ["phdemo_pkg.rules"]
    assert status["active"]["functions"] == 5
    assert child.ask(ADMIN) is False
    assert client.status(child.pid, kids.run_dir)["active"]["pending_modules"] == []
    # The patched module behaves like 1.1 in every way the fix touches.
    assert child.ask(
        "import threading, phdemo_target as t\ne = threading.Event(); e.set()\n"
        "result = [t.wait_inside(threading.Event(), e, 'x'), list(t.stream(2))]"
    ) == ["new:x", ["new0", "new1"]]


def test_installed_package_for_already_imported_target(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old], enable=False, extra={"PYHOTPATCH_PACKAGE": str(demo.kb1)})
    assert probe(child) == BASE
    child.ask("import pyhotpatch; pyhotpatch.enable()")
    assert probe(child) == FIXED1
    assert client.status(child.pid, kids.run_dir)["active"]["id"] == "KB1"


def test_unreadable_installed_package_does_not_stop_process(kids: Children, demo: Demo) -> None:
    junk = kids.base / "junk.hotpatch"
    junk.write_bytes(b"this is not a package")
    child = kids.repl([demo.old, demo.site], extra={"PYHOTPATCH_PACKAGE": str(junk)})
    assert client.status(child.pid, kids.run_dir)["active"] is None
    assert probe(child) == BASE
    assert "could not apply installed hotpatch" in child.stderr()
    child.close()


def test_a_missing_installed_package_means_none_is_installed(kids: Children, demo: Demo) -> None:
    # the node agent removes the file when it reverts: processes then start at the baseline
    missing = kids.base / "missing.hotpatch"
    child = kids.repl([demo.old, demo.site], extra={"PYHOTPATCH_PACKAGE": str(missing)})
    assert client.status(child.pid, kids.run_dir)["active"] is None
    assert probe(child) == BASE
    assert "could not apply" not in child.stderr()
    child.close()


def test_installed_package_for_another_baseline_is_reported_on_import(
    kids: Children, demo: Demo
) -> None:
    child = kids.repl([demo.old, demo.site], extra={"PYHOTPATCH_PACKAGE": str(demo.wrong)})
    active = client.status(child.pid, kids.run_dir)["active"]
    assert active["pending_modules"] == ["phdemo_pkg.rules", "phdemo_target"]
    assert probe(child) == BASE  # imported fine, left at the baseline
    active = client.status(child.pid, kids.run_dir)["active"]
    assert active["pending_modules"] == ["phdemo_pkg.rules"]
    assert len(active["errors"]) == 1
    assert active["errors"][0].startswith("phdemo_target: imported after install but not patched")
    assert child.ask(ADMIN) is False  # rules.py is the baseline the package names: patched


# --------------------------------------------------------------------------- the import hook


def test_apply_before_import_then_import_is_patched(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site])
    report = client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert report["modules"] == []
    assert report["pending_modules"] == ["phdemo_pkg.rules", "phdemo_target"]
    assert report["functions"] == 0
    assert child.ask(LOADED) == []

    assert probe(child) == FIXED1
    child.ask("import phdemo_pkg")
    assert client.status(child.pid, kids.run_dir)["active"]["pending_modules"] == [
        "phdemo_pkg.rules"
    ]
    assert child.ask("import phdemo_pkg.rules; result = phdemo_pkg.rules.allowed('admin')") is False
    active = client.status(child.pid, kids.run_dir)["active"]
    assert active["pending_modules"] == []
    assert active["functions"] == 6


def test_pending_target_follows_cumulative_replace_and_revert(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site])
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    report = client.apply(child.pid, demo.data("kb2"), kids.run_dir)
    assert report["replaced"] == "KB1"
    assert report["pending_modules"] == ["phdemo_pkg.rules", "phdemo_target"]
    assert probe(child) == FIXED2

    client.revert(child.pid, "KB2", kids.run_dir)
    assert probe(child) == BASE
    other = kids.repl([demo.old, demo.site])
    client.apply(other.pid, demo.data("kb1"), kids.run_dir)
    client.revert(other.pid, "KB1", kids.run_dir)
    assert probe(other) == BASE  # a revert drops what was waiting for an import
    assert other.ask(ADMIN) is True


def test_pending_target_needs_installed_distribution(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])  # importable, but no phdemo-1.0.dist-info anywhere
    with pytest.raises(BaselineMismatch) as info:
        client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert "not installed" in str(info.value)
    assert client.status(child.pid, kids.run_dir)["active"] is None
    assert probe(child) == BASE


def test_pending_target_of_other_installed_version_is_refused(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site_other])
    with pytest.raises(BaselineMismatch) as info:
        client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert "0.9" in str(info.value)
    assert client.status(child.pid, kids.run_dir)["active"] is None
    assert probe(child) == BASE


def test_reloaded_target_stays_patched(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    assert probe(child) == FIXED1
    # The files on disk stay at the baseline; a module executed again from them while
    # the hotpatch is active must get the fix again.
    child.ask("import importlib, phdemo_target; importlib.reload(phdemo_target)")
    assert probe(child) == FIXED1


def test_target_imported_afresh_is_patched(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old, demo.site])
    child.ask("import phdemo_target")
    client.apply(child.pid, demo.data("kb1"), kids.run_dir)
    child.ask("import sys; del sys.modules['phdemo_target']")
    assert probe(child) == FIXED1  # imports it again, from the baseline file


def test_enable_is_idempotent_and_control_optional(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old], enable=False)
    first = child.ask(
        "import sys, pyhotpatch\n"
        "pyhotpatch.enable(control=False)\n"
        "pyhotpatch.enable()\n"
        "from pyhotpatch.runtime._importhook import PatchFinder\n"
        "result = [type(f).__name__ for f in sys.meta_path].count('PatchFinder')"
    )
    assert first == 1
    assert not kids.socket(child.pid).exists()  # the first call chose no socket
    child.ask("import phdemo_target")
    report = child.ask(f"result = pyhotpatch.apply({str(demo.kb1)!r})")
    assert report["id"] == "KB1"
    assert probe(child) == FIXED1
    assert child.ask("result = pyhotpatch.status()['socket']") is None


def test_in_process_api_errors(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old])
    child.ask("import phdemo_target, pyhotpatch")
    with pytest.raises(ChildError) as info:
        child.ask(f"pyhotpatch.apply({str(demo.wrong)!r})")
    assert info.value.error == "BaselineMismatch"
    with pytest.raises(ChildError) as info:
        child.ask("pyhotpatch.revert('KB1')")
    assert info.value.error == "NotActive"
    with pytest.raises(ChildError) as info:
        child.ask("pyhotpatch.apply(b'nonsense')")
    assert info.value.error == "PackageError"
    assert child.ask("result = isinstance(pyhotpatch.BusyError(), pyhotpatch.ApplyError)") is True
    assert probe(child) == BASE


# --------------------------------------------------------------------------- pre-forking servers


def _prefork(kids: Children, demo: Demo, workers: int, package: Path | None = None) -> Child:
    probes = kids.base / "probes"
    probes.mkdir()
    argv = [kids.python, str(PROCS / "prefork.py"), str(probes), str(workers)]
    if package is not None:
        argv.append(str(package))
    child = kids.start(argv, kids.env([demo.old]))
    message = child.ready()
    child.others = list(message["workers"])
    assert len(child.others) == workers
    return child


def _probe_file(kids: Children, pid: int) -> dict[str, Any]:
    path = kids.base / "probes" / f"{pid}.json"
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _fresh_probe(kids: Children, pid: int) -> dict[str, Any]:
    """A probe the process wrote after this call started."""
    start = _probe_file(kids, pid)["count"]
    return wait_for(lambda: (p := _probe_file(kids, pid))["count"] >= start + 2 and p)


def test_prefork_apply_to_each_worker(kids: Children, demo: Demo) -> None:
    parent = _prefork(kids, demo, 3)
    workers = parent.others
    assert sorted(client.processes(kids.run_dir)) == sorted([parent.pid, *workers])
    for pid in workers:
        assert kids.socket(pid).exists()
        status = client.status(pid, kids.run_dir)
        assert status["pid"] == pid
        assert status["active"] is None
        assert _fresh_probe(kids, pid)["version"] == "1.0"

    for pid in workers:
        report = client.apply(pid, demo.data("kb1"), kids.run_dir)
        assert report["id"] == "KB1" and report["functions"] == 5
    for pid in workers:
        probe_now = _fresh_probe(kids, pid)
        assert (probe_now["version"], probe_now["dotdot"]) == ("1.1", False)
        assert client.status(pid, kids.run_dir)["active"]["id"] == "KB1"
    assert _fresh_probe(kids, parent.pid)["version"] == "1.0"
    assert client.status(parent.pid, kids.run_dir)["active"] is None

    client.apply(parent.pid, demo.data("kb1"), kids.run_dir)
    assert _fresh_probe(kids, parent.pid)["version"] == "1.1"


def test_prefork_workers_inherit_patch_applied_before_fork(kids: Children, demo: Demo) -> None:
    parent = _prefork(kids, demo, 3, package=demo.kb1)
    workers = parent.others
    for pid in [parent.pid, *workers]:
        status = client.status(pid, kids.run_dir)
        assert status["pid"] == pid
        assert status["active"]["id"] == "KB1"
        assert status["transition"]["complete"] is True
        assert _fresh_probe(kids, pid)["version"] == "1.1"

    # Each worker's state is its own: reverting one leaves the others and the parent patched.
    client.revert(workers[0], "KB1", kids.run_dir)
    assert _fresh_probe(kids, workers[0])["version"] == "1.0"
    assert client.status(workers[0], kids.run_dir)["active"] is None
    for pid in [parent.pid, *workers[1:]]:
        assert _fresh_probe(kids, pid)["version"] == "1.1"
        assert client.status(pid, kids.run_dir)["active"]["id"] == "KB1"


def test_prefork_worker_exit_removes_only_its_socket(kids: Children, demo: Demo) -> None:
    parent = _prefork(kids, demo, 3)
    gone, *rest = parent.others
    started = time.monotonic()
    end_pid(gone)
    ended_in = time.monotonic() - started
    assert not pid_alive(gone)
    wait_for(
        lambda: not kids.socket(gone).exists(),
        timeout=10,
        explain=lambda: f"worker ended in {ended_in:.1f} s; stderr:\n{parent.stderr()}",
    )
    assert kids.socket(parent.pid).exists()
    assert sorted(client.processes(kids.run_dir)) == sorted([parent.pid, *rest])
    assert client.status(parent.pid, kids.run_dir)["pid"] == parent.pid
    for pid in rest:
        assert client.status(pid, kids.run_dir)["pid"] == pid


_HOLD_AFTER_SWAP = """
import os, json, threading
swapped, forked = threading.Event(), threading.Event()

def _profile(frame, event, arg):
    # Runs in the control thread only: hold it right after the swap, before the bookkeeping.
    if event == "return" and frame.f_code.co_name == "_commit" and not swapped.is_set():
        swapped.set()
        forked.wait(3)

# Every thread started from now on (the control threads) runs under the hook.
threading.setprofile(_profile)
import pyhotpatch
pyhotpatch.enable()
import phdemo_target
"""

_FORK_NOW = """
assert swapped.wait(20)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    from pyhotpatch.runtime._engine import ENGINE
    active = ENGINE.active.package.manifest.id if ENGINE.active is not None else None
    os.write(w, json.dumps([active, phdemo_target.version()]).encode())
    os._exit(0)
forked.set()
os.close(w)
data = os.read(r, 65536)
os.close(r)
os.waitpid(pid, 0)
result = json.loads(data)
"""


def test_fork_during_apply_sees_all_or_nothing(kids: Children, demo: Demo) -> None:
    child = kids.repl([demo.old], enable=False)
    child.ask(_HOLD_AFTER_SWAP)
    applied: list[Any] = []
    applier = threading.Thread(
        target=lambda: applied.append(client.apply(child.pid, demo.data("kb1"), kids.run_dir))
    )
    applier.start()
    try:
        forked_state = child.ask(_FORK_NOW)
    finally:
        applier.join(30)
    assert applied and applied[0]["id"] == "KB1"
    # The forked child holds either the whole hotpatch (code and record) or none of it.
    assert forked_state in (["KB1", "1.1"], [None, "1.0"]), forked_state
