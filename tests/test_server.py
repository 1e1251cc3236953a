"""The control plane's server in-process: background re-signing on an injected clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from pyhotpatch.catalog import Catalog
from pyhotpatch.clock import ManualClock
from pyhotpatch.server import create_app
from servers import serve_in_thread


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, ManualClock, Catalog]]:
    clock = ManualClock(datetime.now(timezone.utc))
    catalog = Catalog.open(tmp_path / "data", clock=clock)
    app = create_app(catalog, admin_token="x" * 32, refresh_seconds=0.05)
    with serve_in_thread(app) as url:
        yield url, clock, catalog
    catalog.close()


def test_timestamp_is_re_signed_before_it_expires(
    running: tuple[str, ManualClock, Catalog],
) -> None:
    url, clock, _catalog = running

    def version() -> int:
        reply = httpx.get(f"{url}/hotpatch/tuf/metadata/timestamp.json")
        assert reply.status_code == 200
        return int(reply.json()["signed"]["version"])

    before = version()
    clock.advance(timedelta(hours=6))
    time.sleep(0.3)
    assert version() == before, "re-signed although most of its lifetime remained"
    clock.advance(timedelta(hours=7))  # now less than half of the one-day lifetime is left
    deadline = time.monotonic() + 10
    while version() == before:
        assert time.monotonic() < deadline, "the timestamp was not re-signed"
        time.sleep(0.05)
    fresh = httpx.get(f"{url}/hotpatch/tuf/metadata/timestamp.json").json()["signed"]["expires"]
    expires = datetime.fromisoformat(fresh.replace("Z", "+00:00"))
    assert expires - clock() > timedelta(hours=23)


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``pid`` started (Linux)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"multiprocessing.spawn" in command and b"resource_tracker" not in command:
            found.append(int(child))
    return found


def test_several_worker_processes_share_one_fleet(tmp_path: Path) -> None:
    from arm import SUB, start_arm
    from sim_agent import SimulatedAgent, create_group, create_vm, register_compute

    arm = start_arm(tmp_path / "data", "--workers", "2")
    try:
        deadline = time.monotonic() + 30
        while len(_workers(arm.server.proc.pid)) < 2:
            assert time.monotonic() < deadline, "two workers did not start"
            time.sleep(0.1)
        register_compute(arm, SUB)
        create_group(arm, SUB, "workers-rg")
        for n in range(3):  # each request may land on either worker: try a few times
            name = f"vm-{n}"
            agent = SimulatedAgent(arm, create_vm(arm, SUB, "workers-rg", name), arm.token("Owner"))
            agent.enroll()
            assert agent.heartbeat()["work"] == 0
            found: list[dict[str, object]] = []
            waited: list[float] = []

            def poll(
                agent: SimulatedAgent = agent,
                found: list[dict[str, object]] = found,
                waited: list[float] = waited,
            ) -> None:
                began = time.monotonic()
                found.extend(agent.poll(wait=20))
                waited.append(time.monotonic() - began)

            poller = threading.Thread(target=poll)
            poller.start()
            time.sleep(0.3)
            queued = time.monotonic()
            with arm.http() as client:
                path = (
                    f"/subscriptions/{SUB}/resourceGroups/workers-rg/providers/"
                    f"Microsoft.Compute/virtualMachines/{name}/assessPatches"
                )
                assert client.post(path, params={"api-version": "2024-11-01"}).status_code == 202
            poller.join(25)
            # woken in its own worker at once, or by the 1 s re-check from the other one
            assert [item["kind"] for item in found] == ["assessPatches"]
            assert time.monotonic() - queued < 2.5, waited
        assert len(_workers(arm.server.proc.pid)) == 2
    finally:
        arm.server.stop()
