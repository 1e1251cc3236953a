"""Automatic patching end to end, through the control plane's HTTP API.

Each test runs an in-process control plane on a manual clock (``clocked_server``, on SQLite
and PostgreSQL) whose orchestrator runs only when the test asks for a pass, and drives
simulated agents one step at a time (heartbeat, poll, answer), so every pass sees a world
the test chose. The releases are the ``svc`` stack's: a baseline and a Security hotpatch on
it, published through the catalog API. Machines run the demo image, so they are machines
of the releases' product, and report that baseline; their OS profile is Windows, whose
``windowsParameters`` the simulated agent selects patches by.

The clock starts at 2026-11-10 12:00 UTC, outside the fleet's default off-peak window
(22:00-06:00 in each machine's time zone).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog_fixtures import svc
from pyhotpatch.build import build
from pyhotpatch.clock import ManualClock
from pyhotpatch.package import Manifest, write_package
from servers import TOKEN, clocked_server
from sim_agent import DEMO_IMAGE, PlainServer, SimulatedAgent, patch, vm_body

SUB = "5e7f0a1b-0c2d-4e3f-8a9b-00000000ab01"
GROUP = "orchestrated"
API = "2024-11-01"
BASELINE, HOTPATCH, NEXT_BASELINE = "KB5060100", "KB5060101", "KB5060110"
WINDOW_TAG = "hotpatch-maintenance-window"
ENVIRONMENT_TAG = "hotpatch-environment"


def _at(hour: int, minute: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- releases: built once, published into each test's catalog ------------------------------------


@dataclass(frozen=True)
class Release:
    """A release's files and the body that publishes it once they are uploaded."""

    files: tuple[Path, ...]
    body: dict[str, Any]


def _ref(path: Path, role: str) -> dict[str, str]:
    return {
        "name": path.name,
        "role": role,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Release, Release]:
    """The October baseline (svc 1.0.0) and November's Security hotpatch on it (1.0.1)."""
    root = tmp_path_factory.mktemp("releases")
    old, new = svc(root, "1.0.0"), svc(root, "1.0.1", "return x + 1")
    lock = root / f"{BASELINE}.lock"
    lock.write_text(f"svc==1.0.0 --hash=sha256:{hashlib.sha256(old.read_bytes()).hexdigest()}\n")
    baseline = Release(
        (lock, old),
        {
            "product": "pyhotpatch-demo",
            "kind": "planned-baseline",
            "kbId": BASELINE,
            "name": "October baseline",
            "classifications": ["UpdateRollUp"],
            "publishedDate": "2026-10-13T00:00:00Z",
            "artifacts": [_ref(lock, "lock"), _ref(old, "wheel")],
        },
    )
    built = build(str(old), str(new), patch_id=HOTPATCH, classification="Security")
    package = root / f"{HOTPATCH}.hotpatch"
    manifest = Manifest(
        id=HOTPATCH,
        title="November security fix",
        classification="Security",
        targets=tuple(built.manifest.targets),
    )
    write_package(package, manifest, built.sources)
    hotpatch = Release(
        (package,),
        {
            "product": "pyhotpatch-demo",
            "kind": "hotpatch",
            "publishedDate": "2026-11-10T00:00:00Z",
            "artifacts": [_ref(package, "hotpatch")],
        },
    )
    return baseline, hotpatch


# --- the control plane and its machines ------------------------------------------------------------


