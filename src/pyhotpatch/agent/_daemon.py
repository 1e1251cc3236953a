"""``hotpatch agent run``: the agent's long-running loop.

Three threads share the work. The main thread supervises the service (restarting
workers that die) and waits for ``SIGTERM``. The heartbeat thread sends health and
what the machine runs, at the interval the server asks for. The work thread
long-polls for work, does it one item at a time and delivers each result from the
durable outbox, so a result survives an unreachable server and an agent restart.
Every failed call to the server backs off exponentially with full jitter, so a
fleet that lost its server does not return to it all at once.
"""

from __future__ import annotations

import logging
import logging.handlers
import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from pyhotpatch.agent._config import STATE_FILE, AgentConfig, load_config, load_credential
from pyhotpatch.agent._external import ExternalService, ExternalSpec
from pyhotpatch.agent._machine import Machine, resumed_result
from pyhotpatch.agent._state import StateStore
from pyhotpatch.agent._supervisor import Supervisor
from pyhotpatch.apiclient import ApiCallError, ControlPlane
from pyhotpatch.catalog.tufclient import ReleaseFeed
from pyhotpatch.clock import Clock, system_clock
from pyhotpatch.errors import HotpatchError, ReleaseServerUnreachable

log = logging.getLogger("pyhotpatch.agent")

