"""The narrated demonstration behind ``hotpatch demo``.

A real service running PyJWT 2.10.0 accepts a forged token (CVE-2024-53861:
``iss`` is checked with a substring test). While a steady load runs against it,
the hotpatch is built from the 2.10.0 and 2.10.1 releases on PyPI and applied
through the service's control socket; the forged token is then refused, no
request fails and the process keeps its PID. ``run`` returns 0 when every part
of that story held, 1 otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from pyhotpatch.demo import ISSUER, SECRET_ENV
from pyhotpatch.errors import HotpatchError

BASELINE, FIXED = "pyjwt==2.10.0", "pyjwt==2.10.1"
PATCH_ID, CVE = "KB5053861", "CVE-2024-53861"
FORGED_ISSUER = "acme"  # a substring of ISSUER: PyJWT 2.10.0 accepts it
STEPS = 7

console = Console(highlight=False, soft_wrap=True)


class DemoFailed(Exception):
    """A step of the demonstration could not be carried out."""


def run(workdir: Path, *, keep_running: bool = False) -> int:
    """Run the demonstration in ``workdir``; return 0 if the whole story held, else 1."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]hotpatch demo[/]: {CVE} in PyJWT 2.10.0, fixed in a running service "
        "without a restart"
    )
    service: Service | None = None
    load: Load | None = None
    try:
        site = _step1_install(workdir)
        service = _step2_start(workdir, site)
        load = _step3_load(service)
        before = _step4_vulnerable(service)
        package = _step5_build(workdir)
        applied = _step6_apply(service, package, load)
        ok = _step7_check(service, load, before, applied)
    except (DemoFailed, HotpatchError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"\n[bold red]demo failed[/]: {type(exc).__name__}: {escape(str(exc))}")
        if service is not None:
            console.print(f"service log: {_show(service.log)}")
        ok, keep_running = False, False
    except KeyboardInterrupt:
        console.print("\n[bold red]interrupted[/]")
        ok, keep_running = False, False
    finally:
        if load is not None:
            load.stop()
        if service is not None and not keep_running:
            service.stop()
    if service is not None and keep_running:
        _print_keep_running(service)
    return 0 if ok else 1


# --- the steps -------------------------------------------------------------------------------


def _step1_install(workdir: Path) -> Path:
    _step(1, f"Install the vulnerable release {BASELINE}")
    site = workdir / "site-2.10.0"
    if (site / "jwt" / "__init__.py").is_file():
        _say(f"{_show(site)} (cached)")
        return site
    tmp = Path(tempfile.mkdtemp(prefix=".site-", dir=workdir))
    try:
        _pip("install", "--no-deps", "--target", str(tmp), BASELINE)
        tmp.rename(site)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(f"pip install --target {_show(site)} {BASELINE}")
    return site


def _step2_start(workdir: Path, site: Path) -> Service:
    _step(2, "Start the service: PyJWT-protected HTTP API, hotpatch runtime enabled")
    service = Service.start(workdir, site)
    _say(
        f"[bold]pid {service.pid}[/] serving http://127.0.0.1:{service.port}/whoami; "
        f"control socket {_show(service.run_dir / f'{service.pid}.sock')}"
    )
    return service


def _step3_load(service: Service) -> Load:
    _step(3, "Start steady load: valid tokens, keep-alive connections")
    load = Load(service.port, service.token("alice", ISSUER))
    load.start()
    time.sleep(1.0)
    served = len(load.samples)
    _say(
        f"{load.clients} clients → GET /whoami: [bold]{served}[/] requests in the first second, "
        f"{len(load.failures)} failed"
    )
    return load


def _step4_vulnerable(service: Service) -> int:
    _step(4, f"Show the vulnerability {CVE}")
    _say(
        f'token signed with the service\'s key, but iss="{FORGED_ISSUER}" '
        f'(the service expects iss="{ISSUER}")'
    )
    status, body = service.whoami(service.token("mallory", FORGED_ISSUER))
    verdict = "[bold red]ACCEPTED (vulnerable)[/]" if status == 200 else "[bold]REJECTED[/]"
    _say(f"forged token → {status} {verdict} {escape(body)}")
    return status


