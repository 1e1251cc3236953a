"""Real node agents against a real control plane: the world the agent tests run in.

A ``World`` is a control plane over HTTPS (``hotpatch server --dev-tls``) whose catalog
holds the demo stack's releases, built from real wheels. ``AgentProcess`` is one
machine: ``hotpatch agent connect`` then ``hotpatch agent run`` as subprocesses, each
running the demo web service with its workers on a loopback port. ``Load`` is a steady
loopback client that counts failed requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arm import Arm, start_arm
from catalog_fixtures import Publisher
from loopback import Load, free_port, get, wait_for
from pyhotpatch.catalog import Catalog, Kind
from pyhotpatch.demo.stack import demo_wheels
from pyhotpatch.runtime import client
from servers import HOTPATCH, TOKEN
from sim_agent import register_compute

SUB = "00000000-0000-0000-0000-00000000a9e7"
GROUP = "fleet"
BASELINE_1, HOTPATCH_1, BASELINE_2 = "KB5060100", "KB5060101", "KB5060110"
WORKER = "{python} -m pyhotpatch.demo.worker --app demoapp.web:handle"


@dataclass
class World:
    """A control plane with the demo stack's baseline and hotpatch published."""

    arm: Arm
    data_dir: Path
    wheels: dict[str, Path]
    root: Path

    def publisher(self) -> tuple[Catalog, Publisher]:
        catalog = Catalog.open(self.data_dir, url=self.arm.db_url)
        return catalog, Publisher(catalog, self.root)

    def publish_baseline(self, kb: str, version: str, at: str, kind: Kind) -> None:
        catalog, publisher = self.publisher()
        try:
            request = publisher.baseline(
                kb, [self.wheels[version]], at, kind=kind, classifications=("Security",)
            )
            catalog.publish(request)
        finally:
            catalog.close()

    def publish_hotpatch(self, kb: str, old: str, new: str, at: str) -> None:
        catalog, publisher = self.publisher()
        try:
            catalog.publish(publisher.hotpatch(kb, [(self.wheels[old], self.wheels[new])], at))
        finally:
            catalog.close()

    def agent(self, root: Path, name: str, **options: Any) -> AgentProcess:
        return AgentProcess(self, root / name, name, **options)


@contextlib.contextmanager
def world(root: Path, *server_args: str) -> Iterator[World]:
    """A running control plane with baseline 1 (demo app 1.0.0) and its hotpatch (1.0.1)."""
    data_dir = root / "server"
    arm = start_arm(data_dir, *server_args)
    try:
        register_compute(arm, SUB)
        wheels = demo_wheels(root / "wheels")
        found = World(arm, data_dir, wheels, root / "releases")
        found.root.mkdir()
        found.publish_baseline(BASELINE_1, "1.0.0", "2026-10-13", Kind.PLANNED_BASELINE)
        found.publish_hotpatch(HOTPATCH_1, "1.0.0", "1.0.1", "2026-11-10")
        yield found
    finally:
        arm.server.stop()


@dataclass
class AgentProcess:
    """One machine: its agent (a ``hotpatch agent run`` subprocess) and its service's port."""

    world: World
    state_dir: Path
    name: str
    workers: int = 2
    image: str = "pyhotpatch:python-service:demo-hotpatch"
    zone: str | None = None
    command: str = WORKER
    heartbeat_seconds: float = 2.0
    poll_seconds: float = 2.0
    python: str | None = None
    #: the service is run by its own manager, restarted with this command
    external_restart: str | None = None
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def vm_id(self) -> str:
        return (
            f"/subscriptions/{SUB}/resourceGroups/{GROUP}/providers/"
            f"Microsoft.Compute/virtualMachines/{self.name}"
        )

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def connect(self) -> subprocess.CompletedProcess[str]:
        arm = self.world.arm
        args = [
            *HOTPATCH, "agent", "connect",
            "--server", arm.url, "--token", arm.token("Contributor", SUB),
            "--subscription", SUB, "--resource-group", GROUP, "--name", self.name,
            "--location", "westus", "--image", self.image, "--ca", str(arm.ca),
            "--service-command", self.command, "--workers", str(self.workers),
            "--listen", f"127.0.0.1:{self.port}",
            "--probe-url", f"http://127.0.0.1:{self.port}/health",
            "--heartbeat-seconds", str(self.heartbeat_seconds),
            "--poll-seconds", str(self.poll_seconds),
            "--state-dir", str(self.state_dir),
        ]  # fmt: skip
        if self.zone:
            args += ["--zone", self.zone]
        if self.python:
            args += ["--python", self.python]
        if self.external_restart:
            args += ["--external-service", "--restart-command", self.external_restart]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def start(self, crash_at: str | None = None) -> AgentProcess:
        env = {**os.environ, **self.env}
        env.pop("PYHOTPATCH_AGENT_CRASH_AT", None)
        if crash_at:
            env["PYHOTPATCH_AGENT_CRASH_AT"] = crash_at
        with (self.state_dir / "agent.out").open("ab") as log:
            self.proc = subprocess.Popen(
                [*HOTPATCH, "agent", "run", "--state-dir", str(self.state_dir), "--stop-service"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def serving(self, timeout: float = 120.0) -> AgentProcess:
        """Wait until every worker is up and the service answers."""
        wait_for(
            f"{self.name}'s service",
            lambda: len(self.pids()) >= self.workers and get(self.port, "/health")[0] == 200,
            timeout,
        )
        return self

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return data

    def pids(self) -> list[int]:
        return client.processes(self.run_dir)

    def active(self) -> dict[int, str | None]:
        """Each service process's active hotpatch."""
        found = {}
        for pid in self.pids():
            info = client.status(pid, self.run_dir)
            found[pid] = (info.get("active") or {}).get("id")
        return found

    def python_of(self, pid: int) -> str:
        """The interpreter a service process runs (which environment it is on)."""
        return str(client.status(pid, self.run_dir)["executable"])

    def kill(self) -> None:
        """SIGKILL the agent (its service keeps running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def wait_exit(self, timeout: float = 120.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Stop the agent and, with it, the service."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        for pid in self.pids():  # workers left behind by a killed agent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        path = self.state_dir / "agent.out"
        return path.read_text(errors="replace") if path.exists() else ""


def install(world: World, machine: str, **parameters: Any) -> dict[str, Any]:
    """``installPatches`` through the Azure SDK; its result."""
    from azure.mgmt.compute import ComputeManagementClient

    arm = world.arm
    compute = ComputeManagementClient(subscription_id=SUB, **arm.sdk(arm.token("Owner", SUB)))
    body = {
        "maximumDuration": parameters.pop("maximumDuration", "PT1H"),
        "rebootSetting": parameters.pop("rebootSetting", "IfRequired"),
        "windowsParameters": {
            "classificationsToInclude": parameters.pop("classifications", ["Critical", "Security"]),
            **parameters,
        },
    }
    try:
        result = compute.virtual_machines.begin_install_patches(GROUP, machine, body).result(180)
        return result if isinstance(result, dict) else result.as_dict()
    finally:
        compute.close()


def assess(world: World, machine: str) -> dict[str, Any]:
    """``assessPatches`` through the Azure SDK; its result."""
    from azure.mgmt.compute import ComputeManagementClient

    arm = world.arm
    compute = ComputeManagementClient(subscription_id=SUB, **arm.sdk(arm.token("Owner", SUB)))
    try:
        result = compute.virtual_machines.begin_assess_patches(GROUP, machine).result(120)
        return result if isinstance(result, dict) else result.as_dict()
    finally:
        compute.close()


__all__ = ["TOKEN", "Load", "free_port", "get", "wait_for"]
