"""The node agent end to end: real agents, real services under load, a real control plane.

Every test enrols its own machine (``hotpatch agent connect``), runs ``hotpatch agent
run`` as a subprocess that provisions the demo stack's baseline and runs its web
service, and drives it through the Azure SDK and the control plane's API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent_world import (
    BASELINE_1,
    GROUP,
    HOTPATCH_1,
    SUB,
    WORKER,
    AgentProcess,
    Load,
    World,
    assess,
    get,
    install,
    wait_for,
    world,
)
from pyhotpatch.agent._machine import CRASH_POINTS
from pyhotpatch.runtime import client
from servers import HOTPATCH

pytestmark = pytest.mark.slow

TRAVERSAL = "/files?name=../secrets/token"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("fleet")) as found:
        yield found


@pytest.fixture
def machines() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def enrolled(
    fleet: World, root: Path, name: str, machines: list[AgentProcess], **options: Any
) -> AgentProcess:
    agent = fleet.agent(root, name, **options)
    machines.append(agent)
    agent.connect()
    return agent.start().serving()


def hotpatch_status(fleet: World, agent: AgentProcess) -> dict[str, Any]:
    with fleet.arm.http() as client:
        reply = client.get(f"/hotpatch/machines{agent.vm_id}/hotpatchStatus")
    assert reply.status_code == 200, reply.text
    found: dict[str, Any] = reply.json()
    return found


def queue(
    fleet: World, agent: AgentProcess, action: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Queue agent-side work (``revertHotpatch``, ``upgradeStack``) and wait for its result."""
    with fleet.arm.http() as client:
        reply = client.post(f"/hotpatch/machines{agent.vm_id}/{action}", json=body or {})
        assert reply.status_code == 202, reply.text
        item = reply.json()["workItem"]

        def finished() -> dict[str, Any] | None:
            found: dict[str, Any] = client.get(
                f"/hotpatch/machines{agent.vm_id}/jobs/{item}"
            ).json()
            return found if found["state"] in ("done", "failed") else None

        return dict(wait_for(f"{action} work item {item}", finished, 120))


# --- enrolment ------------------------------------------------------------------------------


def test_connect_creates_the_machine_and_the_agent_provisions_its_stack(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-connect", machines)
    credential = agent.state_dir / "credential"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.state_dir.stat().st_mode) == 0o700
    config = json.loads((agent.state_dir / "agent.json").read_text())
    assert config["machine"].lower() == agent.vm_id.lower()
    assert credential.read_text().strip() not in json.dumps(config)

    state = agent.state()
    assert state["baseline"] == BASELINE_1 and state["product"] == "pyhotpatch-demo"
    assert get(agent.port, "/version")[1]["version"] == "1.0.0"
    # what the machine runs is reported by its agent
    status = wait_for(
        "the agent's report", lambda: (s := hotpatch_status(fleet, agent))["baseline"] and s
    )
    assert status["running"] is True
    assert status["baseline"] == BASELINE_1 and status["activeHotpatch"] is None
    assert status["health"]["status"] == "Healthy"


def test_a_second_connect_of_the_same_machine_enrols_without_creating(
    fleet: World, tmp_path: Path
) -> None:
    first = fleet.agent(tmp_path, "vm-twice")
    first.connect()
    again = AgentProcess(fleet, tmp_path / "again", "vm-twice")
    assert "created" not in again.connect().stdout


# --- hotpatches -----------------------------------------------------------------------------