#: how many delivered results are remembered, to answer a work item handed out twice
REMEMBERED = 32


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base · 2ⁿ))`` seconds."""

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Count a failure; the seconds to wait before trying again."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 30))
        return max(0.1, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        """A call succeeded: start again from short waits."""
        self.failures = 0


def setup_logging(state_dir: Path, *, verbose: bool = False) -> None:
    """Log to ``logs/agent.log`` (rotated) and to stderr."""
    logs = state_dir / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    handler = logging.handlers.RotatingFileHandler(
        logs / "agent.log", maxBytes=1 << 20, backupCount=5
    )
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(fmt)
    console = logging.StreamHandler()
    console.setFormatter(fmt)
    root = logging.getLogger("pyhotpatch")
    root.handlers[:] = [handler, console]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class Agent:
    """One machine's agent: its configuration, its machine and the loops that serve it."""

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock = system_clock,
        stop_service: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.config: AgentConfig = load_config(state_dir)
        self.api = ControlPlane(
            self.config.server,
            load_credential(state_dir),
            Path(self.config.ca_bundle) if self.config.ca_bundle else None,
            timeout=self.config.poll_seconds + 30,
        )
        self.stop_service = stop_service
        self.progress = progress or (lambda text: log.info("%s", text))
        self.store = StateStore(state_dir / STATE_FILE)
        logs = state_dir / "logs"
        logs.mkdir(exist_ok=True, mode=0o700)
        supervisor: Supervisor | ExternalService
        if isinstance(self.config.service, ExternalSpec):
            supervisor = ExternalService(self.config.service, run_dir=state_dir / "run")
        else:
            supervisor = Supervisor(
                self.config.service,
                run_dir=state_dir / "run",
                package_path=state_dir / "active.hotpatch",
                record=state_dir / "service.json",
                log_file=logs / "service.log",
            )
        feed = ReleaseFeed(self.config.server, state_dir / "tuf", ca_bundle=self.config.ca_bundle)
        self.machine = Machine(
            state_dir, supervisor, self.store, feed, clock=clock, python=self.config.python
        )
        self.stopping = threading.Event()
        self._beat_now = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- the control plane ---------------------------------------------------------------

    def refresh_info(self) -> dict[str, Any]:
        """What the control plane says about this machine; the last known answer if unreachable."""
        try:
            info: dict[str, Any] = self.api.call("GET", "/agent/machine").json()
        except ApiCallError as exc:
            if not exc.retryable:
                raise
            info = dict(self.store.state.extra.get("machine") or {})
            log.warning("control plane unreachable (%s); using what it said last", exc)
        else:
            self.store.update(extra={**self.store.state.extra, "machine": info})
        self.machine.info = info
        return info

    def _until_reachable(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()``, retried with backoff while the server cannot be reached."""
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                return call()
            except ApiCallError as exc:
                if not exc.retryable:
                    raise
                wait = backoff.next()
            except ReleaseServerUnreachable:
                wait = backoff.next()
            log.warning("%s: control plane unreachable; trying again in %.1f s", what, wait)
            self.stopping.wait(wait)
        return None

    # --- start-up ------------------------------------------------------------------------

    def start(self) -> None:
        """Provision if new, start or adopt the service, recover an interrupted operation."""
        self._until_reachable("reading the machine", self.refresh_info)
        if self.stopping.is_set():
            return
        state = self.store.state
        product = state.product or self.machine.info.get("product")
        image = state.image or self.config.image
        self._until_reachable(
            "provisioning", lambda: self.machine.provision(image, product, self.progress)
        )
        if self.stopping.is_set():
            return
        self.machine.start_service()
        resumed = self.machine.resume()
        if resumed:
            log.warning("recovered an interrupted operation: %s", resumed)
            if resumed.get("item") is not None:
                self._remember(int(resumed["item"]), resumed_result(resumed))
        self._threads = [
            threading.Thread(target=self._heartbeats, name="agent-heartbeat", daemon=True),
            threading.Thread(target=self._work, name="agent-work", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def run(self) -> int:
        """Serve until ``SIGTERM`` or ``SIGINT``; 0 on a clean stop."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            while not self.stopping.wait(0.5):
                for event in self.machine.supervisor.check():
                    log.info("service: %s", event)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("stopping on signal %d", signum)
        self.stopping.set()

    def shutdown(self) -> None:
        """Stop the loops; stop the service too if asked, else leave it serving."""
        self.stopping.set()
        self._beat_now.set()
        for thread in self._threads:
            thread.join(timeout=self.config.poll_seconds + 35)
        if self.stop_service:
            self.machine.supervisor.stop()
        else:
            self.machine.supervisor.detach()
        self.api.close()

    # --- heartbeats ----------------------------------------------------------------------

    def heartbeat(self) -> dict[str, Any]:
        """Send one heartbeat; the server's answer."""
        body = {
            "health": self.machine.health(self.config.probe),
            "reported": self.machine.reported(),
        }
        answer: dict[str, Any] = self.api.call("POST", "/agent/heartbeat", json=body).json()
        return answer

    def _heartbeats(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                answer = self.heartbeat()
            except ApiCallError as exc:
                wait = backoff.next()
                log.warning("heartbeat failed (%s); next in %.1f s", exc, wait)
            except Exception:
                wait = backoff.next()
                log.exception("heartbeat failed; next in %.1f s", wait)
            else:
                backoff.reset()
                wait = min(
                    float(answer.get("nextHeartbeatSeconds", 60)), self.config.heartbeat_seconds
                )
            self._beat_now.wait(wait)
            self._beat_now.clear()

    # --- work ----------------------------------------------------------------------------

    def _work(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                self.deliver()
                items = self.poll()
                backoff.reset()
            except ApiCallError as exc:
                if exc.status == 401:
                    log.error("the control plane refused this agent's credential: %s", exc)
                wait = backoff.next()
                log.warning("work poll failed (%s); next in %.1f s", exc, wait)
                self.stopping.wait(wait)
                continue
            for item in items:
                if self.stopping.is_set():
                    return
                self.handle(item)

    def poll(self) -> list[dict[str, Any]]:
        """Lease waiting work, waiting up to ``poll_seconds`` for some."""
        response = self.api.call("GET", "/agent/jobs", params={"wait": self.config.poll_seconds})
        if response.status_code == 204:
            return []
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def handle(self, item: dict[str, Any]) -> None:
        """Do one work item (once, even if handed out again) and deliver its result."""
        item_id = int(item["id"])
        body = (self.store.state.extra.get("done") or {}).get(str(item_id))
        if body is None:
            self._remember(item_id, self.execute(item))
        else:
            self.store.post({"item": item_id, "body": body})
        self._beat_now.set()
        try:
            self.deliver()
        except ApiCallError as exc:
            log.warning("result of work item %d kept for later: %s", item_id, exc)

    def _remember(self, item_id: int, body: dict[str, Any]) -> None:
        """Keep a result for delivery, and for a second hand-out of the same item."""
        done = self.store.state.extra.get("done") or {}
        remembered = dict(list(done.items())[-(REMEMBERED - 1) :])
        remembered[str(item_id)] = body
        self.store.update(extra={**self.store.state.extra, "done": remembered})
        self.store.post({"item": item_id, "body": body})

    def execute(self, item: dict[str, Any]) -> dict[str, Any]:
        """Carry out one work item; the result body for ``POST /agent/jobs/{id}/result``."""
        kind, payload = item.get("kind"), item.get("payload") or {}
        item_id = int(item["id"])
        log.info("work item %d: %s", item_id, kind)
        try:
            self.refresh_info()
            if kind == "assessPatches":
                output = self.machine.assess()
            elif kind == "installPatches":
                output = self.machine.install(payload, item_id)
            elif kind == "revertHotpatch":
                output = self.machine.revert(payload, item_id)
            elif kind == "upgradeStack":
                output = self.machine.upgrade(payload, item_id)
            else:
                return _failed("UnknownWork", f"this agent cannot do '{kind}' work")
        except HotpatchError as exc:
            log.error("work item %d (%s) failed: %s", item_id, kind, exc)
            return _failed(type(exc).__name__, str(exc))
        except Exception as exc:
            log.exception("work item %d (%s) crashed", item_id, kind)
            return _failed("AgentFault", f"{type(exc).__name__}: {exc}")
        return {"status": "Succeeded", "output": output}

    def deliver(self) -> None:
        """Send every result waiting in the outbox; ``ApiCallError`` if the server is away."""
        for entry in list(self.store.state.outbox):
            item = int(entry["item"])
            try:
                self.api.call("POST", f"/agent/jobs/{item}/result", json=entry["body"])
            except ApiCallError as exc:
                if exc.retryable:
                    raise
                log.warning("the control plane refused the result of work item %d: %s", item, exc)
            self.store.delivered(item)


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"status": "Failed", "error": {"code": code, "message": message}}