@dataclass
class Plane:
    """A control plane on a manual clock, the machines made in it and their agents."""

    url: str
    clock: ManualClock
    owner: str
    releases: tuple[Release, Release]
    agents: list[SimulatedAgent] = field(default_factory=list)

    def http(self, token: str = TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            verify=False,  # plain HTTP: spares loading the certificate store per client
        )

    def get_reply(self, path: str, token: str = TOKEN, **params: Any) -> httpx.Response:
        with self.http(token) as client:
            return client.get(path, params=params)

    def get(self, path: str, token: str = TOKEN, **params: Any) -> Any:
        reply = self.get_reply(path, token, **params)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def post(self, path: str, body: Any = None, token: str = TOKEN) -> httpx.Response:
        with self.http(token) as client:
            return client.post(path, json=body)

    def publish(self) -> None:
        """Publish the baseline and the Security hotpatch through the catalog API."""
        with self.http() as admin:
            for release in self.releases:
                for path in release.files:
                    sha = hashlib.sha256(path.read_bytes()).hexdigest()
                    stored = admin.put(f"/hotpatch/artifacts/{sha}", content=path.read_bytes())
                    assert stored.status_code in (200, 201), stored.text
                published = admin.post("/hotpatch/releases", json=release.body)
                assert published.status_code == 201, published.text

    def settings(self, **changes: Any) -> dict[str, Any]:
        with self.http() as admin:
            reply = admin.patch("/hotpatch/orchestrator/settings", json=changes)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def put_vm(self, name: str, body: dict[str, Any]) -> httpx.Response:
        with self.http() as admin:
            return admin.put(_vm_path(name), params={"api-version": API}, json=body)

    def vm(self, name: str, **options: Any) -> str:
        """Create a demo-image machine (``_demo_vm`` options); its resource id."""
        made = self.put_vm(name, _demo_vm(name, **options))
        assert made.status_code == 201, made.text
        vm_id: str = made.json()["id"]
        return vm_id

    def machine(
        self,
        name: str,
        environment: str | None = "DevTest",
        *,
        reported: dict[str, Any] | None = None,
        **options: Any,
    ) -> SimulatedAgent:
        """A machine whose agent enrolled, runs the baseline and can install the hotpatch."""
        agent = SimulatedAgent(
            PlainServer(self.url),
            self.vm(name, environment=environment, **options),
            self.owner,
            patches=[patch(HOTPATCH)],
            reported={"baseline": BASELINE} if reported is None else reported,
        )
        agent.enroll()
        agent.heartbeat()
        self.agents.append(agent)
        return agent

    def move_to(self, moment: datetime) -> None:
        """Set the clock; every agent heartbeats then, so its machine counts as running."""
        assert moment >= self.clock()
        self.clock.set(moment)
        for agent in self.agents:
            agent.heartbeat()

    def advance(self, delta: timedelta) -> None:
        self.move_to(self.clock() + delta)

    def run_pass(self) -> None:
        """One orchestrator pass, now."""
        reply = self.post("/hotpatch/orchestrator/passes")
        assert reply.status_code == 200, reply.text
        assert reply.json()["nextPass"] >= _iso(self.clock())

    def rollout(self) -> dict[str, Any]:
        """The one rollout there is, in detail."""
        (found,) = self.get("/hotpatch/rollouts")["value"]
        detail: dict[str, Any] = self.get(f"/hotpatch/rollouts/{found['id']}")
        return detail

    def install(self, agent: SimulatedAgent) -> dict[str, Any]:
        """Lease the one installPatches item queued for ``agent``, answer it; the item."""
        (item,) = agent.poll()
        assert item["kind"] == "installPatches", item
        assert agent.answer(item).status_code == 200
        return item


def _vm_path(name: str) -> str:
    return (
        f"/subscriptions/{SUB}/resourceGroups/{GROUP}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def _demo_vm(
    name: str,
    environment: str | None = "DevTest",
    *,
    window: str | None = None,
    time_zone: str | None = None,
    hotpatch: bool = True,
) -> dict[str, Any]:
    """A machine of the demo stack's product (its image decides), patched by the platform."""
    body = copy.deepcopy(vm_body(name))
    body["properties"]["storageProfile"]["imageReference"] = dict(DEMO_IMAGE)
    config = body["properties"]["osProfile"]["windowsConfiguration"]
    config["patchSettings"]["enableHotpatching"] = hotpatch
    if time_zone is not None:
        config["timeZone"] = time_zone
    tags = {}
    if environment is not None:
        tags[ENVIRONMENT_TAG] = environment
    if window is not None:
        tags[WINDOW_TAG] = window
    if tags:
        body["tags"] = tags
    return body


