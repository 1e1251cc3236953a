"""A simulated node agent: a thread that speaks the agent protocol over HTTPS.

It enrols its machine with a user's token, then heartbeats, long-polls for work and
answers assessments and installations from a list of patches the test gives it (the
patches "available" on the machine): dicts with ``kbId``, ``name``, ``classifications``,
``rebootBehavior`` and ``publishedDate`` (and ``version`` on Linux), the shape of the
catalog's release documents, so ``GET /hotpatch/releases`` output can be passed as it is.
Installing moves patches from available to installed, so a later assessment reports fewer.
It keeps no state on disk: a test that restarts the server points the same agent at the
new one (``point_at``).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from arm import Arm
from pyhotpatch.catalog._selection import SELECTED, kb_digits, reboot_status, select


def patch(
    kb: str,
    *,
    classifications: tuple[str, ...] = ("Security",),
    reboot: str = "NeverReboots",
    published: str = "2026-10-14T00:00:00+00:00",
    name: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A patch as the simulated machine sees it (the shape of a catalog release)."""
    found: dict[str, Any] = {
        "kbId": kb,
        "name": name or f"{' '.join(classifications)} hotpatch ({kb})",
        "classifications": list(classifications),
        "rebootBehavior": reboot,
        "publishedDate": published,
    }
    if version is not None:
        found["version"] = version
    return found


@dataclass
class PlainServer:
    """A control plane over plain HTTP, such as an in-process one on a manual clock."""

    url: str
    ca: Path | None = None