def test_a_hotpatch_reaches_every_worker_without_a_restart_or_a_failed_request(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-hotpatch", machines, workers=4)
    assert get(agent.port, TRAVERSAL)[0] == 200  # the vulnerable baseline
    found = assess(fleet, agent.name)
    assert "availablePatches" in found, found
    offered = {p["kbId"]: p for p in found["availablePatches"]}
    assert offered[HOTPATCH_1[2:]]["rebootBehavior"] == "NeverReboots"
    assert found["criticalAndSecurityPatchCount"] == 1

    before = set(agent.pids())
    with Load(agent.port) as load:
        result = install(fleet, agent.name)
    assert load.failed == [] and load.ok > 0
    assert result["status"] == "Succeeded", result
    assert result["rebootStatus"] == "NotNeeded"
    assert [(p["kbId"], p["installationState"]) for p in result["patches"]] == [
        (HOTPATCH_1[2:], "Installed")
    ]
    assert set(agent.pids()) == before
    assert set(agent.active().values()) == {HOTPATCH_1}
    assert get(agent.port, TRAVERSAL)[0] == 403
    assert agent.state()["active_hotpatch"] == HOTPATCH_1

    # a worker started later comes up patched
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for("a replacement worker", lambda: victim not in agent.pids() and len(agent.pids()) == 4)
    assert set(agent.active().values()) == {HOTPATCH_1}

    # and nothing more is offered
    assert assess(fleet, agent.name)["availablePatches"] == []


def test_a_hotpatch_is_reverted_on_command_and_installed_again(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-revert", machines)
    install(fleet, agent.name)
    assert set(agent.active().values()) == {HOTPATCH_1}
    with Load(agent.port) as load:
        done = queue(fleet, agent, "revertHotpatch", {"kbId": HOTPATCH_1})
    assert done["state"] == "done", done
    assert done["result"]["output"]["reverted"] == HOTPATCH_1
    assert load.failed == []
    assert set(agent.active().values()) == {None}
    assert get(agent.port, TRAVERSAL)[0] == 200
    assert agent.state()["active_hotpatch"] is None

    again = install(fleet, agent.name)
    assert again["patches"][0]["installationState"] == "Installed"
    assert get(agent.port, TRAVERSAL)[0] == 403


def test_filters_and_reboot_setting_are_honoured(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-filters", machines, workers=1)
    excluded = install(fleet, agent.name, kbNumbersToExclude=[HOTPATCH_1])
    assert excluded["patches"][0]["installationState"] == "Excluded"
    assert set(agent.active().values()) == {None}
    other = install(fleet, agent.name, classifications=["Definition"])
    assert other["patches"][0]["installationState"] == "NotSelected"

    before = set(agent.pids())
    forced = install(fleet, agent.name, rebootSetting="Always")
    assert forced["rebootStatus"] == "Completed"
    assert forced["patches"][0]["installationState"] == "Installed"
    assert set(agent.pids()).isdisjoint(before)  # Always restarts the workers
    assert set(agent.active().values()) == {HOTPATCH_1}  # and they come up patched


# --- refusals -------------------------------------------------------------------------------


def test_a_tampered_package_is_refused_and_the_service_untouched(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-tamper", machines, workers=1)
    catalog, _ = fleet.publisher()
    try:
        release = catalog.release(HOTPATCH_1)
        artifact = next(a for a in release.artifacts if a.role == "hotpatch")
        blob = catalog.blobs.path(artifact.sha256)
    finally:
        catalog.close()
    original = blob.read_bytes()
    os.chmod(blob, 0o600)
    blob.write_bytes(original[:-10] + b"0123456789")
    try:
        result = install(fleet, agent.name)
    finally:
        blob.write_bytes(original)
    assert result["patches"][0]["installationState"] == "Failed"
    assert result["status"] == "Failed"
    assert "DistributionError" in json.dumps(result["error"])
    assert set(agent.active().values()) == {None}
    assert get(agent.port, TRAVERSAL)[0] == 200


# --- reliability ----------------------------------------------------------------------------

# every named point of a hotpatch install and of a revert
HOTPATCH_CRASHES = tuple(p for p in CRASH_POINTS if p.startswith(("hotpatch-", "revert-")))


@pytest.mark.parametrize("point", HOTPATCH_CRASHES)
def test_an_agent_killed_during_a_hotpatch_finishes_it_on_restart(
    point: str, fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    installing = ThreadPoolExecutor(1)
    pending: Future[dict[str, Any]] | None = None
    name = f"vm-crash-{point}"
    agent = fleet.agent(tmp_path, name, workers=3)
    machines.append(agent)
    agent.connect()
    reverting = point.startswith("revert")
    agent.start(crash_at=None if reverting else point).serving()
    pids = set(agent.pids())
    with Load(agent.port) as load:
        if reverting:
            install(fleet, agent.name)
            agent.kill()
            agent.start(crash_at=point)
            wait_for("the agent's restart", lambda: agent.proc is not None)
            with fleet.arm.http() as client:
                reply = client.post(f"/hotpatch/machines{agent.vm_id}/revertHotpatch", json={})
                assert reply.status_code == 202, reply.text
        else:
            pending = installing.submit(install, fleet, agent.name)
        assert agent.wait_exit() == -signal.SIGKILL, agent.log()
        states = set(agent.active().values())
        agent.start()
        wait_for("recovery", lambda: agent.state()["journal"] is None and agent.proc is not None)
        wait_for("every process on one release", lambda: len(set(agent.active().values())) == 1)
    assert load.failed == []
    assert set(agent.pids()) == pids  # recovered without restarting anything
    expected = None if reverting else HOTPATCH_1
    assert set(agent.active().values()) == {expected}, (states, agent.log())
    assert agent.state()["active_hotpatch"] == expected
    if pending is not None:
        # the result owed for the interrupted operation was delivered after recovery
        result = pending.result(180)
        assert [(p["kbId"], p["installationState"]) for p in result["patches"]] == [
            (HOTPATCH_1[2:], "Installed")
        ]
        assert agent.state()["outbox"] == []


def test_the_service_keeps_serving_while_the_server_is_away_and_results_catch_up(
    tmp_path: Path, machines: list[AgentProcess]
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with world(tmp_path / "outage", "--port", str(port)) as far:
        agent = enrolled(far, tmp_path, "vm-outage", machines)
        far.arm.server.stop()
        with Load(agent.port) as load:
            wait_for(
                "heartbeat failures",
                lambda: "heartbeat failed" in (agent.state_dir / "logs" / "agent.log").read_text(),
            )
        assert load.failed == [] and load.ok > 0
        assert agent.proc is not None and agent.proc.poll() is None
        from arm import start_arm

        far.arm = start_arm(far.data_dir, "--port", str(port))
        try:
            result = install(far, agent.name)
            assert result["patches"][0]["installationState"] == "Installed"
        finally:
            far.arm.server.stop()


def test_diagnostics_hold_state_logs_and_status_but_no_secret(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = enrolled(fleet, tmp_path, "vm-diagnose", machines, workers=1)
    archive = tmp_path / "diag.tar.gz"
    done = subprocess.run(
        [*HOTPATCH, "agent", "diagnose", "--state-dir", str(agent.state_dir), "-o", str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    secret = (agent.state_dir / "credential").read_text().strip()
    with tarfile.open(archive) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers())  # type: ignore[union-attr]
    assert {"agent.json", "state.json", "processes.json", "logs/agent.log"} <= names
    assert secret not in text
    assert BASELINE_1 in text


def test_the_children_of_a_prefork_worker_are_patched_too(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    agent = fleet.agent(tmp_path, "vm-prefork", workers=1, command=WORKER + " --processes 3")
    machines.append(agent)
    agent.connect()
    agent.start().serving()
    wait_for("three processes", lambda: len(agent.pids()) == 3)
    with Load(agent.port) as load:
        install(fleet, agent.name)
    assert load.failed == []
    assert list(agent.active().values()) == [HOTPATCH_1] * 3

    status = subprocess.run(
        [*HOTPATCH, "agent", "status", "--json", "--state-dir", str(agent.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["baseline"], shown["activeHotpatch"]) == (BASELINE_1, HOTPATCH_1)
    assert sorted(p["pid"] for p in shown["processes"]) == sorted(agent.pids())
    assert {p["active"] for p in shown["processes"]} == {HOTPATCH_1}


def test_a_systemd_unit_ships_with_the_agent() -> None:
    unit = subprocess.run(
        [*HOTPATCH, "agent", "systemd-unit"], capture_output=True, text=True, timeout=60
    )
    assert unit.returncode == 0, unit.stderr
    assert "ExecStart=" in unit.stdout and "hotpatch agent run" in unit.stdout
    assert "KillMode=process" in unit.stdout  # restarting the agent leaves the service running


def test_the_service_can_run_on_every_supported_python(
    python: str, fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    version = python.rsplit("python", 1)[-1].replace(".", "")
    agent = fleet.agent(tmp_path, f"vm-py{version}", workers=2, python=python)
    machines.append(agent)
    agent.connect()
    agent.start().serving()
    assert {agent.python_of(pid) for pid in agent.pids()} == {
        str(agent.state_dir / "envs" / BASELINE_1 / "bin" / "python")
    }
    wanted = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert {client.status(pid, agent.run_dir)["python"] for pid in agent.pids()} == {wanted}
    with Load(agent.port) as load:
        result = install(fleet, agent.name)
    assert load.failed == [] and result["patches"][0]["installationState"] == "Installed"
    assert set(agent.active().values()) == {HOTPATCH_1}
    assert get(agent.port, TRAVERSAL)[0] == 403


def test_with_hotpatch_turned_off_a_hotpatch_installs_by_restarting_the_workers(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    from azure.mgmt.compute import ComputeManagementClient

    agent = enrolled(fleet, tmp_path, "vm-off", machines, workers=2)
    arm = fleet.arm
    compute = ComputeManagementClient(subscription_id=SUB, **arm.sdk(arm.token("Owner", SUB)))
    try:
        vm = compute.virtual_machines.get(GROUP, agent.name)
        vm.os_profile.windows_configuration.patch_settings.enable_hotpatching = False
        compute.virtual_machines.begin_create_or_update(GROUP, agent.name, vm).result()
    finally:
        compute.close()
    offered = assess(fleet, agent.name)["availablePatches"]
    assert [p["rebootBehavior"] for p in offered] == ["AlwaysRequiresReboot"]

    before = set(agent.pids())
    with Load(agent.port) as load:
        result = install(fleet, agent.name)
    assert load.failed == []
    assert result["rebootStatus"] == "Completed"
    assert result["patches"][0]["installationState"] == "Installed"
    after = set(agent.pids())
    assert after.isdisjoint(before) and len(after) == 2
    assert set(agent.active().values()) == {HOTPATCH_1}  # applied as each worker started
    assert get(agent.port, TRAVERSAL)[0] == 403


def test_a_service_run_by_its_own_manager_is_patched_and_restarted_through_it(
    fleet: World, tmp_path: Path, machines: list[AgentProcess]
) -> None:
    pidfile, manager = tmp_path / "service.pid", tmp_path / "restart-service"
    agent = fleet.agent(tmp_path, "vm-external", workers=1, external_restart=str(manager))
    machines.append(agent)
    state, port = agent.state_dir, agent.port
    # the service's own manager, as a systemd unit would be: the runtime pointed at the
    # agent's state, the current baseline's interpreter
    manager.write_text(
        f"""#!/bin/sh
old=$(cat {pidfile} 2>/dev/null)
[ -n "$old" ] && kill "$old" 2>/dev/null
while [ -n "$old" ] && kill -0 "$old" 2>/dev/null; do sleep 0.05; done
PYHOTPATCH=1 PYHOTPATCH_RUN_DIR={state}/run PYHOTPATCH_PACKAGE={state}/active.hotpatch \\
  setsid {state}/envs/current/bin/python -m pyhotpatch.demo.worker \\
  --app demoapp.web:handle --port {port} >>{tmp_path}/service.log 2>&1 &
echo $! > {pidfile}
"""
    )
    manager.chmod(0o755)
    try:
        agent.connect()
        agent.start()
        wait_for("the baseline", lambda: (state / "envs" / "current" / "bin" / "python").exists())
        subprocess.run([str(manager)], check=True, timeout=60)
        wait_for("the service", lambda: len(agent.pids()) == 1 and get(port, "/health")[0] == 200)
        (pid,) = agent.pids()
        # healthy once the service is up: one process serving, its probe answering
        wait_for(
            "a healthy heartbeat",
            lambda: hotpatch_status(fleet, agent)["health"]["status"] == "Healthy",
        )

        with Load(port) as load:
            result = install(fleet, agent.name)
        assert load.failed == [] and result["patches"][0]["installationState"] == "Installed"
        assert agent.pids() == [pid] and agent.active() == {pid: HOTPATCH_1}

        restarted = install(fleet, agent.name, rebootSetting="Always")
        assert restarted["rebootStatus"] == "Completed"
        (new,) = agent.pids()
        assert new != pid and agent.active() == {new: HOTPATCH_1}  # came up patched
        assert get(port, TRAVERSAL)[0] == 403
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