def _machine(agent: SimulatedAgent) -> str:
    """The machine's path under ``/hotpatch/machines``."""
    return f"/hotpatch/machines{agent.vm_id}"


def _error(reply: httpx.Response, status: int, code: str) -> str:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


@pytest.fixture
def plane(tmp_path: Path, database_url: str, releases: tuple[Release, Release]) -> Iterator[Plane]:
    with clocked_server(
        tmp_path / "data", TOKEN, SUB, GROUP, database_url, orchestrate_seconds=None
    ) as (url, clock, owner):
        yield Plane(url, clock, owner, releases)


# --- 1. a rollout from start to finish -------------------------------------------------------------


def test_a_security_hotpatch_rolls_out_to_devtest_then_to_production_after_the_soak(
    plane: Plane,
) -> None:
    dev = plane.machine("dev-1", "DevTest")
    prod = plane.machine("prod-1", "Production")
    plane.settings(bakeMinutes=5, soakHours=2)
    plane.publish()

    plane.run_pass()  # 12:00 UTC: the rollout opens, but every window is closed
    rollout = plane.rollout()
    assert (rollout["release"], rollout["product"], rollout["state"]) == (
        HOTPATCH,
        "pyhotpatch-demo",
        "active",
    )
    assert rollout["batches"] == 0 and rollout["batchList"] == []
    assert rollout["settings"]["bakeMinutes"] == 5 and rollout["settings"]["soakHours"] == 2
    assert dev.poll() == [] and prod.poll() == []

    plane.move_to(_at(22))
    plane.run_pass()
    (first,) = plane.rollout()["batchList"]
    assert (first["number"], first["ring"], first["size"], first["state"]) == (
        1,
        "DevTest",
        1,
        "installing",
    )
    (member,) = first["machines"]
    assert member["machine"] == dev.vm_id.lower() and member["name"] == "dev-1"
    assert (member["availabilitySet"], member["updateDomain"], member["state"]) == (
        None,
        None,
        "installing",
    )
    item = plane.install(dev)
    windows = item["payload"]["parameters"]["windowsParameters"]
    assert windows["kbNumbersToInclude"] == [HOTPATCH]
    assert item["payload"]["rollout"] == rollout["id"]
    assert prod.poll() == []

    plane.run_pass()
    assert plane.rollout()["batchList"][0]["state"] == "baking"
    plane.advance(timedelta(minutes=4))
    plane.run_pass()
    assert plane.rollout()["batchList"][0]["state"] == "baking"  # the bake is 5 minutes
    plane.advance(timedelta(minutes=1))
    plane.run_pass()
    detail = plane.rollout()
    assert detail["batchList"][0]["state"] == "passed"
    (region,) = detail["regions"]
    assert region["ring"] == "Production" and region["soakUntil"] == _iso(_at(0, 5, day=11))
    assert prod.poll() == []

    plane.advance(timedelta(hours=1))
    plane.run_pass()
    assert prod.poll() == []  # still soaking
    plane.move_to(_at(0, 5, day=11))
    plane.run_pass()
    second = plane.rollout()["batchList"][1]
    assert (second["ring"], second["size"], second["state"]) == ("Production", 1, "installing")
    prod_item = plane.install(prod)
    plane.run_pass()
    plane.advance(timedelta(minutes=5))
    plane.run_pass()
    done = plane.rollout()
    assert done["state"] == "completed", done
    assert done["installs"] == {"succeeded": 2}
    assert [b["state"] for b in done["batchList"]] == ["passed", "passed"]

    # the machine's history and the operation say the install was automatic
    history = plane.get(f"{_machine(prod)}/history")["value"]
    (installation,) = [h for h in history if h["kind"] == "installation"]
    assert installation["status"] == "Succeeded"
    result = installation["result"]
    assert result["installationTrigger"] == "Automatic" and result["availabilityFirst"] is True
    assert result["rollout"] == done["id"]
    assert [p["kbId"] for p in result["patches"]] == [HOTPATCH.removeprefix("KB")]
    operation = plane.get(
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westus"
        f"/operations/{prod_item['operation']}",
        **{"api-version": API},
    )
    assert operation["status"] == "Succeeded"
    assert operation["properties"]["output"]["installationTrigger"] == "Automatic"

    fleet = plane.get("/hotpatch/compliance")
    assert (fleet["machines"], fleet["compliant"], fleet["nonCompliant"]) == (2, 2, 0)
    assert fleet["missingCriticalAndSecurity"] == 0
    mine = plane.get(f"{_machine(prod)}/compliance")
    assert mine["state"] == "Compliant" and mine["activeHotpatch"] == HOTPATCH
    assert mine["missing"] == [] and mine["environment"] == "Production"