@dataclass
class SimulatedAgent:
    """One machine's agent, answering work until stopped."""

    arm: Arm | PlainServer
    vm_id: str
    user_token: str
    patches: list[dict[str, Any]] = field(default_factory=list)
    #: KB ids whose installation fails
    failing: set[str] = field(default_factory=set)
    #: how long each work poll waits, in seconds (short, so that ``stop`` is prompt)
    poll_wait: float = 1.0
    #: the most seconds between heartbeats, whatever the server says
    heartbeat_every: float = 5.0
    #: whether work is answered (False: heartbeat only, as an agent that is stuck)
    answering: bool = True
    token: str | None = None
    installed: list[dict[str, Any]] = field(default_factory=list)
    handled: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    heartbeats: int = 0
    #: what the machine reports besides its OS (``baseline``, ``image``…), in enrolment and
    #: heartbeats; an ``activeHotpatch`` here wins over the last patch installed
    reported: dict[str, Any] = field(default_factory=dict)
    #: the health status heartbeats report unless told otherwise
    health: str = "Healthy"

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- transport -------------------------------------------------------------------------

    def point_at(self, arm: Arm | PlainServer) -> None:
        """Talk to another server from now on (the same data directory, restarted)."""
        self.arm = arm

    def _client(self, token: str) -> httpx.Client:
        ca = self.arm.ca  # None: plain HTTP, no certificate to check (nor to load each time)
        return httpx.Client(
            base_url=self.arm.url,
            verify=ssl.create_default_context(cafile=str(ca)) if ca is not None else False,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def _agent(self) -> httpx.Client:
        assert self.token is not None, "enrol first"
        return self._client(self.token)

    # --- protocol --------------------------------------------------------------------------

    def enroll(self) -> dict[str, Any]:
        """Enrol the machine with the user's token; keeps the Agent credential."""
        with self._client(self.user_token) as client:
            reply = client.post(
                "/agent/enroll",
                json={
                    "machine": self.vm_id,
                    "agentVersion": "sim-1.0",
                    "reported": {"osName": "Simulated OS", "osVersion": "1.0", **self.reported},
                },
            )
        assert reply.status_code == 201, reply.text
        body: dict[str, Any] = reply.json()
        self.token = body["token"]
        return body

    def heartbeat(self, status: str | None = None) -> dict[str, Any]:
        """One heartbeat with ``status`` (else ``health``); the server's answer."""
        with self._agent() as client:
            reply = client.post(
                "/agent/heartbeat",
                json={
                    "health": {"status": status or self.health},
                    "reported": {
                        "osName": "Simulated OS",
                        "osVersion": "1.0",
                        "activeHotpatch": self.installed[-1]["kbId"] if self.installed else None,
                        **self.reported,
                    },
                },
            )
        assert reply.status_code == 200, reply.text
        self.heartbeats += 1
        body: dict[str, Any] = reply.json()
        return body

    def poll(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Lease whatever work is queued (waiting up to ``wait`` seconds)."""
        with self._agent() as client:
            reply = client.get("/agent/jobs", params={"wait": wait})
        if reply.status_code == 204:
            return []
        assert reply.status_code == 200, reply.text
        items: list[dict[str, Any]] = reply.json()["items"]
        return items

    def report(self, item: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
        """Report a work item's outcome."""
        with self._agent() as client:
            return client.post(f"/agent/jobs/{item['id']}/result", json=body)

    def answer(self, item: dict[str, Any]) -> httpx.Response:
        """Do the work (in simulation) and report it."""
        if item["kind"] == "assessPatches":
            body = {"status": "Succeeded", "output": self.assessment()}
        elif item["kind"] == "installPatches":
            body = {"status": "Succeeded", "output": self.install(item["payload"])}
        else:
            body = {
                "status": "Failed",
                "error": {"code": "UnknownWork", "message": f"cannot do {item['kind']}"},
            }
        reply = self.report(item, body)
        self.handled.append({"item": item, "status": reply.status_code, "reply": reply.json()})
        return reply

    # --- the simulated machine ---------------------------------------------------------------

    def assessment(self) -> dict[str, Any]:
        """What an assessment finds: every available patch (counts left to the server)."""
        return {
            "status": "Succeeded",
            "rebootPending": False,
            "availablePatches": [dict(p) for p in self.patches],
        }

    def install(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Install what the parameters select (the catalog's selection rules); the result."""
        parameters = payload.get("parameters", {})
        windows = parameters.get("windowsParameters") or {}
        results, remaining, restart = [], [], False
        for p, state in zip(self.patches, select(self.patches, windows), strict=True):
            if state == SELECTED:
                state = "Failed" if kb_digits(p["kbId"]) in self.failing else "Installed"
            results.append(
                {
                    "name": p["name"],
                    "kbId": p["kbId"],
                    "classifications": p["classifications"],
                    "installationState": state,
                }
            )
            if state == "Installed":
                self.installed.append(p)
                restart = restart or p["rebootBehavior"] == "AlwaysRequiresReboot"
            else:
                remaining.append(p)
        self.patches = remaining
        status = reboot_status(restart, str(parameters.get("rebootSetting", "IfRequired")))
        return {"rebootStatus": status, "patches": results}

    # --- the thread ------------------------------------------------------------------------

    def start(self) -> SimulatedAgent:
        """Enrol (once) and run in a background thread."""
        if self.token is None:
            self.enroll()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (within about ``poll_wait`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_wait + 30)
            self._thread = None

    def __enter__(self) -> SimulatedAgent:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_beat:
                    answer = self.heartbeat()
                    next_beat = time.monotonic() + min(
                        answer["nextHeartbeatSeconds"], self.heartbeat_every
                    )
                if not self.answering:
                    self._stop.wait(0.1)
                    continue
                for item in self.poll(self.poll_wait):
                    self.answer(item)
            except (httpx.HTTPError, AssertionError) as exc:  # a server restarting, say
                self.errors.append(repr(exc))
                self._stop.wait(0.2)


def finish(poller: Any, timeout: float = 30) -> Any:
    """A long-running operation's result; fails the test rather than wait past ``timeout``."""
    poller.wait(timeout)
    assert poller.done(), f"the operation did not finish within {timeout} s"
    return poller.result()


# --- the world the agent lives in: a registered subscription, a group, virtual machines -------

WINDOWS_IMAGE = {
    "publisher": "MicrosoftWindowsServer",
    "offer": "WindowsServer",
    "sku": "2022-datacenter-azure-edition-hotpatch",
    "version": "latest",
}
DEMO_IMAGE = {
    "publisher": "pyhotpatch",
    "offer": "python-service",
    "sku": "demo-hotpatch",
    "version": "latest",
}


def register_compute(arm: Arm, subscription: str) -> None:
    """Register Microsoft.Compute for ``subscription`` and wait until it is Registered."""
    arm.token("Owner", subscription)  # a subscription comes into being with its first token
    path = f"/subscriptions/{subscription}/providers/Microsoft.Compute"
    with arm.http() as client:
        reply = client.post(f"{path}/register", params={"api-version": "2025-04-01"})
        assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + 30
        while True:
            state = client.get(path, params={"api-version": "2025-04-01"}).json()
            if state["registrationState"] == "Registered":
                return
            assert time.monotonic() < deadline, state
            time.sleep(0.2)


def create_group(arm: Arm, subscription: str, group: str, location: str = "westus") -> None:
    """Create (or keep) a resource group."""
    with arm.http() as client:
        reply = client.put(
            f"/subscriptions/{subscription}/resourcegroups/{group}",
            params={"api-version": "2025-04-01"},
            json={"location": location},
        )
    assert reply.status_code in (200, 201), reply.text


def vm_body(name: str, *, linux: bool = False, location: str = "westus") -> dict[str, Any]:
    """A virtual machine's model: a Windows hotpatch image, or the (Linux) demo image."""
    if linux:
        image: dict[str, Any] = DEMO_IMAGE
        os_config: dict[str, Any] = {
            "linuxConfiguration": {
                "provisionVMAgent": True,
                "patchSettings": {"patchMode": "AutomaticByPlatform"},
            }
        }
    else:
        image = WINDOWS_IMAGE
        os_config = {
            "windowsConfiguration": {
                "provisionVMAgent": True,
                "patchSettings": {"patchMode": "AutomaticByPlatform", "enableHotpatching": True},
            }
        }
    return {
        "location": location,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
            "storageProfile": {"imageReference": image},
            "osProfile": {
                "computerName": name,
                "adminUsername": "azureuser",
                "adminPassword": "P@ssw0rd-1234!",
                **os_config,
            },
        },
    }


def create_vm(arm: Arm, subscription: str, group: str, name: str, *, linux: bool = False) -> str:
    """Create a virtual machine with the Azure SDK; its resource id."""
    from azure.mgmt.compute import ComputeManagementClient

    client = ComputeManagementClient(
        subscription_id=subscription, **arm.sdk(arm.token("Owner", subscription))
    )
    created = client.virtual_machines.begin_create_or_update(
        group, name, vm_body(name, linux=linux)
    ).result()
    client.close()
    vm_id: str = created.id
    return vm_id
