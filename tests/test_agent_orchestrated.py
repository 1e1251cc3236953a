"""Automatic patching end to end: the orchestrator rolls a hotpatch out to real agents.

Two machines run the demo service under a steady loopback load, one of them DevTest. With
an all-day window and no soak, the orchestrator's passes must take the Security hotpatch
to the DevTest machine first, then to Production, in memory, with no restart and no
failed request, and say so in the machines' history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_world import HOTPATCH_1, AgentProcess, Load, World, get, world
from loopback import wait_for

pytestmark = pytest.mark.slow
API = "2024-11-01"
TRAVERSAL = "/files?name=../secrets/token"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[World]:
    with world(tmp_path) as found:  # the server runs passes only when asked
        yield found


def _pass(fleet: World) -> None:
    with fleet.arm.http() as client:
        assert client.post("/hotpatch/orchestrator/passes").status_code == 200


def _status(fleet: World, agent: AgentProcess) -> dict[str, Any]:
    with fleet.arm.http() as client:
        found: dict[str, Any] = client.get(f"/hotpatch/machines{agent.vm_id}/hotpatchStatus").json()
    return found


def test_the_orchestrator_patches_devtest_first_then_production_without_a_restart(
    fleet: World, tmp_path: Path
) -> None:
    with fleet.arm.http() as client:
        reply = client.patch(
            "/hotpatch/orchestrator/settings",
            json={"window": "00:00-00:00", "soakHours": 0, "bakeMinutes": 0},
        )
        assert reply.status_code == 200, reply.text
    agents = [fleet.agent(tmp_path, name) for name in ("vm-devtest", "vm-production")]
    try:
        for agent in agents:
            agent.connect()
            agent.start().serving()
        # the environment is chosen, and changed, on the machine's resource
        with fleet.arm.http() as client:
            reply = client.patch(
                agents[0].vm_id,
                params={"api-version": API},
                json={"tags": {"hotpatch-environment": "DevTest"}},
            )
            assert reply.status_code == 200, reply.text
        for agent in agents:
            wait_for("the agent's report", lambda a=agent: _status(fleet, a)["baseline"])
        pids = {agent.name: sorted(agent.pids()) for agent in agents}
        with Load(agents[0].port) as first, Load(agents[1].port) as second:
            order: list[str] = []
            deadline = time.monotonic() + 180
            while len(order) < 2:
                assert time.monotonic() < deadline, f"not patched in time: {order}"
                _pass(fleet)
                for agent in agents:
                    active = _status(fleet, agent)["activeHotpatch"]
                    if active == HOTPATCH_1 and agent.name not in order:
                        order.append(agent.name)
                time.sleep(0.5)
        assert order == ["vm-devtest", "vm-production"]
        assert first.failed == [] and second.failed == []
        for agent in agents:
            assert sorted(agent.pids()) == pids[agent.name]  # no process restarted
            assert get(agent.port, TRAVERSAL)[0] != 200  # the fix is live
        _pass(fleet)
        with fleet.arm.http() as client:
            rollouts = client.get("/hotpatch/rollouts").json()["value"]
            mine = next(r for r in rollouts if r["release"] == HOTPATCH_1)
            detail = client.get(f"/hotpatch/rollouts/{mine['id']}").json()
            history = client.get(f"/hotpatch/machines{agents[1].vm_id}/history").json()
        assert detail["state"] == "completed", detail
        rings = [batch["ring"] for batch in detail["batchList"]]
        assert rings[0] == "DevTest" and "Production" in rings
        assert all(batch["state"] == "passed" for batch in detail["batchList"])
        installs = [h for h in history["value"] if h["kind"] == "installation"]
        assert installs and installs[0]["result"]["installationTrigger"] == "Automatic"
    finally:
        for agent in agents:
            agent.stop()
