"""``hotpatch demo`` end to end: real PyJWT releases from PyPI, a real service, a live apply."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import ROOT

HOTPATCH = Path(sys.executable).with_name("hotpatch")


def _demo(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    return subprocess.run(
        [str(HOTPATCH), "demo", "--engine", "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_demo_patches_the_running_service_without_failed_requests(tmp_path: Path) -> None:
    done = _demo(tmp_path / "demo")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    before, _, after = out.partition("[6/7]")
    assert re.search(r"forged token → 200 ACCEPTED \(vulnerable\)", before), out
    assert re.search(r"forged token → 401 REJECTED", after), out
    assert re.search(r"valid token\s+→ 200 accepted", after), out
    assert "swapped  jwt/api_jwt.py:415: jwt.api_jwt.PyJWT._validate_iss" in out
    assert re.search(r"failed requests: 0\b", out), out
    served = re.search(r"requests served: before (\d+), during the apply (\d+), after (\d+)", out)
    assert served is not None, out
    assert int(served[1]) > 0 and int(served[3]) > 0, out

    pid = re.search(r"pid (\d+) serving http://127\.0\.0\.1:\d+/whoami", out)
    assert pid is not None, out
    assert f"pids seen in responses [{pid[1]}]: PID unchanged" in out
    assert "PASS" in out and "✗" not in out, out

    # the service was stopped cleanly and removed its control socket
    assert not _alive(int(pid[1]))
    assert not list((tmp_path / "demo" / "run").glob("*.sock"))
    assert (tmp_path / "demo" / "KB5053861.hotpatch").is_file()


def _mint(secret: str, user: str, issuer: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "iss": issuer, "exp": int(time.time()) + 600}).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def _whoami(port: int, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/whoami", headers={"Authorization": f"Bearer {token}"})
        return conn.getresponse().status
    finally:
        conn.close()


def _hotpatch(run_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    env["PYHOTPATCH_RUN_DIR"] = run_dir
    return subprocess.run(
        [str(HOTPATCH), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_keep_running_leaves_a_patched_service_that_ps_and_revert_reach(tmp_path: Path) -> None:
    done = _demo(tmp_path / "demo", "--keep-running")
    out = done.stdout
    left = re.search(r"service left running: pid (\d+), http://127\.0\.0\.1:(\d+)/whoami", out)
    assert left is not None, out + done.stderr
    pid, port = int(left[1]), int(left[2])
    try:
        assert done.returncode == 0, out + done.stderr
        run_dir = re.search(r"PYHOTPATCH_RUN_DIR=(\S+) hotpatch ps", out)
        assert run_dir is not None, out
        assert f"hotpatch revert KB5053861 --pid {pid}" in out

        ps = _hotpatch(run_dir[1], "ps", "--json")
        rows = {row["pid"]: row for row in json.loads(ps.stdout)}
        assert rows[pid]["active"]["id"] == "KB5053861", ps.stdout

        # the service's key, to forge the CVE's token ourselves (same user: environ is readable)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        secret = next(
            e.split(b"=", 1)[1] for e in environ if e.startswith(b"PYHOTPATCH_DEMO_SECRET=")
        )
        forged = _mint(secret.decode(), "mallory", "acme")
        assert _whoami(port, forged) == 401

        reverted = _hotpatch(run_dir[1], "revert", "KB5053861", "--pid", str(pid))
        assert reverted.returncode == 0, reverted.stdout + reverted.stderr
        assert _whoami(port, forged) == 200  # back to the baseline: vulnerable again
        assert _whoami(port, _mint(secret.decode(), "alice", "urn:acme:auth")) == 200
        ps = _hotpatch(run_dir[1], "ps", "--json")
        assert {row["pid"]: row for row in json.loads(ps.stdout)}[pid]["active"] is None
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert not list(Path(run_dir[1]).glob(f"{pid}.sock"))


def test_demo_releases_are_fetched_as_pure_wheels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build step fetches pyjwt 2.10.0 and 2.10.1; both publish py3-none-any wheels, which
    # the builder must prefer over sdists (which pip must build: slower, and not always possible).
    from pyhotpatch.build import load_release

    monkeypatch.setenv("PYHOTPATCH_CACHE", str(tmp_path / "cache"))
    release = load_release("pyjwt==2.10.1")
    assert (release.name, release.version) == ("PyJWT", "2.10.1")
    origin = release.origin
    assert origin.endswith("-py3-none-any.whl"), origin