# --- 2. off-peak windows ---------------------------------------------------------------------------


def test_installs_start_only_in_each_machine_s_own_off_peak_window(plane: Plane) -> None:
    utc = plane.machine("a-utc")  # the fleet's window, 22:00-06:00 UTC
    tagged = plane.machine("b-tagged", window="16:00-18:00")
    tokyo = plane.machine("c-tokyo", time_zone="Tokyo Standard Time")  # 22:00 JST is 13:00 UTC
    plane.publish()

    plane.run_pass()
    plane.move_to(_at(12, 59))
    plane.run_pass()
    assert [a.poll() for a in (utc, tagged, tokyo)] == [[], [], []]
    assert plane.rollout()["batches"] == 0

    plane.move_to(_at(13))
    plane.run_pass()
    assert utc.poll() == [] and tagged.poll() == []
    item = plane.install(tokyo)
    assert item["payload"]["maximumDuration"] == "PT240M"  # at most four hours of an 8-hour window
    plane.run_pass()
    plane.advance(timedelta(minutes=10))
    plane.run_pass()
    assert plane.rollout()["batchList"][0]["state"] == "passed"
    assert utc.poll() == [] and tagged.poll() == []

    plane.move_to(_at(16))
    plane.run_pass()
    assert utc.poll() == []
    item = plane.install(tagged)
    assert item["payload"]["maximumDuration"] == "PT120M"  # what is left of its own window
    plane.run_pass()
    plane.advance(timedelta(minutes=10))
    plane.run_pass()
    assert utc.poll() == []

    plane.move_to(_at(22))
    plane.run_pass()
    plane.install(utc)
    batches = plane.rollout()["batchList"]
    assert [b["started"] for b in batches] == [_iso(_at(13)), _iso(_at(16)), _iso(_at(22))]


def test_a_machine_switched_off_in_its_window_is_patched_when_it_is_back(plane: Plane) -> None:
    away = plane.machine("a-away")
    plane.publish()
    plane.run_pass()  # 12:00: the rollout opens, the window is closed

    plane.clock.set(_at(22))  # its window opens while it is off: no heartbeat since 12:00
    plane.run_pass()
    plane.clock.set(_at(22, 30))  # looked for again: still off
    plane.run_pass()
    assert away.poll() == [] and plane.rollout()["batches"] == 0

    plane.move_to(_at(22, 45))  # back, between two looks
    plane.run_pass()
    assert away.poll() == []
    plane.move_to(_at(23))  # the next look finds it running
    plane.run_pass()
    plane.install(away)
    assert plane.rollout()["batchList"][0]["started"] == _iso(_at(23))


# --- 3. the health gate ----------------------------------------------------------------------------


