"""Baseline environments: real venvs built from real wheels, run as real interpreters."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pyhotpatch.agent._environments import MARKER, Environments
from pyhotpatch.errors import AgentError, HotpatchError
from support import SRC, find_python, make_wheel

KB = "KB5000001"
OTHER = "KB5000002"
APP = {
    "demo_app/__init__.py": """\
        def answer():
            return 41

        def main():
            print("demo-app says", answer())
        """,
    "demo_app-1.0.1.dist-info/entry_points.txt": "[console_scripts]\ndemo-app = demo_app:main\n",
}
LIB = {"tinylib.py": "VALUE = 'tiny'\n"}
Spoil = Callable[[Path, Path, list[Path]], tuple[Path, list[Path]]]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_for(path: Path, pins: list[tuple[str, str, Path]]) -> Path:
    path.write_text(
        "".join(f"{name}=={version} --hash=sha256:{sha(wheel)}\n" for name, version, wheel in pins)
    )
    return path


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A baseline of two wheels and its lock."""
    app = make_wheel(tmp_path / "wheels", "demo-app", "1.0.1", APP)
    lib = make_wheel(tmp_path / "wheels", "tinylib", "2.0", LIB)
    lock = lock_for(tmp_path / "lock.txt", [("demo-app", "1.0.1", app), ("tinylib", "2.0", lib)])
    return lock, [app, lib]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points Python at our sources."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYHOTPATCH", "PYTHON", "VIRTUAL"))
    }
    environ.update(extra)
    return environ