def _step5_build(workdir: Path) -> bytes:
    _step(5, f"Build hotpatch {PATCH_ID} from {BASELINE} → {FIXED} (real releases from PyPI)")
    from pyhotpatch.build import build

    started = time.perf_counter()
    result = build(
        BASELINE,
        FIXED,
        patch_id=PATCH_ID,
        cves=(CVE,),
        title="PyJWT: issuer checked by substring (CVE-2024-53861)",
    )
    elapsed = time.perf_counter() - started
    for key in ("swapped", "added", "rebuilt", "ignored"):
        for line in getattr(result.explain, key):
            _say(f"{key:8} {line}")
    path = workdir / f"{PATCH_ID}.hotpatch"
    result.write(path)
    data = path.read_bytes()
    wheel = _fixed_wheel(workdir)
    size = wheel.stat().st_size
    _say(
        f"built in {elapsed:.1f} s → {_show(path)}: [bold]{len(data):,} bytes[/] "
        f"(the fixed wheel {wheel.name} is {size:,} bytes, {size / len(data):.0f}x larger)"
    )
    return data


def _step6_apply(service: Service, package: bytes, load: Load) -> dict[str, Any]:
    _step(6, f"Apply {PATCH_ID} to pid {service.pid} through its control socket, under load")
    from pyhotpatch.runtime import client

    load.mark("apply_start")
    report: dict[str, Any] = client.apply(service.pid, package, run_dir=service.run_dir)
    load.mark("apply_end")
    latency = (load.marks["apply_end"] - load.marks["apply_start"]) * 1e3
    changes = [_count(report["functions"], "function") + " swapped"]
    if report["definitions"]:
        changes.append(_count(report["definitions"], "definition") + " replaced")
    if report["rebuilt"]:
        changes.append(_count(report["rebuilt"], "module-level object") + " rebuilt")
    pause, prepare = report["pause_ms"], report["prepare_ms"]
    _say(
        f"applied in [bold]{latency:.1f} ms[/] (round trip over the socket); the engine paused "
        f"the process for [bold]{pause:.3f} ms[/] after {prepare:.1f} ms of checks; "
        f"{', '.join(changes)}"
    )
    return report


def _step7_check(service: Service, load: Load, before: int, report: dict[str, Any]) -> bool:
    _step(7, "Check: same process, vulnerability gone, no request lost")
    forged, body = service.whoami(service.token("mallory", FORGED_ISSUER))
    verdict = "[bold green]REJECTED[/]" if forged == 401 else "[bold red]ACCEPTED (vulnerable)[/]"
    _say(f"forged token → {forged} {verdict} {escape(body)}")
    valid, body = service.whoami(service.token("alice", ISSUER))
    _say(f"valid token  → {valid} {'accepted' if valid == 200 else 'REFUSED'} {escape(body)}")
    time.sleep(1.0)  # let the load run on the patched code for a while
    load.stop()
    phases = load.phases()
    failed = len(load.failures)
    latencies = [s.latency for s in load.samples]
    worst = dict.fromkeys(phases, 0.0)
    for sample in load.samples:
        worst[load.phase(sample)] = max(worst[load.phase(sample)], sample.latency)
    pids = sorted(load.pids)
    alive = service.alive()
    _say(
        f"requests served: before [bold]{phases['before']}[/], during the apply "
        f"[bold]{phases['during']}[/], after [bold]{phases['after']}[/]; failed requests: "
        f"[bold {'green' if failed == 0 else 'red'}]{failed}[/]"
    )
    _say(
        f"latency avg {_ms(sum(latencies) / max(len(latencies), 1))}; max before "
        f"{_ms(worst['before'])}, during the apply {_ms(worst['during'])}, "
        f"after {_ms(worst['after'])}"
    )
    _say(
        f"service pid before {service.pid}, pids seen in responses {pids}: "
        + (
            "[bold green]PID unchanged[/]"
            if pids == [service.pid] and alive
            else "[bold red]PID changed[/]"
        )
    )
    for failure in load.failures[:5]:
        _say(f"[red]failure[/]: {escape(failure)}")
    checks = {
        "forged token accepted before the hotpatch": before == 200,
        "forged token rejected after the hotpatch": forged == 401,
        "valid token accepted after the hotpatch": valid == 200,
        "hotpatch applied in the running process": not report.get("already_active")
        and report.get("functions", 0) > 0,
        "no failed request": failed == 0 and phases["after"] > 0,
        "same process, PID unchanged": pids == [service.pid] and alive,
    }
    console.print()
    for name, held in checks.items():
        console.print(f"  {'[green]✓[/]' if held else '[red]✗[/]'} {name}")
    ok = all(checks.values())
    console.print(
        "\n[bold green]PASS[/]: the service was patched live, no restart, no failed request"
        if ok
        else "\n[bold red]FAIL[/]: the story above did not hold"
    )
    return ok


def _print_keep_running(service: Service) -> None:
    env = f"PYHOTPATCH_RUN_DIR={service.run_dir}"
    console.print(
        f"\nservice left running: pid {service.pid}, http://127.0.0.1:{service.port}/whoami"
    )
    console.print(f"  {env} hotpatch ps")
    console.print(f"  {env} hotpatch revert {PATCH_ID} --pid {service.pid}")
    console.print(f"  kill {service.pid}    # to stop it")