def test_an_unhealthy_machine_in_the_first_batch_halts_the_rollout_and_reverts(
    plane: Plane,
) -> None:
    dev = plane.machine("dev-1", "DevTest")
    prod = plane.machine("prod-1", "Production")
    plane.settings(bakeMinutes=5, soakHours=0)
    plane.publish()
    plane.move_to(_at(22))
    plane.run_pass()
    plane.install(dev)
    dev.health = "Unhealthy"
    dev.heartbeat()
    plane.run_pass()
    plane.advance(timedelta(minutes=5))
    plane.run_pass()

    halted = plane.rollout()
    assert halted["state"] == "halted"
    reason = halted["reason"]
    assert "1 of 1 machines unhealthy" in reason and "dev-1" in reason and HOTPATCH in reason
    (batch,) = halted["batchList"]
    assert (batch["state"], batch["unhealthy"], batch["reason"]) == ("failed", 1, reason)

    release = plane.get(f"/hotpatch/releases/{HOTPATCH}")
    assert release["halted"] == {"time": _iso(_at(22, 5)), "reason": reason}
    (notice,) = plane.get("/hotpatch/notices", release=HOTPATCH)["value"]
    assert notice["level"] == "warning" and notice["rollout"] == halted["id"]
    assert HOTPATCH in notice["subject"] and reason in notice["message"]

    (revert,) = dev.poll()
    assert revert["kind"] == "revertHotpatch"
    assert revert["payload"]["rollout"] == halted["id"]
    reply = dev.report(revert, {"status": "Succeeded", "output": {"activeHotpatch": None}})
    assert reply.status_code == 200, reply.text
    dev.installed.clear()
    dev.heartbeat()
    plane.run_pass()
    assert plane.rollout()["installs"] == {"reverted": 1}
    (member,) = plane.rollout()["batchList"][0]["machines"]
    assert (member["state"], member["healthy"]) == ("reverted", False)  # its verdict stays

    plane.advance(timedelta(hours=1))  # no soak, in the window: a halted rollout goes no further
    plane.run_pass()
    assert prod.poll() == [] and dev.poll() == []
    assert plane.rollout()["batches"] == 1

    # an operator's install leaves the halted release out, unless it names it
    with plane.http() as admin:
        for rules, left_out in (
            ({"classificationsToInclude": ["Security"]}, True),
            ({"kbNumbersToInclude": [HOTPATCH]}, False),
        ):
            started = admin.post(
                f"{_vm_path('prod-1')}/installPatches",
                params={"api-version": API},
                json={
                    "maximumDuration": "PT1H",
                    "rebootSetting": "IfRequired",
                    "windowsParameters": rules,
                },
            )
            assert started.status_code == 202, started.text
            (item,) = prod.poll()
            excluded = item["payload"]["parameters"]["windowsParameters"]["kbNumbersToExclude"]
            assert (HOTPATCH in excluded) is left_out
            assert prod.report(item, {"status": "Failed"}).status_code == 200


def test_a_release_that_fails_to_install_wherever_it_goes_halts_at_the_failure_gate(
    plane: Plane,
) -> None:
    agents = [plane.machine(f"dev-{n}", "DevTest") for n in range(1, 5)]
    plane.settings(bakeMinutes=5, soakHours=0)
    plane.publish()
    plane.move_to(_at(22))
    plane.run_pass()

    def fail_the_batch() -> list[str]:
        names = []
        for agent in agents:
            for item in agent.poll():
                refused = {"code": "PackageRefused", "message": "the code does not match"}
                reply = agent.report(item, {"status": "Failed", "error": refused})
                assert reply.status_code == 200, reply.text
                names.append(agent.vm_id.rsplit("/", 1)[-1])
        plane.run_pass()
        plane.advance(timedelta(minutes=5))
        plane.run_pass()
        return names

    failed = []
    for number in range(2):  # one machine a batch: a fifth of the subscription is less
        failed += fail_the_batch()
        detail = plane.rollout()  # a failure or two is not yet a pattern
        assert detail["state"] == "active" and detail["batchList"][number]["state"] == "passed"
    failed += fail_the_batch()
    assert len(failed) == 3
    halted = plane.rollout()
    assert halted["state"] == "halted", halted
    reason = halted["reason"]
    assert f"3 of the 3 installs of {HOTPATCH} that ended failed" in reason, reason
    assert all(name in reason for name in failed)
    assert [b["state"] for b in halted["batchList"]] == ["passed", "passed", "failed"]
    assert halted["batchList"][2]["unhealthy"] == 0  # no machine was sick
    assert plane.get(f"/hotpatch/releases/{HOTPATCH}")["halted"]["reason"] == reason
    (notice,) = plane.get("/hotpatch/notices", release=HOTPATCH)["value"]
    assert reason in notice["message"]

    plane.advance(timedelta(hours=1))  # the fourth machine never gets the release
    plane.run_pass()
    assert all(agent.poll() == [] for agent in agents)
    assert len(plane.rollout()["batchList"]) == 3


