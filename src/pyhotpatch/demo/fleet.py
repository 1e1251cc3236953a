"""``hotpatch demo``: a small fleet patched by the orchestrator, availability-first.

The control plane starts in this process on embedded SQLite, on a clock that runs
``speed`` times faster than the wall clock so that off-peak windows, bake and soak times
pass in minutes. Six machines (real agents running the demo web service, under a steady
loopback load) stand in three regions, two of them geo-paired, in zones and an
availability set, DevTest and Production, each in a time zone whose off-peak window is
open. A Security hotpatch is built from the demo app's wheels and published; the
orchestrator takes it to every machine without a restart, DevTest first, one zone and one
update domain at a time. Then a baseline no hotpatch can carry is published and rolled out
the same way, with one restart per machine. ``run`` returns 0 when the story held: every
machine patched, no request failed and no process restarted during the hotpatch.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from pyhotpatch.clock import ScaledClock
from pyhotpatch.demo import releases
from pyhotpatch.demo.machines import SPOTS, Load, Machine, answered, local_time, open_window_zone
from pyhotpatch.errors import HotpatchError

SUBSCRIPTION = "0de3f1ee-7a11-4d3e-9c00-00000000d3e0"
GROUP = "demo-fleet"
FEATURES = ("InGuestHotPatchVMPreview", "InGuestAutoPatchVMPreview", "InGuestPatchVMPreview")
#: how long each batch bakes before its health gate, in the scaled clock's minutes
BAKE_MINUTES = 3
#: the longest a part of the demonstration may take, in wall-clock seconds
PATIENCE = 20 * 60.0
TRAVERSAL = "/files?name=../secrets/token"

#: a terminal's own width; redirected output gets room for the fleet's table
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


class DemoFailed(HotpatchError):
    """A part of the demonstration did not happen as it should."""


@dataclass
class Status:
    """What the control plane says about one machine."""

    baseline: str | None = None
    hotpatch: str | None = None
    transition: str | None = None
    running: bool = False
    pids: frozenset[int] = frozenset()


def run(
    workdir: Path,
    *,
    speed: float = 30.0,
    soak_hours: float = 0.5,
    port: int = 0,
    keep_running: bool = False,
) -> int:
    """Run the fleet demonstration in ``workdir``; 0 if every part of it held, else 1.

    ``soak_hours`` (fleet time) is how long each region's DevTest ring runs before its
    Production machines start.
    """
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)  # each run starts from a fresh control plane and fleet
    workdir.mkdir(parents=True)
    began = time.monotonic()
    demo = _Demo(workdir, speed, soak_hours, port)
    try:
        demo.start_control_plane()
        demo.start_fleet()
        demo.roll_out_hotpatch()
        demo.roll_out_baseline()
        ok = demo.summary(time.monotonic() - began)
        if keep_running and ok:
            console.print(f"\nstill running: portal at {demo.url}/portal; Ctrl-C stops everything")
            threading.Event().wait()
        return 0 if ok else 1
    except KeyboardInterrupt:
        console.print("\n[bold]interrupted[/]: stopping the fleet and the control plane")
        return 130
    except (DemoFailed, HotpatchError, OSError, httpx.HTTPError) as exc:
        console.print(f"\n[bold red]demo failed[/]: {escape(str(exc))}")
        demo.explain()
        return 1
    finally:
        demo.stop()


class _Demo:
    def __init__(self, workdir: Path, speed: float, soak_hours: float, port: int) -> None:
        self.workdir = workdir
        self.speed = speed
        self.soak_hours = soak_hours
        self.port = port
        self.clock = ScaledClock(speed)
        self.admin = secrets.token_urlsafe(24)
        self.url = ""
        self.catalog: Any = None
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.api: httpx.Client | None = None
        self.machines: list[Machine] = []
        self.load: Load | None = None
        self.desk: releases.ReleaseDesk | None = None
        self.seen: dict[str, Status] = {}
        self.parts: dict[str, tuple[float, datetime, datetime, int]] = {}

    # --- the control plane --------------------------------------------------------------------

    def start_control_plane(self) -> None:
        import uvicorn

        from pyhotpatch.catalog import Catalog
        from pyhotpatch.server import create_app
        from pyhotpatch.server.arm._context import ArmSettings

        self.catalog = Catalog.open(self.workdir / "control-plane", clock=self.clock)
        app = create_app(
            self.catalog,
            admin_token=self.admin,
            arm=ArmSettings(
                feature_delay=timedelta(seconds=30), provider_delay=timedelta(seconds=30)
            ),
            orchestrate_seconds=1.0,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="control-plane", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise DemoFailed(f"the control plane did not start on port {self.port}")
            time.sleep(0.05)
        bound = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{bound}"
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin}"}, timeout=30
        )
        console.print(
            f"[bold]hotpatch demo[/]: a fleet patched availability-first, on a clock {self.speed:g}x "
            "faster than yours"
        )
        console.print(f"control plane on SQLite at {self.url}, data in {self.workdir}")
        console.print(f"portal: {self.url}/portal  (sign in with the token {self.admin})")
        self.owner = self._call("POST", "/hotpatch/tokens", json={
            "role": "Owner", "subscription": SUBSCRIPTION, "name": "demo operator",
        })["token"]  # fmt: skip
        for feature in FEATURES:
            self._call(
                "POST",
                f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Features/providers/"
                f"Microsoft.Compute/features/{feature}/register",
                params={"api-version": "2021-07-01"},
            )
        provider = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute"
        self._call("POST", f"{provider}/register", params={"api-version": "2022-09-01"})
        self._until(
            "Microsoft.Compute registered",
            lambda: (
                self._call("GET", provider, params={"api-version": "2022-09-01"})[
                    "registrationState"
                ]
                == "Registered"
            ),
            60,
        )
        console.print(
            f"registered the hotpatch preview features and Microsoft.Compute for {SUBSCRIPTION}"
        )
        self._call(
            "PATCH",
            "/hotpatch/orchestrator/settings",
            json={"soakHours": self.soak_hours, "bakeMinutes": BAKE_MINUTES},
        )
        self.desk = releases.ReleaseDesk(self.catalog, self.workdir / "releases")
        self.desk.publish_running(self.clock())
        console.print(
            f"published {releases.RUNNING}: the baseline the machines run (demo app 1.0.0)"
        )

    # --- the fleet ----------------------------------------------------------------------------

    def start_fleet(self) -> None:
        taken: set[str] = set()
        for spot in SPOTS:
            zone = open_window_zone(self.clock(), taken)
            taken.add(zone)
            self.machines.append(
                Machine(spot, zone, self.workdir / "machines" / spot.name, SUBSCRIPTION, GROUP)
            )
        self._call(
            "PUT",
            f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{GROUP}",
            params={"api-version": "2022-09-01"},
            json={"location": "eastus"},
        )
        self._call(
            "PUT",
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/"
            "Microsoft.Compute/availabilitySets/app-set",
            params={"api-version": "2024-11-01"},
            json={"location": "westus", "properties": {"platformUpdateDomainCount": 3}},
        )
        failures: list[str] = []

        def connect(machine: Machine) -> None:
            try:
                machine.connect(self.url, self.owner)
                machine.start(self.clock.environment())
            except HotpatchError as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=connect, args=(m,)) for m in self.machines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise DemoFailed("; ".join(failures))
        self._until(
            "every machine serving its baseline",
            lambda: all(
                m.serving() and self._status(m).baseline == releases.RUNNING for m in self.machines
            ),
            240,
        )
        console.print(f"{len(self.machines)} machines serving demo app 1.0.0 under load:")
        grid = Table(show_edge=False, header_style="bold")
        for column in ("machine", "region", "zone / set", "environment", "time zone", "local"):
            grid.add_column(column)
        for m in self.machines:
            grid.add_row(
                m.spot.name, m.spot.region, m.spot.zone or m.spot.availability_set or "",
                m.spot.environment, m.time_zone, local_time(m.time_zone, self.clock()),
            )  # fmt: skip
        console.print(grid)
        self.load = Load(self.machines)
        self.load.start()

    # --- the two rollouts ---------------------------------------------------------------------

    def roll_out_hotpatch(self) -> None:
        assert self.desk is not None and self.load is not None
        vulnerable = sum(answered(m.port, TRAVERSAL)[0] == 200 for m in self.machines)
        console.print(
            f"\n[bold]1. hotpatch[/] {releases.HOTPATCH}: {TRAVERSAL} leaks a secret on "
            f"{vulnerable} of {len(self.machines)} machines"
        )
        self.load.begin("hotpatch")
        size = self.desk.publish_hotpatch(self.clock())
        console.print(
            f"published {releases.HOTPATCH} ({size:,} bytes); the orchestrator takes it from here"
        )
        self._follow("hotpatch", lambda s: s.hotpatch == releases.HOTPATCH)
        self._gates_passed(releases.HOTPATCH)
        refused = sum(answered(m.port, TRAVERSAL)[0] == 403 for m in self.machines)
        console.print(f"{TRAVERSAL} now refused on {refused} of {len(self.machines)} machines")
        if refused != len(self.machines):
            raise DemoFailed("the hotpatch did not fix every machine")

    def roll_out_baseline(self) -> None:
        assert self.desk is not None and self.load is not None
        console.print(
            f"\n[bold]2. baseline[/] {releases.NEXT_BASELINE}: demo app 1.1.0 changes a class "
            "layout, which no hotpatch can carry: an unplanned baseline, one restart each"
        )
        self.load.begin("baseline")
        self.desk.publish_next_baseline(self.clock())
        self._follow("baseline", lambda s: s.baseline == releases.NEXT_BASELINE)
        self._gates_passed(releases.NEXT_BASELINE)
        self.load.begin("after")

    def _gates_passed(self, release: str) -> None:
        """Wait until the last batch of ``release``'s rollout has baked and passed its gate."""

        def completed() -> bool:
            found = self._call("GET", "/hotpatch/rollouts")["value"]
            return any(r["release"] == release and r["state"] == "completed" for r in found)

        self._until(f"the rollout of {release} to complete", completed, 120)
        console.print(f"rollout of {release} completed: every batch passed its health gate")

    def _follow(self, part: str, done: Callable[[Status], bool]) -> None:
        started, domain = time.monotonic(), self.clock()
        before = {m.spot.name: self._status(m).pids for m in self.machines}
        live = console.is_terminal

        last_line = ""

        def changed() -> bool:
            nonlocal last_line
            if not live:
                line = self._rollout_line()
                if line != last_line and "between batches" not in line:
                    console.print(f"  {self.clock():%a %H:%M} UTC  {line}", style="dim")
                last_line = line
            for m in self.machines:
                status = self._status(m)
                if self.seen.get(m.spot.name) != status and not live:
                    console.print(
                        f"  {self.clock():%a %H:%M} UTC  {m.spot.name:<10} "
                        f"({m.spot.environment}, local {local_time(m.time_zone, self.clock())}): "
                        f"baseline {status.baseline}, hotpatch {status.hotpatch or '-'}"
                        + (f", {status.transition}" if status.transition else "")
                    )
                self.seen[m.spot.name] = status
            return all(done(self.seen[m.spot.name]) for m in self.machines)

        if live:
            with Live(self._table(part), console=console, refresh_per_second=4) as screen:

                def shown() -> bool:
                    finished = changed()
                    screen.update(self._table(part))
                    return finished

                self._until(f"the {part} on every machine", shown, PATIENCE)
        else:
            self._until(f"the {part} on every machine", changed, PATIENCE)
        restarted = sum(self.seen[m.spot.name].pids != before[m.spot.name] for m in self.machines)
        self.parts[part] = (time.monotonic() - started, domain, self.clock(), restarted)

    def _table(self, part: str) -> Table:
        assert self.load is not None
        grid = Table(
            title=f"{part} rollout · {self.clock():%a %d %b %H:%M} UTC (x{self.speed:g})",
            caption=self._rollout_line(),
            header_style="bold",
        )
        for column in ("machine", "region", "zone/set", "env", "local", "baseline", "hotpatch",
                       "doing", "requests ok", "failed"):  # fmt: skip
            grid.add_column(column)
        for m in self.machines:
            status = self.seen.get(m.spot.name, Status())
            tally = self.load.tally(m.spot.name, part)
            grid.add_row(
                m.spot.name, m.spot.region, m.spot.zone or m.spot.availability_set or "",
                m.spot.environment, local_time(m.time_zone, self.clock()),
                status.baseline or "", status.hotpatch or "", status.transition or "",
                f"{tally.ok:,}", str(tally.failed),
            )  # fmt: skip
        return grid

    def _rollout_line(self) -> str:
        """Where the newest active rollout stands: its phase, regions and batch in flight."""
        found = self._call("GET", "/hotpatch/rollouts", params={"state": "active"})["value"]
        if not found:
            return "waiting for the orchestrator"
        rollout = self._call("GET", f"/hotpatch/rollouts/{found[0]['id']}")
        phases = rollout.get("phases") or []
        phase = rollout.get("phase", 0)
        regions = ", ".join(phases[phase]) if phase < len(phases) else "-"
        flying = [b for b in rollout.get("batchList", []) if b["state"] in ("installing", "baking")]
        doing = "; ".join(
            f"batch {b['number']} {b['state']} in {b['region']} ({b['ring']}"
            + (f", zone {b['zone']}" if b.get("zone") else "")
            + f"): {', '.join(_member(m) for m in b.get('machines', []))}"
            for b in flying
        )
        return (
            f"rollout {rollout['id']} of {rollout['release']}: phase {phase + 1} of "
            f"{len(phases)} ({regions})" + (f"; {doing}" if doing else "; between batches")
        )

    # --- the end ------------------------------------------------------------------------------

    def summary(self, seconds: float) -> bool:
        assert self.load is not None
        console.print("\n[bold]what happened[/]")
        ok = True
        for part, release in (
            ("hotpatch", releases.HOTPATCH),
            ("baseline", releases.NEXT_BASELINE),
        ):
            wall, domain_start, domain_end, restarted = self.parts[part]
            total = self.load.totals(part)
            console.print(
                f"  {release} ({part}): {len(self.machines)} machines patched in {wall:.0f} s "
                f"({(domain_end - domain_start).total_seconds() / 3600:.1f} h of fleet time); "
                f"services restarted: {restarted}; requests: {total.ok:,} served, "
                f"{total.failed} failed"
            )
            if part == "hotpatch" and (restarted or total.failed):
                ok = False
        for r in self._call("GET", "/hotpatch/rollouts")["value"]:
            console.print(
                f"  rollout {r['id']} of {r['release']}: {r['state']}, {r['batches']} batches"
            )
        console.print(f"  time taken: {seconds:.0f} s")
        console.print(
            "[bold green]every machine patched; no request failed and no process restarted "
            "during the hotpatch[/]"
            if ok
            else "[bold red]the hotpatch restarted a process or failed a request[/]"
        )
        return ok

    def explain(self) -> None:
        for m in self.machines:
            status = self.seen.get(m.spot.name)
            console.print(f"{m.spot.name}: {status}")
            tail = m.log_tail(8)
            if tail:
                console.print(escape(tail))
        if self.load is not None and self.load.errors:
            console.print("first failed requests: " + "; ".join(self.load.errors[:5]))

    def stop(self) -> None:
        if self.load is not None:
            self.load.stop()
        stoppers = [threading.Thread(target=m.stop) for m in self.machines]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        if self.api is not None:
            self.api.close()
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(15)
        if self.catalog is not None:
            self.catalog.close()

    # --- helpers ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.api is not None
        answer = self.api.request(method, path, **kwargs)
        if answer.status_code >= 400:
            raise DemoFailed(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else None

    def _status(self, machine: Machine) -> Status:
        found = self._call(
            "GET", f"/hotpatch/machines/{quote(machine.vm_id, safe='')}/hotpatchStatus"
        )
        transition = found.get("transition") or {}
        pending = transition.get("pending") if isinstance(transition, dict) else None
        return Status(
            baseline=found.get("baseline"),
            hotpatch=found.get("activeHotpatch"),
            transition=f"{pending} process(es) moving" if pending else None,
            running=bool(found.get("running")),
            pids=frozenset(((found.get("workers") or {}).get("pids")) or ()),
        )

    @staticmethod
    def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise DemoFailed(f"gave up waiting for {what} after {timeout:.0f} s")
            time.sleep(0.5)


def _member(machine: dict[str, Any]) -> str:
    """A batch member as the progress shows it: its name, and its update domain if in a set."""
    if machine.get("availabilitySet"):
        return (
            f"{machine['name']} ({machine['availabilitySet']}, "
            f"update domain {machine['updateDomain']})"
        )
    return str(machine["name"])