# --- the service and the load ----------------------------------------------------------------


@dataclass
class Service:
    """The demo service running as a subprocess."""

    process: subprocess.Popen[str]
    port: int
    run_dir: Path
    log: Path
    secret: str

    @property
    def pid(self) -> int:
        """The service's process id."""
        return self.process.pid

    @classmethod
    def start(cls, workdir: Path, site: Path, timeout: float = 30.0) -> Service:
        """Start ``python -m pyhotpatch.demo.service`` and wait until it listens."""
        import pyhotpatch

        run_dir = _run_dir(workdir)
        secret = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
        own = Path(pyhotpatch.__file__).resolve().parent.parent  # keep pyhotpatch importable
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(own)])
        env["PYHOTPATCH_RUN_DIR"] = str(run_dir)
        env[SECRET_ENV] = secret
        log = workdir / "service.log"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "pyhotpatch.demo.service"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        process.stdout.close()
        try:
            port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            process.kill()
            process.wait()
            raise DemoFailed(f"the service did not start: see {_show(log)}") from None
        return cls(process, port, run_dir, log, secret)

    def token(self, user: str, issuer: str) -> str:
        """Mint an HS256 JWT signed with the service's key (with the stdlib only)."""
        claims = {"sub": user, "iss": issuer, "exp": int(time.time()) + 3600}
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims).encode())
        mac = hmac.new(self.secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"

    def whoami(self, token: str) -> tuple[int, str]:
        """``GET /whoami`` with ``token`` on a fresh connection: (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/whoami", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def alive(self) -> bool:
        """Whether the service process is still running."""
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM the service and wait for it (SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Sample:
    """One request of the load: when it finished, how long it took, whether it got a 200."""

    end: float
    latency: float
    ok: bool


@dataclass
class Load:
    """A few threads sending valid-token requests continuously on keep-alive connections."""

    port: int
    token: str
    clients: int = 2
    interval: float = 0.004  # seconds between the starts of one client's requests
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    marks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start the client threads."""
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the clients and wait for their last requests."""
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def mark(self, name: str) -> None:
        """Record the current time under ``name`` (phases are split on these marks)."""
        self.marks[name] = time.perf_counter()

    def phase(self, sample: Sample) -> str:
        """``before``, ``during`` or ``after`` the apply, by when the request finished."""
        if sample.end < self.marks.get("apply_start", float("inf")):
            return "before"
        return "during" if sample.end <= self.marks.get("apply_end", float("inf")) else "after"

    def phases(self) -> dict[str, int]:
        """How many requests were served in each phase."""
        counts = dict.fromkeys(("before", "during", "after"), 0)
        for sample in self.samples:
            counts[self.phase(sample)] += 1
        return counts

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self._stop.is_set():
            started = time.perf_counter()
            ok = False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/whoami", headers=headers)
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200
                if ok:
                    self.pids.add(int(json.loads(body)["pid"]))
                else:
                    self.failures.append(f"HTTP {response.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
            end = time.perf_counter()
            self.samples.append(Sample(end, end - started, ok))
            self._stop.wait(max(0.0, self.interval - (end - started)))
        if conn is not None:
            conn.close()


# --- helpers ---------------------------------------------------------------------------------


def _fixed_wheel(workdir: Path) -> Path:
    """Download the fixed release's wheel once, to compare its size with the hotpatch."""
    directory = workdir / "wheels"
    name = FIXED.replace("==", "-") + "-"
    for _ in range(2):
        found = [p for p in sorted(directory.glob("*.whl")) if p.name.lower().startswith(name)]
        if found:
            return found[0]
        _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(directory), FIXED)
    raise DemoFailed(f"pip did not download a wheel of {FIXED}")


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DemoFailed(f"pip {args[0]} failed: {done.stderr.strip()[-500:]}")


def _run_dir(workdir: Path) -> Path:
    """Where the service puts its control socket: in the workdir, unless that path is too long."""
    run_dir = workdir / "run"
    if len(str(run_dir)) > 80:  # AF_UNIX paths are limited to ~100 bytes with "/<pid>.sock"
        run_dir = Path(tempfile.gettempdir()) / f"pyhotpatch-demo-{os.getuid()}"
    return run_dir


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ms(seconds: float) -> str:
    return f"[bold]{seconds * 1e3:.1f} ms[/]"


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _step(n: int, title: str) -> None:
    console.print(f"\n[bold cyan][{n}/{STEPS}][/] [bold]{title}[/]")


def _say(text: str) -> None:
    console.print(f"      {text}")