# --- 4. operators: pause, resume, cancel -----------------------------------------------------------


def test_operators_pause_resume_and_cancel_a_rollout(plane: Plane) -> None:
    dev = plane.machine("dev-1", "DevTest")
    plane.publish()
    plane.run_pass()
    number = plane.rollout()["id"]
    base = f"/hotpatch/rollouts/{number}"

    _error(plane.post(f"{base}/pause", token=plane.owner), 403, "AuthorizationFailed")
    _error(plane.post("/hotpatch/rollouts/999999/pause"), 404, "RolloutNotFound")
    _error(plane.get_reply("/hotpatch/rollouts/999999"), 404, "RolloutNotFound")
    _error(plane.post(f"{base}/restart"), 404, "UnknownAction")

    paused = plane.post(f"{base}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert "already paused" in _error(plane.post(f"{base}/pause"), 409, "RolloutStateConflict")
    plane.move_to(_at(22))
    plane.run_pass()
    assert dev.poll() == []
    assert plane.rollout()["batches"] == 0

    resumed = plane.post(f"{base}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "active"
    plane.run_pass()
    (item,) = dev.poll()
    assert item["kind"] == "installPatches"

    canceled = plane.post(f"{base}/cancel", {"reason": "the fix is wrong"})
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert (body["state"], body["reason"]) == ("canceled", "the fix is wrong")
    assert body["batchList"][0]["state"] == "canceled"
    message = _error(plane.post(f"{base}/resume"), 409, "RolloutStateConflict")
    assert "canceled" in message
    assert plane.get("/hotpatch/rollouts", state="active")["value"] == []
    assert [r["id"] for r in plane.get("/hotpatch/rollouts", state="canceled")["value"]] == [number]


# --- 5. settings -----------------------------------------------------------------------------------

SETTING_NAMES = {
    "window",
    "soakHours",
    "bakeMinutes",
    "firstBatchUnhealthy",
    "unhealthyPercent",
    "failedInstalls",
    "failedPercent",
    "setPercent",
    "smallSet",
    "subscriptionPercent",
    "assessHours",
    "assessPlatformHours",
    "assessCycleMinutes",
    "deadlineDays",
    "minWindowMinutes",
    "pairs",
}


def test_settings_are_camel_case_and_a_bad_change_is_400_naming_what_is_wrong(
    plane: Plane,
) -> None:
    found = plane.get("/hotpatch/orchestrator/settings", token=plane.owner)
    assert set(found) == SETTING_NAMES
    assert (found["window"], found["soakHours"], found["bakeMinutes"]) == ("22:00-06:00", 24, 10)

    changed = plane.settings(bakeMinutes=15, window="23:00-05:00")
    assert changed == {**found, "bakeMinutes": 15, "window": "23:00-05:00"}
    assert plane.get("/hotpatch/orchestrator/settings") == changed

    unclear = []
    with plane.http() as admin:
        for body, words in (  # each message names the setting as the API spells it
            ({"bakeMinutes": -1}, ["bakeMinutes", "between 0 and 720"]),
            ({"unhealthyPercent": 150}, ["unhealthyPercent", "between 0 and 100"]),
            ({"smallSet": 0}, ["smallSet"]),
            ({"assessCycleMinutes": 0}, ["assessCycleMinutes", "between 1 and 1440"]),
            ({"window": "25:00-06:00"}, ["'25:00-06:00'", "00:00-23:59"]),
            ({"window": "at night"}, ["'at night'", "HH:MM-HH:MM"]),
            ({"soakHours": "a day"}, ["soakHours must be a number"]),
            ({"soakHours": True}, ["soakHours must be a number"]),
            ({"firstBatchUnhealthy": 0.5}, ["firstBatchUnhealthy must be a whole number"]),
            ({"bakeMinute": 5}, ["unknown setting 'bakeMinute'", "bakeMinutes"]),
            ({"pairs": "eastus:eastus"}, ["'eastus:eastus'", "with itself"]),
            ([15], ["JSON object"]),
        ):
            reply = admin.patch("/hotpatch/orchestrator/settings", json=body)
            message = _error(reply, 400, "InvalidParameter")
            if not all(word in message for word in words):
                unclear.append((body, message))
    with plane.http(plane.owner) as owner:
        refused = owner.patch("/hotpatch/orchestrator/settings", json={"bakeMinutes": 1})
    _error(refused, 403, "AuthorizationFailed")
    assert plane.get("/hotpatch/orchestrator/settings") == changed
    _error(
        plane.post("/hotpatch/orchestrator/passes", token=plane.owner), 403, "AuthorizationFailed"
    )
    assert unclear == []


# --- 6. on demand ----------------------------------------------------------------------------------


def test_an_install_on_demand_says_it_skipped_the_rollout_and_the_window(plane: Plane) -> None:
    dev = plane.machine("dev-1")
    with plane.http() as admin:  # 12:00 UTC: outside the machine's window, which does not matter
        started = admin.post(
            f"{_vm_path('dev-1')}/installPatches",
            params={"api-version": API},
            json={
                "maximumDuration": "PT1H",
                "rebootSetting": "IfRequired",
                "windowsParameters": {"kbNumbersToInclude": [HOTPATCH]},
            },
        )
        assert started.status_code == 202, started.text
        plane.install(dev)
        status = admin.get(started.headers["Azure-AsyncOperation"]).json()
    assert status["status"] == "Succeeded"
    output = status["properties"]["output"]
    assert output["installationTrigger"] == "OnDemand"
    assert output["availabilityFirst"] is False and output["offPeakWindow"] is False
    assert "on demand" in output["note"] and "rollout" not in output
    assert output["installedPatchCount"] == 1
    (entry,) = plane.get(f"{_machine(dev)}/history")["value"]
    assert entry["result"]["installationTrigger"] == "OnDemand"


# --- 7. compliance ---------------------------------------------------------------------------------


def test_compliance_of_the_fleet_and_of_a_machine_with_its_last_assessment(plane: Plane) -> None:
    plane.publish()
    current = plane.machine(
        "a-current", "DevTest", reported={"baseline": BASELINE, "activeHotpatch": HOTPATCH}
    )
    behind = plane.machine("b-behind", "Production")
    silent = plane.machine("c-silent", "Production", reported={})  # never says what it runs
    plane.vm("d-no-agent", environment="Production")

    before = plane.get(f"{_machine(behind)}/compliance")
    assert (before["state"], before["baseline"], before["activeHotpatch"]) == (
        "NonCompliant",
        BASELINE,
        None,
    )
    assert before["missing"] == [HOTPATCH] and before["missingCriticalAndSecurityCount"] == 1
    assert before["lastAssessment"] is None and before["rebootPending"] is False
    assert plane.get(f"{_machine(current)}/compliance")["state"] == "Compliant"
    assert plane.get(f"{_machine(silent)}/compliance")["state"] == "Unknown"
    missing = plane.get_reply(f"/hotpatch/machines{_vm_path('d-no-agent')}/compliance")
    _error(missing, 404, "MachineNotEnrolled")

    fleet = plane.get("/hotpatch/compliance")
    assert {k: fleet[k] for k in ("machines", "compliant", "nonCompliant", "unknown")} == {
        "machines": 3,
        "compliant": 1,
        "nonCompliant": 1,
        "unknown": 1,
    }
    assert fleet["compliantPercent"] == 33.3 and fleet["missingCriticalAndSecurity"] == 1
    assert fleet["notEnrolled"] == 1 and fleet["time"] == _iso(_at(12))
    assert fleet["byEnvironment"] == {
        "DevTest": {"compliant": 1, "nonCompliant": 0, "unknown": 0},
        "Production": {"compliant": 0, "nonCompliant": 1, "unknown": 1},
    }
    assert fleet["byRegion"] == {"westus": {"compliant": 1, "nonCompliant": 1, "unknown": 1}}
    assert plane.get("/hotpatch/compliance", token=plane.owner) == fleet  # its own subscription

    plane.advance(timedelta(minutes=3))
    plane.run_pass()  # the first pass runs an assessment cycle
    after = plane.get(f"{_machine(behind)}/compliance")
    assert after["lastAssessment"] == _iso(_at(12, 3))
    assert after["missing"] == [HOTPATCH]
    (assessment,) = plane.get(f"{_machine(behind)}/history")["value"]
    assert assessment["kind"] == "assessment"
    assert [p["kbId"] for p in assessment["result"]["availablePatches"]] == ["5060101"]
    assert assessment["result"]["criticalAndSecurityPatchCount"] == 1
    up_to_date = plane.get(f"{_machine(current)}/history")["value"][0]["result"]
    assert up_to_date["availablePatches"] == []

    plane.advance(timedelta(minutes=30))
    plane.run_pass()  # the next cycle is an hour away: nothing is assessed again
    assert plane.get(f"{_machine(behind)}/compliance")["lastAssessment"] == _iso(_at(12, 3))


# --- 8. hotpatch turned off and on again -----------------------------------------------------------


def test_hotpatch_turned_back_on_is_pending_until_the_next_baseline(plane: Plane) -> None:
    agent = plane.machine("dev-1")
    assert agent.token is not None

    def enrolment() -> tuple[str, bool, str, bool]:
        status = plane.get(f"{_machine(agent)}/hotpatchStatus")
        own = plane.get("/agent/machine", token=agent.token or "")
        compliance = plane.get(f"{_machine(agent)}/compliance")
        return (
            status["enrolment"],
            own["enableHotpatching"],
            own["hotpatchEnrolment"],
            compliance["hotpatch"],
        )

    assert enrolment() == ("Enabled", True, "Enabled", True)
    off = plane.put_vm("dev-1", _demo_vm("dev-1", hotpatch=False))
    assert off.status_code == 200, off.text
    assert enrolment() == ("Disabled", False, "Disabled", False)
    on = plane.put_vm("dev-1", _demo_vm("dev-1", hotpatch=True))
    assert on.status_code == 200, on.text
    assert enrolment() == ("Pending", False, "Pending", False)

    plane.advance(timedelta(hours=1))  # still on the baseline it had when hotpatch came back
    assert enrolment() == ("Pending", False, "Pending", False)
    agent.reported["baseline"] = NEXT_BASELINE
    agent.heartbeat()
    assert enrolment() == ("Enabled", True, "Enabled", True)


# --- 9. the maintenance window tag -----------------------------------------------------------------


def test_a_bad_maintenance_window_tag_is_400_and_a_good_one_is_kept_normalised(
    plane: Plane,
) -> None:
    for value in ("25:00-06:00", "22:00-6", "at night", ""):
        reply = plane.put_vm("bad", _demo_vm("bad", window=value))
        message = _error(reply, 400, "InvalidParameter")
        assert f"'{value}'" in message and WINDOW_TAG in message and "HH:MM-HH:MM" in message
        assert reply.json()["error"]["target"] == f"tags.{WINDOW_TAG}"
    _error(plane.get_reply(_vm_path("bad"), **{"api-version": API}), 404, "ResourceNotFound")

    made = plane.put_vm("good", _demo_vm("good", window=" 9:00 - 11:30 "))
    assert made.status_code == 201, made.text
    assert made.json()["tags"][WINDOW_TAG] == "09:00-11:30"
    changed = plane.put_vm("good", _demo_vm("good", window="9:61-10:00"))
    _error(changed, 400, "InvalidParameter")
    kept = plane.get(_vm_path("good"), **{"api-version": API})
    assert kept["tags"][WINDOW_TAG] == "09:00-11:30"
