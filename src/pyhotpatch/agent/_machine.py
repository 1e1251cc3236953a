"""The machine as the agent manages it: its service, environments, releases and state.

Each piece of work (assess, install, revert, upgrade) is a method here, and each
change to what the machine runs follows one pattern: the intent is written to the
journal first, then carried out in steps that can each be repeated. A step before
the point of no return is undone on recovery; one after it is finished. For a
hotpatch the point of no return is recording the package for new processes; for a
baseline it is switching the ``current`` environment. So a ``SIGKILL`` at any
instant leaves every process of the service either on the old release or on the new
one once the agent has started again, never some of each.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyhotpatch import __version__
from pyhotpatch.agent._config import image_reference
from pyhotpatch.agent._environments import Environments
from pyhotpatch.agent._external import ExternalService
from pyhotpatch.agent._files import write_atomic
from pyhotpatch.agent._health import health, probe
from pyhotpatch.agent._releases import Offer, applicable, newest_baseline, offers
from pyhotpatch.agent._state import StateStore
from pyhotpatch.agent._supervisor import Supervisor
from pyhotpatch.catalog._selection import SELECTED, parse_duration, reboot_status, select
from pyhotpatch.catalog.tufclient import ReleaseFeed
from pyhotpatch.clock import Clock, system_clock
from pyhotpatch.errors import AgentError, BusyError, HotpatchError, NotActive, TransportError
from pyhotpatch.runtime import client

log = logging.getLogger("pyhotpatch.agent")

#: seconds one worker is assumed to take to restart before any was measured
RESTART_ESTIMATE = 15.0
#: seconds a baseline's environment is assumed to take to build
BUILD_ESTIMATE = 30.0
_DEFAULT_DURATION = timedelta(hours=4)

#: named points where tests may stop the agent dead (``PYHOTPATCH_AGENT_CRASH_AT``)
CRASH_POINTS = (
    "hotpatch-journaled",
    "hotpatch-recorded",
    "hotpatch-applied-one",
    "hotpatch-applied",
    "revert-journaled",
    "revert-applied-one",
    "baseline-journaled",
    "baseline-built",
    "baseline-switched",
    "baseline-restarted-one",
    "baseline-restarted",
)


def crash_point(name: str) -> None:
    """Die here with ``SIGKILL`` if ``PYHOTPATCH_AGENT_CRASH_AT`` names this point.

    The recovery tests kill the agent at every named step of an install; no other
    code path reads the variable.
    """
    if os.environ.get("PYHOTPATCH_AGENT_CRASH_AT") == name:
        log.warning("stopping dead at %s, as PYHOTPATCH_AGENT_CRASH_AT asks", name)
        os.kill(os.getpid(), 9)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Machine:
    """One machine's service, releases and durable state, and the work done on them."""

    def __init__(
        self,
        state_dir: Path,
        supervisor: Supervisor | ExternalService,
        store: StateStore,
        feed: ReleaseFeed,
        *,
        clock: Clock = system_clock,
        python: str | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.python = python
        self.supervisor = supervisor
        self.store = store
        self.feed = feed
        self.clock = clock
        self.envs = Environments(state_dir / "envs")
        self.packages = state_dir / "packages"
        self.packages.mkdir(exist_ok=True, mode=0o700)
        self.active_package = state_dir / "active.hotpatch"
        self.run_dir = state_dir / "run"
        #: what the control plane says about this machine (``GET /agent/machine``)
        self.info: dict[str, Any] = {}
        self._feed_lock = threading.Lock()
        self._work_lock = threading.Lock()

    # --- what the machine is -------------------------------------------------------------

    @property
    def product(self) -> str | None:
        """The product (stack) the machine runs."""
        return self.store.state.product or self.info.get("product")

    @property
    def hotpatch_enabled(self) -> bool:
        """Whether hotpatches apply in memory; if not, they install with a restart."""
        capable = self.info.get("hotpatchCapable", True)
        return bool(capable) and bool(self.info.get("enableHotpatching", True))

    def catalog(self) -> list[Offer]:
        """The verified releases, freshly refreshed from the control plane."""
        with self._feed_lock:
            self.feed.refresh()
            return offers(self.feed.targets())

    def _download(self, path: str) -> Path:
        with self._feed_lock:
            return self.feed.download(path)

    def reported(self) -> dict[str, Any]:
        """What the heartbeat tells the control plane about the machine."""
        state = self.store.state
        version = state.baseline or "none"
        if state.active_hotpatch:
            version += f"+{state.active_hotpatch}"
        image = state.image
        doc: dict[str, Any] = {
            "osName": f"{state.product or 'unknown stack'} (Python)",
            "osVersion": version,
            "product": state.product,
            "baseline": state.baseline,
            "pendingBaseline": state.pending_baseline,
            "activeHotpatch": state.active_hotpatch,
            "hotpatchEnabled": self.hotpatch_enabled,
            "agentVersion": __version__,
            "transition": self.transition(),
            "workers": self.supervisor.liveness(),
            "lastAssessment": state.last_assessment,
            "operation": (state.journal or {}).get("op"),
        }
        if image:
            doc["image"] = image_reference(image)
        return doc

    def transition(self) -> dict[str, Any]:
        """Whether every process runs only the active release's code yet (livepatch's transition)."""
        processes, pending, unreachable = 0, 0, 0
        for pid in client.processes(self.run_dir):
            try:
                info = client.status(pid, self.run_dir, timeout=5.0)
            except HotpatchError:
                unreachable += 1
                continue
            processes += 1
            if not (info.get("transition") or {}).get("complete", True):
                pending += 1
        return {
            "complete": pending == 0,
            "processes": processes,
            "inTransition": pending,
            "unreachable": unreachable,
        }

    def health(self, probe_spec: Any) -> dict[str, Any]:
        """The health signal: worker liveness plus the service's own probe."""
        return health(self.supervisor.liveness(), probe(probe_spec) if probe_spec else None)

    # --- start-up ------------------------------------------------------------------------

    def provision(self, image: str, product: str | None, progress: Callable[[str], None]) -> None:
        """Give a new machine its stack: the product's current baseline, before the service starts."""
        state = self.store.state
        if state.baseline is not None and self.envs.has(state.baseline):
            return
        if product is None:
            raise AgentError(
                f"the control plane knows no product for image {image}: it cannot be provisioned"
            )
        latest = newest_baseline(self.catalog(), product, self.clock())
        if latest is None:
            raise AgentError(f"product {product} has no published baseline to provision")
        progress(f"provisioning {product} baseline {latest.kb}")
        self._build(latest, progress)
        self.envs.switch(latest.kb)
        self.store.update(product=product, image=image, baseline=latest.kb, journal=None)

    def start_service(self) -> None:
        """Start (or adopt) the service's workers on the current environment."""
        baseline = self.store.state.baseline
        if baseline is None:
            raise AgentError("no baseline is installed: the service cannot start")
        self.supervisor.start(self.envs.python(baseline))

    def resume(self) -> dict[str, Any] | None:
        """Finish or undo the operation a killed agent left in the journal; what was done."""
        journal = self.store.state.journal
        if not journal:
            return None
        op, phase = journal.get("op"), journal.get("phase")
        log.warning("resuming %s of %s interrupted at %s", op, journal.get("kb"), phase)
        outcome: dict[str, Any]
        try:
            if op == "hotpatch":
                outcome = self._resume_hotpatch(journal)
            elif op == "revert":
                self._revert_steps(journal)
                outcome = {"finished": True}
            elif op == "baseline":
                outcome = self._resume_baseline(journal)
            else:
                outcome = {"finished": False, "error": f"unknown operation {op!r}"}
        except HotpatchError as exc:
            log.error("could not resume %s: %s", op, exc)
            outcome = {"finished": False, "error": str(exc)}
        self.store.update(journal=None)
        return {
            "op": op,
            "kb": journal.get("kb"),
            "phase": phase,
            "item": journal.get("item"),
            "journal": journal,
            **outcome,
        }

    # --- assess --------------------------------------------------------------------------

    def assess(self) -> dict[str, Any]:
        """The assessment result: what the catalog offers that the machine lacks."""
        started = self.clock()
        state = self.store.state
        found = self._offered()
        restart_based = not self.hotpatch_enabled
        patches = [o.patch(restart_based=restart_based) for o in found]
        self.store.update(last_assessment=_iso(started))
        return {
            "status": "Succeeded",
            "rebootPending": state.pending_baseline is not None,
            "availablePatches": patches,
            "startDateTime": _iso(started),
        }

    def _offered(self) -> list[Offer]:
        state = self.store.state
        product = self.product
        if product is None:
            return []
        return applicable(
            self.catalog(),
            product=product,
            baseline=state.baseline,
            active_hotpatch=state.active_hotpatch,
            now=self.clock(),
        )

    # --- install -------------------------------------------------------------------------

    def install(self, payload: dict[str, Any], item: int | None = None) -> dict[str, Any]:
        """Install what ``installPatches`` selects; the result in Azure's shape."""
        with self._work_lock:
            return self._install(payload, item)

    def _install(self, payload: dict[str, Any], item: int | None) -> dict[str, Any]:
        started = self.clock()
        parameters = payload.get("parameters") or {}
        windows = parameters.get("windowsParameters") or parameters.get("linuxParameters") or {}
        setting = str(parameters.get("rebootSetting") or "IfRequired")
        budget = parse_duration(str(payload.get("maximumDuration") or "PT4H")) or _DEFAULT_DURATION
        deadline = started + budget
        found = self._offered()
        restart_based = not self.hotpatch_enabled
        listed = [o.patch(restart_based=restart_based) for o in found]
        states = select(listed, windows)
        order = sorted(range(len(found)), key=lambda i: found[i].is_baseline)
        results: list[dict[str, Any]] = [{} for _ in found]
        errors: list[dict[str, Any]] = []
        exceeded = restarted = needs_restart = False
        for i in order:
            offer, state = found[i], states[i]
            entry = {
                "name": offer.title,
                "kbId": offer.kb,
                "classifications": list(offer.classifications),
                "installationState": state,
            }
            results[i] = entry
            if state != SELECTED:
                continue
            if self.clock() + self._reserve(offer, restart_based) > deadline:
                exceeded = True  # stays Pending: no new work once the window is too short
                continue
            try:
                if offer.is_baseline:
                    restarted |= self._install_baseline(
                        offer, restart=setting != "Never", item=item
                    )
                    needs_restart = True
                elif restart_based:
                    self._record_hotpatch_for_restart(offer)
                    needs_restart = True
                else:
                    self._install_hotpatch(offer, item=item)
                entry["installationState"] = "Installed"
            except HotpatchError as exc:
                log.error("installing %s failed: %s", offer.kb, exc)
                entry["installationState"] = "Failed"
                errors.append({"code": type(exc).__name__, "message": f"{offer.kb}: {exc}"})
        if (setting == "Always" or (needs_restart and setting == "IfRequired")) and not restarted:
            self.restart_service()
        output: dict[str, Any] = {
            "rebootStatus": reboot_status(needs_restart, setting),
            "maintenanceWindowExceeded": exceeded,
            "patches": results,
            "startDateTime": _iso(started),
        }
        if errors:
            output["error"] = {
                "code": "PatchInstallationFailed",
                "message": f"{len(errors)} patch(es) failed to install.",
                "details": errors,
            }
        return output

    def _reserve(self, offer: Offer, restart_based: bool) -> timedelta:
        """How much of the window installing ``offer`` needs before it may start."""
        if not offer.is_baseline and not restart_based:
            return timedelta(0)
        per_worker = float(self.store.state.extra.get("restartSeconds", RESTART_ESTIMATE))
        seconds = per_worker * self.supervisor.spec.workers
        if offer.is_baseline:
            seconds += BUILD_ESTIMATE
        return timedelta(seconds=seconds)

    # --- hotpatches ----------------------------------------------------------------------

    def _verified_hotpatch(self, offer: Offer) -> bytes:
        baseline = self.store.state.baseline
        if baseline is None:
            raise AgentError("no baseline is installed: a hotpatch has nothing to patch")
        with self._feed_lock:
            path = self.feed.fetch_hotpatch(offer.kb, baseline)
        data = path.read_bytes()
        kept = self.packages / f"{offer.kb}.hotpatch"
        if not kept.exists():
            write_atomic(kept, data)
        return data

    def _install_hotpatch(self, offer: Offer, *, item: int | None) -> None:
        data = self._verified_hotpatch(offer)
        state = self.store.state
        if state.active_hotpatch == offer.kb and self._all_at(offer.kb):
            return
        journal = {
            "op": "hotpatch",
            "kb": offer.kb,
            "previous": state.active_hotpatch,
            "phase": "applying",
            "item": item,
            "patch": _entry(offer),
        }
        self.store.update(journal=journal)
        crash_point("hotpatch-journaled")
        try:
            self._apply_everywhere(offer.kb, data, record=True)
        except HotpatchError:
            self._undo_hotpatch(journal)
            self.store.update(journal=None)
            raise
        previous = (
            state.active_hotpatch if state.active_hotpatch != offer.kb else state.previous_hotpatch
        )
        self.store.update(active_hotpatch=offer.kb, previous_hotpatch=previous, journal=None)
        self._prune_packages()

    def _record(self, data: bytes | None) -> None:
        """What new processes apply at start-up: ``data``, or nothing."""
        if data is None:
            self.active_package.unlink(missing_ok=True)
        else:
            write_atomic(self.active_package, data)

    def _apply_everywhere(self, kb: str, data: bytes, *, record: bool) -> None:
        """Apply package ``kb`` in every process, new ones included; on error the caller undoes.

        Applying is idempotent (a process already at ``kb`` changes nothing), so every
        process found is simply given the package, and the run directory is scanned
        again for processes that started meanwhile until a scan finds none.
        """
        if record:
            self._record(data)
            crash_point("hotpatch-recorded")
        patched: set[int] = set()
        for _ in range(5):
            behind = [pid for pid in client.processes(self.run_dir) if pid not in patched]
            if not behind:
                crash_point("hotpatch-applied")
                return
            for pid in behind:
                self._apply_one(pid, data)
                patched.add(pid)
                crash_point("hotpatch-applied-one")
        raise AgentError(f"processes kept starting without hotpatch {kb}; giving up")

    def _apply_one(self, pid: int, data: bytes) -> None:
        try:
            _patiently(client.apply, pid, data, self.run_dir)
        except TransportError:
            if _alive(pid):
                raise
            log.info("process %d ended before it could be patched", pid)

    def _active_in(self, pid: int) -> str | None:
        try:
            info = client.status(pid, self.run_dir)
        except TransportError:
            return None if _alive(pid) else "(gone)"
        active = info.get("active")
        return str(active["id"]) if isinstance(active, dict) else None

    def _all_at(self, kb: str | None) -> bool:
        return all(self._active_in(pid) in (kb, "(gone)") for pid in client.processes(self.run_dir))

    def _package(self, kb: str | None) -> bytes | None:
        if kb is None:
            return None
        try:
            return (self.packages / f"{kb}.hotpatch").read_bytes()
        except FileNotFoundError:
            return None

    def _undo_hotpatch(self, journal: dict[str, Any]) -> None:
        """Put every process back to what was active before ``journal``'s install."""
        self._to(journal["kb"], journal.get("previous"))

    def _to(self, current: str, target: str | None) -> None:
        """Move every process from hotpatch ``current`` to ``target`` (None: the baseline)."""
        data = self._package(target)
        if target is not None and data is None:
            log.warning("package %s is no longer kept: reverting to the baseline", target)
            target = None
        self._record(data)
        for pid in client.processes(self.run_dir):
            active = self._active_in(pid)
            if active in (target, "(gone)"):
                continue
            try:
                if data is not None:
                    _patiently(client.apply, pid, data, self.run_dir)
                elif active is not None:
                    _patiently(client.revert, pid, active, self.run_dir)
            except NotActive:
                pass
            except TransportError:
                if _alive(pid):
                    raise
            crash_point("revert-applied-one")

    def _resume_hotpatch(self, journal: dict[str, Any]) -> dict[str, Any]:
        kb = journal["kb"]
        data = self._package(kb)
        if data is None:
            self._undo_hotpatch(journal)
            return {"finished": False, "undone": True}
        try:
            self._apply_everywhere(kb, data, record=True)
        except HotpatchError as exc:
            self._undo_hotpatch(journal)
            return {"finished": False, "undone": True, "error": str(exc)}
        state = self.store.state
        previous = journal.get("previous")
        self.store.update(active_hotpatch=kb, previous_hotpatch=previous or state.previous_hotpatch)
        return {"finished": True}

    def _record_hotpatch_for_restart(self, offer: Offer) -> None:
        """Hotpatch turned off: the package takes effect as workers restart, not in memory."""
        data = self._verified_hotpatch(offer)
        state = self.store.state
        self._record(data)
        self.store.update(active_hotpatch=offer.kb, previous_hotpatch=state.active_hotpatch)

    def _prune_packages(self) -> None:
        state = self.store.state
        keep = {f"{kb}.hotpatch" for kb in (state.active_hotpatch, state.previous_hotpatch) if kb}
        for path in self.packages.glob("*.hotpatch"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # --- revert --------------------------------------------------------------------------

    def revert(self, payload: dict[str, Any], item: int | None = None) -> dict[str, Any]:
        """Undo the active hotpatch: back to the previous one kept, or to the baseline."""
        with self._work_lock:
            state = self.store.state
            active = state.active_hotpatch
            wanted = payload.get("kbId")
            if active is None:
                return {
                    "reverted": None,
                    "activeHotpatch": None,
                    "message": "no hotpatch is active",
                }
            if wanted and str(wanted).upper() != active.upper():
                raise NotActive(f"hotpatch {wanted} is not active here (active: {active})")
            target = None if payload.get("to") == "baseline" else state.previous_hotpatch
            journal = {
                "op": "revert",
                "kb": active,
                "target": target,
                "phase": "applying",
                "item": item,
            }
            self.store.update(journal=journal)
            crash_point("revert-journaled")
            self._revert_steps(journal)
            self.store.update(journal=None)
            now = self.store.state.active_hotpatch
            return {"reverted": active, "activeHotpatch": now}

    def _revert_steps(self, journal: dict[str, Any]) -> None:
        target = journal.get("target")
        if target is not None and self._package(target) is None:
            target = None
        self._to(journal["kb"], target)
        self.store.update(active_hotpatch=target, previous_hotpatch=None)
        self._prune_packages()

    # --- baselines -----------------------------------------------------------------------

    def _build(self, offer: Offer, progress: Callable[[str], None] | None = None) -> Path:
        locks = offer.artifacts.get("lock", ())
        if len(locks) != 1:
            raise AgentError(f"baseline {offer.kb} has {len(locks)} signed lock files, not one")
        staging = self.state_dir / "staging" / offer.kb
        staging.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = [
            self._staged(path, staging) for path in (*locks, *offer.artifacts.get("wheel", ()))
        ]
        try:
            return self.envs.build(
                offer.kb, files[0], files[1:], python=self.python, progress=progress
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _staged(self, target: str, staging: Path) -> Path:
        """A verified artifact under its own file name (wheel names carry the version)."""
        verified = self._download(target)
        staged = staging / target.rsplit("/", 1)[-1]
        staged.unlink(missing_ok=True)
        try:
            os.link(verified, staged)
        except OSError:
            shutil.copyfile(verified, staged)
        return staged

    def _install_baseline(
        self,
        offer: Offer,
        *,
        restart: bool,
        item: int | None,
        upgrade: dict[str, Any] | None = None,
    ) -> bool:
        """Build ``offer``'s environment and, if ``restart``, move the service onto it.

        Returns whether the service was restarted. Without a restart the environment
        waits as ``pending_baseline`` for the next one. ``upgrade`` (product and
        image) is recorded with the switch when the baseline moves the machine to
        another product.
        """
        journal: dict[str, Any] = {
            "op": "baseline",
            "kb": offer.kb,
            "phase": "building",
            "item": item,
            "patch": _entry(offer),
        }
        if upgrade is not None:
            journal["upgrade"] = upgrade
        self.store.update(journal=journal)
        crash_point("baseline-journaled")
        self._build(offer)
        crash_point("baseline-built")
        if not restart:
            self.store.update(pending_baseline=offer.kb, journal=None)
            return False
        self._switch_to(offer.kb, {**journal, "phase": "switching"})
        return True

    def _switch_to(self, kb: str, journal: dict[str, Any]) -> None:
        """Past the point of no return: switch environments, restart workers one by one."""
        previous = self.store.state.baseline
        self.store.update(journal={**journal, "phase": "switching", "previous": previous})
        self.envs.switch(kb)
        # hotpatches of the old baseline do not apply to the new one
        self._record(None)
        crash_point("baseline-switched")
        self.store.update(journal={**journal, "phase": "restarting", "previous": previous})
        try:
            self._rolling_restart(kb)
        except HotpatchError as exc:
            self._roll_back(kb, previous, exc)
            raise
        crash_point("baseline-restarted")
        moved: dict[str, Any] = {}
        upgrade = journal.get("upgrade")
        if isinstance(upgrade, dict):
            moved = {"product": upgrade["product"], "image": upgrade["image"]}
        self.store.update(
            baseline=kb,
            pending_baseline=None,
            active_hotpatch=None,
            previous_hotpatch=None,
            journal=None,
            **moved,
        )
        self._prune_packages()
        self.envs.prune(keep={kb, *([previous] if previous else [])})

    def _roll_back(self, kb: str, previous: str | None, why: HotpatchError) -> None:
        """A new baseline's workers would not start: put every worker back on ``previous``.

        The workers already moved are restarted on the previous environment, with its
        active hotpatch recorded again, so the machine is back where it was.
        """
        log.error("baseline %s failed to start (%s); rolling back to %s", kb, why, previous)
        if previous is None or not self.envs.has(previous):
            self.store.update(journal=None)
            return
        self.envs.switch(previous)
        self._record(self._package(self.store.state.active_hotpatch))
        try:
            self.supervisor.rolling_restart(self.envs.python(previous))
        finally:
            self.store.update(pending_baseline=None, journal=None)

    def _rolling_restart(self, kb: str) -> None:
        started = time.monotonic()

        def progress(event: dict[str, Any]) -> None:
            log.info("restarted worker %s as %s", event.get("old"), event.get("new"))
            crash_point("baseline-restarted-one")

        events = self.supervisor.rolling_restart(self.envs.python(kb), progress)
        if events:
            per_worker = (time.monotonic() - started) / len(events)
            extra = {**self.store.state.extra, "restartSeconds": round(per_worker, 3)}
            self.store.update(extra=extra)

    def restart_service(self) -> None:
        """Restart every worker one at a time, taking up a pending baseline if there is one."""
        pending = self.store.state.pending_baseline
        if pending is not None and self.envs.has(pending):
            self._switch_to(pending, {"op": "baseline", "kb": pending, "item": None})
            return
        baseline = self.store.state.baseline
        if baseline is None:
            raise AgentError("no baseline is installed: nothing to restart")
        self._rolling_restart(baseline)

    def _resume_baseline(self, journal: dict[str, Any]) -> dict[str, Any]:
        kb = journal["kb"]
        if journal.get("phase") == "building":
            self.envs.prune(keep={k for k in (self.store.state.baseline, kb) if k})
            return {"finished": False, "undone": True}
        if not self.envs.has(kb):
            return {"finished": False, "error": f"environment {kb} is missing"}
        self._switch_to(kb, journal)
        return {"finished": True}

    # --- upgrade -------------------------------------------------------------------------

    def upgrade(self, payload: dict[str, Any], item: int | None = None) -> dict[str, Any]:
        """Move an older stack to a hotpatch-capable product by installing its current baseline."""
        with self._work_lock:
            product = payload.get("product")
            image = payload.get("image")
            if not isinstance(product, str) or not isinstance(image, dict):
                raise AgentError("upgradeStack needs 'product' and 'image'")
            text = ":".join(str(image.get(k, "")) for k in ("publisher", "offer", "sku"))
            latest = newest_baseline(self.catalog(), product, self.clock())
            if latest is None:
                raise AgentError(f"product {product} has no published baseline to upgrade to")
            if self.store.state.baseline != latest.kb:
                moved = {"product": product, "image": text}
                self._install_baseline(latest, restart=True, item=item, upgrade=moved)
            self.store.update(product=product, image=text)
            return upgrade_output(product, text, latest.kb)


def _entry(offer: Offer) -> dict[str, Any]:
    return {"name": offer.title, "kbId": offer.kb, "classifications": list(offer.classifications)}


def upgrade_output(product: str, image: str, baseline: str) -> dict[str, Any]:
    """The result of ``upgradeStack``: the machine's new product, image and baseline."""
    return {"product": product, "image": image_reference(image), "baseline": baseline}


def resumed_result(resumed: dict[str, Any]) -> dict[str, Any]:
    """The result to report for a work item whose operation a restarted agent finished or undid."""
    finished = bool(resumed.get("finished"))
    op = resumed.get("op")
    journal = resumed.get("journal") or {}
    if op == "revert":
        if not finished:
            return {
                "status": "Failed",
                "error": {"code": "Interrupted", "message": str(resumed.get("error"))},
            }
        return {"status": "Succeeded", "output": {"reverted": resumed.get("kb")}}
    upgrade = journal.get("upgrade")
    if isinstance(upgrade, dict) and finished:
        moved = upgrade_output(upgrade["product"], upgrade["image"], str(resumed.get("kb")))
        return {"status": "Succeeded", "output": moved}
    patch = dict(journal.get("patch") or {"name": resumed.get("kb"), "kbId": resumed.get("kb")})
    patch.setdefault("classifications", [])
    patch["installationState"] = "Installed" if finished else "Failed"
    output: dict[str, Any] = {
        "rebootStatus": "Completed" if op == "baseline" and finished else "NotNeeded",
        "maintenanceWindowExceeded": False,
        "patches": [patch],
    }
    if not finished:
        output["error"] = {
            "code": "Interrupted",
            "message": f"the agent stopped during the installation of {resumed.get('kb')} "
            f"and undid it on restart: {resumed.get('error') or 'nothing was changed'}",
        }
    return {"status": "Succeeded", "output": output}


def _patiently(call: Callable[..., Any], pid: int, *args: Any) -> Any:
    """``call(pid, *args)``, waiting while the process is busy applying its recorded package."""
    for attempt in range(50):
        try:
            return call(pid, *args)
        except BusyError:
            time.sleep(0.01 * (attempt + 1))
    raise AgentError(f"process {pid} stayed busy with another apply or revert")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