def run_env(python: Path, code: str, tmp_path: Path) -> dict[str, object]:
    """Run ``code`` in an environment's interpreter with the runtime asked for; its JSON."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700, exist_ok=True)
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYHOTPATCH="1", PYHOTPATCH_RUN_DIR=str(run_dir)),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(result, dict)
    return result


PROBE = """\
    import importlib.util, json, sys
    import demo_app, tinylib
    import pyhotpatch.runtime
    print(json.dumps({
        "answer": demo_app.answer(),
        "lib": tinylib.VALUE,
        "enabled": pyhotpatch.runtime.enabled(),
        "fastapi": importlib.util.find_spec("fastapi") is not None,
        "pytest": importlib.util.find_spec("pytest") is not None,
        "prefix": sys.prefix,
        "version": list(sys.version_info[:2]),
        "runtime_file": pyhotpatch.runtime.__file__,
    }))
    """


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".building-", "KB")))


def test_built_environment_runs_the_baseline_with_the_runtime_enabled(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    lock, wheels = release
    envs = Environments(tmp_path / "envs")
    messages: list[str] = []

    path = envs.build(KB, lock, wheels, progress=messages.append)

    assert path == tmp_path / "envs" / KB
    assert envs.has(KB)
    assert envs.python(KB) == path / "bin" / "python"
    marker = envs.describe(KB)
    assert marker["kb"] == KB
    assert marker["pins"] == {"demo-app": "1.0.1", "tinylib": "2.0"}
    assert marker["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "verifying 2 wheels" in messages
    assert "installing demo-app 1.0.1" in messages
    assert "installing tinylib 2.0" in messages
    assert leftovers(tmp_path / "envs") == [KB]

    seen = run_env(envs.python(KB), PROBE, tmp_path)
    assert seen["answer"] == 41
    assert seen["lib"] == "tiny"
    assert seen["enabled"] is True
    assert seen["fastapi"] is False
    assert seen["pytest"] is False
    assert seen["prefix"] == str(path)
    assert str(seen["runtime_file"]).startswith(str(path))
    assert not str(seen["runtime_file"]).startswith(str(SRC))

    script = subprocess.run(
        [str(path / "bin" / "demo-app")],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == "demo-app says 41"
    assert ".building-" not in (path / "bin" / "activate").read_text()


def test_the_runtime_stays_off_unless_asked(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    envs = Environments(tmp_path / "envs")
    envs.build(KB, *release)
    done = subprocess.run(
        [str(envs.python(KB)), "-c", "import sys; print('pyhotpatch.runtime' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def wrong_hash(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    tampered = tmp_path / "tampered" / wheels[1].name
    tampered.parent.mkdir()
    tampered.write_bytes(wheels[1].read_bytes() + b"\0")
    return lock, [wheels[0], tampered]


def missing(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    return lock, wheels[:1]


def extra(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    return lock, [*wheels, make_wheel(tmp_path / "more", "stowaway", "0.1", {"stowaway.py": ""})]


def other_version(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    newer = make_wheel(tmp_path / "more", "tinylib", "2.1", LIB)
    return lock_for(
        tmp_path / "lock2.txt", [("demo-app", "1.0.1", wheels[0]), ("tinylib", "2.0", newer)]
    ), [wheels[0], newer]


def twice(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    copy = tmp_path / "more" / wheels[1].name.replace("py3-none-any", "py39-none-any")
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(wheels[1], copy)
    return lock, [*wheels, copy]


def foreign_tag(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    binary = tmp_path / "more" / "tinylib-2.0-cp27-cp27mu-manylinux1_x86_64.whl"
    binary.parent.mkdir(exist_ok=True)
    shutil.copyfile(wheels[1], binary)
    pins = [("demo-app", "1.0.1", wheels[0]), ("tinylib", "2.0", binary)]
    return lock_for(tmp_path / "lock2.txt", pins), [wheels[0], binary]


def loose_lock(tmp_path: Path, lock: Path, wheels: list[Path]) -> tuple[Path, list[Path]]:
    loose = tmp_path / "loose.txt"
    loose.write_text("demo-app>=1.0\ntinylib==2.0\n")
    return loose, wheels


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            wrong_hash,
            r"tinylib-2\.0-py3-none-any\.whl has sha256 [0-9a-f]{64}, which the lock does not allow",
        ),
        (missing, r"the lock pins tinylib==2\.0 but no wheel was given for it"),
        (extra, r"wheel stowaway-0\.1-py3-none-any\.whl is not pinned in the lock"),
        (
            other_version,
            r"tinylib-2\.1-py3-none-any\.whl is version 2\.1, but the lock pins tinylib==2\.0",
        ),
        (twice, r"two wheels for tinylib==2\.0"),
        (foreign_tag, r"tinylib-2\.0-cp27-cp27mu-manylinux1_x86_64\.whl cannot run on CPython"),
        (loose_lock, r"bad lock file .*'demo-app>=1\.0' is not an exact pin"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_a_baseline_that_does_not_match_its_lock_is_refused(
    tmp_path: Path, release: tuple[Path, list[Path]], spoil: Spoil, message: str
) -> None:
    lock, wheels = spoil(tmp_path, *release)
    envs = Environments(tmp_path / "envs")
    with pytest.raises(AgentError, match=message) as caught:
        envs.build(KB, lock, wheels)
    assert isinstance(caught.value, HotpatchError)
    assert "\n" not in str(caught.value)
    assert not envs.has(KB)
    assert leftovers(tmp_path / "envs") == []


def test_bad_arguments_are_refused(tmp_path: Path, release: tuple[Path, list[Path]]) -> None:
    envs = Environments(tmp_path / "envs")
    with pytest.raises(AgentError, match="is not a release id"):
        envs.build("../evil", *release)
    with pytest.raises(AgentError, match="cannot read the lock file"):
        envs.build(KB, tmp_path / "no-such.lock", release[1])
    with pytest.raises(AgentError, match="no Python interpreter"):
        envs.build(KB, *release, python=str(tmp_path / "no-python"))
    with pytest.raises(AgentError, match="no complete environment"):
        envs.switch(KB)
    with pytest.raises(AgentError, match="no complete environment"):
        envs.python(KB)
    assert envs.current() is None


def test_build_is_idempotent_and_removes_stale_leftovers(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    root = tmp_path / "envs"
    envs = Environments(root)
    first = envs.build(KB, *release)
    created = envs.describe(KB)["created"]
    inode = first.stat().st_ino

    stale = root / f".building-{OTHER}-0123456789ab"
    (stale / "lib").mkdir(parents=True)
    (stale / "lib" / "half.py").write_text("x = 1\n")
    again = envs.build(KB, *release)

    assert again == first
    assert first.stat().st_ino == inode
    assert envs.describe(KB)["created"] == created
    assert not stale.exists()

    for name in (f".building-{KB}-feedfacecafe", f".removing-{OTHER}-feedfacecafe"):
        (root / name / "bin").mkdir(parents=True)
    (root / ".current-feedfacecafe").symlink_to(KB)
    Environments(root)
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [KB]


def test_the_same_kb_with_another_lock_is_refused(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    lock, wheels = release
    envs = Environments(tmp_path / "envs")
    envs.build(KB, lock, wheels)
    newer = make_wheel(tmp_path / "newer", "tinylib", "2.1", LIB)
    other = lock_for(
        tmp_path / "other.txt", [("demo-app", "1.0.1", wheels[0]), ("tinylib", "2.1", newer)]
    )
    with pytest.raises(AgentError, match=r"already exists with other versions.*tinylib==2\.1"):
        envs.build(KB, other, [wheels[0], newer])
    assert envs.describe(KB)["pins"]["tinylib"] == "2.0"


def test_a_killed_build_leaves_nothing_half_built(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    lock, wheels = release
    root = tmp_path / "envs"
    code = f"""
        import sys, time
        from pathlib import Path
        from pyhotpatch.agent._environments import Environments

        def progress(message):
            print(message, flush=True)
            if message.startswith("installing tinylib"):
                time.sleep(120)

        Environments(Path({str(root)!r})).build(
            {KB!r}, Path({str(lock)!r}), [Path(p) for p in {list(map(str, wheels))!r}],
            progress=progress,
        )
        """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("installing tinylib"):
                break
        else:
            pytest.fail(f"the build ended early (exit {child.wait(timeout=60)})")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
        if child.stdout is not None:
            child.stdout.close()

    assert [p.name.startswith(f".building-{KB}-") for p in root.iterdir() if p.is_dir()] == [True]
    envs = Environments(root)
    assert leftovers(root) == []
    assert not envs.has(KB)
    envs.build(KB, lock, wheels)
    assert envs.has(KB)


def test_switch_is_atomic_and_prune_keeps_current(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    lock, wheels = release
    root = tmp_path / "envs"
    envs = Environments(root)
    envs.build(KB, lock, wheels)
    newer = make_wheel(tmp_path / "newer", "tinylib", "2.1", {"tinylib.py": "VALUE = 'newer'\n"})
    other = lock_for(
        tmp_path / "other.txt", [("demo-app", "1.0.1", wheels[0]), ("tinylib", "2.1", newer)]
    )
    envs.build(OTHER, other, [wheels[0], newer])
    assert envs.current() is None
    envs.switch(KB)
    assert envs.current() == KB

    seen: list[str] = []
    problems: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                target = os.readlink(root / "current")
            except OSError as exc:
                problems.append(repr(exc))
                continue
            seen.append(target)
            if not (root / "current" / MARKER).is_file():
                problems.append(f"current -> {target} has no marker")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for turn in range(300):
            envs.switch(OTHER if turn % 2 == 0 else KB)
    finally:
        done.set()
        watcher.join(timeout=60)
    assert problems == []
    assert set(seen) <= {KB, OTHER}
    assert envs.current() == KB
    assert not [p for p in root.iterdir() if p.name.startswith(".current-")]

    envs.switch(OTHER)
    assert envs.prune(keep=[]) == [KB]
    assert envs.current() == OTHER
    assert envs.has(OTHER)
    assert not (root / KB).exists()
    assert envs.prune(keep=[OTHER]) == []
    assert run_env(envs.python(OTHER), PROBE, tmp_path)["lib"] == "newer"


def test_adopt_records_an_existing_venv_without_touching_it(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    venv = tmp_path / "service-venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=120,
        env=clean_env(),
    )
    before = sorted(p.name for p in venv.iterdir())
    root = tmp_path / "envs"
    envs = Environments(root)

    envs.adopt(OTHER, venv / "bin" / "python")
    envs.adopt(OTHER, venv)

    assert envs.has(OTHER)
    assert envs.describe(OTHER)["python"] == ".".join(map(str, sys.version_info[:3]))
    assert sorted(p.name for p in venv.iterdir()) == before
    done = subprocess.run(
        [str(envs.python(OTHER)), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.stdout.strip() == str(root / OTHER)
    envs.switch(OTHER)

    envs.build(KB, *release)
    with pytest.raises(AgentError, match=f"{KB} already names"):
        envs.adopt(KB, venv)
    with pytest.raises(AgentError, match="not a virtual environment"):
        envs.adopt("KB5000003", tmp_path)

    envs.switch(KB)
    assert envs.prune(keep=[]) == [OTHER]
    assert not (root / OTHER).is_symlink()
    assert sorted(p.name for p in venv.iterdir()) == before
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [KB, "current"]


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_an_environment_on_another_python(
    tmp_path: Path, release: tuple[Path, list[Path]], version: str
) -> None:
    exe = find_python(version)
    if exe is None:
        required = os.environ.get("PYHOTPATCH_REQUIRE_PYTHONS", "").replace(",", " ").split()
        if version in required:
            pytest.fail(f"CPython {version} is required (PYHOTPATCH_REQUIRE_PYTHONS) but not found")
        pytest.skip(f"CPython {version} not installed")
    # made from a venv's interpreter, the environment must stand on the base one
    middle = tmp_path / "middle"
    subprocess.run(
        [exe, "-m", "venv", "--without-pip", str(middle)], check=True, timeout=120, env=clean_env()
    )
    envs = Environments(tmp_path / "envs")
    envs.build(KB, *release, python=str(middle / "bin" / "python"))
    shutil.rmtree(middle)

    assert envs.describe(KB)["python"].startswith(version + ".")
    seen = run_env(envs.python(KB), PROBE, tmp_path)
    assert seen["version"] == [int(part) for part in version.split(".")]
    assert seen["enabled"] is True
    assert seen["answer"] == 41
    assert seen["fastapi"] is False


def test_an_interpreter_too_old_for_the_runtime_is_refused(
    tmp_path: Path, release: tuple[Path, list[Path]]
) -> None:
    exe = find_python("3.9")
    if exe is None:
        pytest.skip("CPython 3.9 not installed")
    envs = Environments(tmp_path / "envs")
    with pytest.raises(AgentError, match=r"cpython 3\.9\.\d+ cannot run the hotpatch runtime"):
        envs.build(KB, *release, python=exe)
    assert leftovers(tmp_path / "envs") == []
