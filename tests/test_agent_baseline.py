"""Baselines through the node agent: a new environment, workers restarted one at a time.

The machines are enrolled while baseline 1 is current; then baseline 2 (the demo app
1.1.0, whose change the builder refuses, so it ships as an unplanned baseline) is
published and each test moves one machine onto it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent_world import (
    BASELINE_1,
    BASELINE_2,
    GROUP,
    HOTPATCH_1,
    SUB,
    AgentProcess,
    Load,
    World,
    assess,
    get,
    install,
    wait_for,
    world,
)
from catalog_fixtures import when
from pyhotpatch.agent._machine import CRASH_POINTS
from pyhotpatch.catalog import ArtifactRef, Catalog, Kind, PublishRequest
from pyhotpatch.demo.stack import APP, lock_text, write_wheel

pytestmark = pytest.mark.slow

LEGACY_BASELINE = "KB5060050"
BROKEN = "KB5060120"
LEGACY_IMAGE = "pyhotpatch:python-service:demo-legacy"
CRASHES = tuple(p for p in CRASH_POINTS if p.startswith("baseline-"))


@dataclass
class Fleet:
    world: World
    machines: dict[str, AgentProcess]


def publish_legacy(found: World) -> None:
    wheel = found.wheels["1.0.0"]
    lock = found.root / "legacy.lock"
    lock.write_text(lock_text([wheel]))
    catalog = Catalog.open(found.data_dir, url=found.arm.db_url)
    try:
        refs = []
        for path, role in ((lock, "lock"), (wheel, "wheel")):
            sha, _ = catalog.blobs.put_file(path)
            refs.append(ArtifactRef(path.name, role, sha))
        catalog.publish(
            PublishRequest(
                product="pyhotpatch-demo-legacy",
                kind=Kind.PLANNED_BASELINE,
                artifacts=tuple(refs),
                kb=LEGACY_BASELINE,
                title="legacy stack baseline",
                classifications=("Security",),
                published=when("2026-10-06"),
            )
        )
    finally:
        catalog.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("baselines")
    with world(root) as found:
        publish_legacy(found)
        machines = {
            "vm-rolling": found.agent(root, "vm-rolling", workers=4),
            "vm-never": found.agent(root, "vm-never", workers=2),
            "vm-window": found.agent(root, "vm-window", workers=2),
            "vm-broken": found.agent(root, "vm-broken", workers=3),
            "vm-legacy": found.agent(root, "vm-legacy", workers=2, image=LEGACY_IMAGE),
            **{f"vm-{p}": found.agent(root, f"vm-{p}", workers=2) for p in CRASHES},
        }
        try:
            for name, agent in machines.items():
                agent.connect()
                crash = name[3:] if name[3:] in CRASHES else None
                agent.start(crash_at=crash)
            for agent in machines.values():
                agent.serving()
            found.publish_baseline(BASELINE_2, "1.1.0", "2026-11-20", Kind.UNPLANNED_BASELINE)
            yield Fleet(found, machines)
        finally:
            for agent in machines.values():
                agent.stop()


def test_a_baseline_restarts_workers_one_at_a_time_with_no_failed_request(fleet: Fleet) -> None:
    agent = fleet.machines["vm-rolling"]
    install(fleet.world, agent.name, kbNumbersToExclude=[BASELINE_2])  # baseline 1's hotpatch
    assert set(agent.active().values()) == {HOTPATCH_1}
    found = assess(fleet.world, agent.name)
    offered = {p["kbId"]: p["rebootBehavior"] for p in found["availablePatches"]}
    assert offered == {BASELINE_2[2:]: "AlwaysRequiresReboot"}

    before = set(agent.pids())
    with Load(agent.port) as load:
        result = install(fleet.world, agent.name)
    assert result["status"] == "Succeeded", result
    assert result["rebootStatus"] == "Completed"
    assert result["patches"][0]["installationState"] == "Installed"
    assert load.failed == [] and load.ok > 0
    after = set(agent.pids())
    assert after.isdisjoint(before) and len(after) == 4
    assert get(agent.port, "/version")[1]["version"] == "1.1.0"
    assert set(agent.active().values()) == {None}  # the old baseline's hotpatch does not carry over
    state = agent.state()
    assert (state["baseline"], state["active_hotpatch"], state["journal"]) == (
        BASELINE_2,
        None,
        None,
    )
    # the requests were served by old and new workers alike, never by none
    assert load.pids & before and load.pids & after


def test_reboot_setting_never_leaves_the_baseline_pending(fleet: Fleet) -> None:
    agent = fleet.machines["vm-never"]
    before = set(agent.pids())
    result = install(fleet.world, agent.name, rebootSetting="Never")
    assert result["rebootStatus"] == "Required"
    states = {p["kbId"]: p["installationState"] for p in result["patches"]}
    assert states == {HOTPATCH_1[2:]: "Installed", BASELINE_2[2:]: "Installed"}
    assert set(agent.pids()) == before
    assert get(agent.port, "/version")[1]["version"] == "1.0.1"  # the hotpatch, in memory
    assert agent.state()["pending_baseline"] == BASELINE_2
    assert assess(fleet.world, agent.name)["rebootPending"] is True

    finished = install(fleet.world, agent.name)
    assert finished["rebootStatus"] == "Completed"
    assert get(agent.port, "/version")[1]["version"] == "1.1.0"
    assert agent.state()["pending_baseline"] is None


def test_no_baseline_starts_when_the_maintenance_window_is_too_short(fleet: Fleet) -> None:
    agent = fleet.machines["vm-window"]
    before = set(agent.pids())
    result = install(fleet.world, agent.name, maximumDuration="PT45S")
    states = {p["kbId"]: p["installationState"] for p in result["patches"]}
    # a hotpatch needs no restart time; a baseline reserves its build and every restart
    assert states == {HOTPATCH_1[2:]: "Installed", BASELINE_2[2:]: "Pending"}
    assert result["maintenanceWindowExceeded"] is True
    assert result["status"] == "CompletedWithWarnings"
    assert set(agent.pids()) == before
    assert agent.state()["baseline"] == BASELINE_1


@pytest.mark.parametrize("point", CRASHES)
def test_an_agent_killed_during_a_baseline_finishes_or_undoes_it(fleet: Fleet, point: str) -> None:
    agent = fleet.machines[f"vm-{point}"]
    from threading import Thread

    with Load(agent.port) as load:
        Thread(target=lambda: install(fleet.world, agent.name), daemon=True).start()
        assert agent.wait_exit(240) == -signal.SIGKILL, agent.log()
        agent.start()
        wait_for("recovery", lambda: agent.state()["journal"] is None, 240)
        agent.serving(120)
    assert load.failed == []
    versions = {get(agent.port, "/version")[1]["version"] for _ in range(20)}
    state = agent.state()
    undone = point in ("baseline-journaled", "baseline-built")
    # the hotpatch installed before the baseline stays; an undone baseline leaves it serving
    expected = "1.0.1" if undone else "1.1.0"
    assert versions == {expected}, (versions, state)
    assert state["baseline"] == (BASELINE_1 if undone else BASELINE_2)
    pythons = {agent.python_of(pid) for pid in agent.pids()}
    assert len(pythons) == 1, pythons


def test_an_older_stack_upgrades_to_a_hotpatch_capable_one(fleet: Fleet) -> None:
    agent = fleet.machines["vm-legacy"]
    assert agent.state()["baseline"] == LEGACY_BASELINE
    from azure.mgmt.compute import ComputeManagementClient

    arm = fleet.world.arm
    compute = ComputeManagementClient(subscription_id=SUB, **arm.sdk(arm.token("Owner", SUB)))
    try:
        vm = compute.virtual_machines.get(GROUP, agent.name)
        vm.os_profile.windows_configuration.patch_settings.enable_hotpatching = True
        with pytest.raises(Exception, match="does not support hotpatching"):
            compute.virtual_machines.begin_create_or_update(GROUP, agent.name, vm).result()
        with arm.http() as client:
            reply = client.post(f"/hotpatch/machines{agent.vm_id}/upgradeStack", json={})
            assert reply.status_code == 202, reply.text
            item = reply.json()["workItem"]
            done = wait_for(
                "the upgrade",
                lambda: (
                    (w := client.get(f"/hotpatch/machines{agent.vm_id}/jobs/{item}").json())[
                        "state"
                    ]
                    in ("done", "failed")
                    and w
                ),
                240,
            )
        assert done["state"] == "done", done
        state = agent.state()
        assert state["product"] == "pyhotpatch-demo" and state["baseline"] == BASELINE_2
        assert get(agent.port, "/version")[1]["version"] == "1.1.0"
        vm = compute.virtual_machines.get(GROUP, agent.name)
        assert vm.storage_profile.image_reference.sku == "demo-hotpatch"
        vm.os_profile.windows_configuration.patch_settings.enable_hotpatching = True
        compute.virtual_machines.begin_create_or_update(GROUP, agent.name, vm).result()
    finally:
        compute.close()


# last: the broken baseline it publishes would be offered to every machine after it
def test_a_baseline_whose_workers_cannot_start_is_rolled_back(fleet: Fleet) -> None:
    agent = fleet.machines["vm-broken"]
    found = fleet.world
    broken = write_wheel(
        found.root / "broken",
        APP,
        "1.2.0",
        {
            "demoapp/__init__.py": "",
            "demoapp/web.py": "raise RuntimeError('this release cannot start')\n",
        },
    )
    found.wheels["1.2.0"] = broken
    found.publish_baseline(BROKEN, "1.2.0", "2026-11-24", Kind.UNPLANNED_BASELINE)
    with Load(agent.port) as load:
        result = install(found, agent.name)
    states = {p["kbId"]: p["installationState"] for p in result["patches"]}
    assert states == {HOTPATCH_1[2:]: "Installed", BROKEN[2:]: "Failed"}, result
    assert "cannot start" in str(result["error"]) or "AgentError" in str(result["error"])
    assert load.failed == []
    # every worker is back on baseline 1, with its hotpatch
    assert len(agent.pids()) == 3
    assert {agent.python_of(pid) for pid in agent.pids()} == {
        str(agent.state_dir / "envs" / BASELINE_1 / "bin" / "python")
    }
    assert set(agent.active().values()) == {HOTPATCH_1}
    state = agent.state()
    assert (state["baseline"], state["active_hotpatch"], state["journal"]) == (
        BASELINE_1,
        HOTPATCH_1,
        None,
    )
