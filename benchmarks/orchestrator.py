"""orchestrator: planning and dispatch for large fleets, and simulated time.

A control-plane database on SQLite holds a fleet of N enrolled machines (100,000 and
1,000,000; 10,000 and 100,000 with ``--quick``) spread over 20 regions with zones,
availability sets and subscriptions, all running one baseline. A Security hotpatch is
published and the clock set inside the off-peak window. Measured:

- **plan + dispatch**: the orchestrator's first pass: it opens the rollout (counts the
  targets per region, plans the phases with geo-pairs apart) and dispatches the first
  batch in the first phase's region;
- **wide pass**: a pass that evaluates every region at once (the rollout moved to its last
  phase), reading every target machine and composing a batch in each region;
- the same-run baseline: reading every machine's row once (``SELECT`` of the fleet), the
  floor of anything that looks at every machine.

Then ``hotpatch simulate``'s engine runs fleets through a simulated year (1,000 machines,
then 10,000 against the 10-minute target; 300 machines for 60 days with ``--quick``):
wall time, passes, and restarts taken against those restart-based patching would take.
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import Report, Table, Target, ratio
from sqlalchemy import insert, select, update

from pyhotpatch.catalog import Catalog
from pyhotpatch.clock import ManualClock
from pyhotpatch.server.orchestrator._orchestrator import Orchestrator
from pyhotpatch.simulation._engine import Options, simulate
from pyhotpatch.simulation._report import summarize, time_parts
from pyhotpatch.simulation._world import REGIONS
from pyhotpatch.storage._tables import fleet_machines, machines, presence, releases, rollouts

PLAN_TARGET_S = 10.0  # for a million machines
YEAR_TARGET_S = 600.0  # a simulated year of 10,000 machines
NOW = datetime(2026, 3, 10, 23, 0, tzinfo=timezone.utc)
PRODUCT = "pyhotpatch-demo"


def _fleet(catalog: Catalog, count: int) -> None:
    """``count`` enrolled machines on baseline KB5000000, written in bulk."""
    rng = random.Random(count)
    regions = [name for name, _ in REGIONS[:20]]
    subs = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(max(1, count // 50))]
    with catalog.engine.begin() as conn:
        for kb, kind, baseline, sequence, published in (
            ("KB5000000", "planned-baseline", "KB5000000", 0, NOW - timedelta(days=60)),
            ("KB5000001", "hotpatch", "KB5000000", 1, NOW - timedelta(hours=1)),
        ):
            conn.execute(
                insert(releases).values(
                    kb=kb,
                    product=PRODUCT,
                    kind=kind,
                    title=kb,
                    classifications=["Security"],
                    severity="Important",
                    cves=[],
                    published=published,
                    available=published,
                    baseline=baseline,
                    sequence=sequence,
                    reboot_behavior="NeverReboots"
                    if kind == "hotpatch"
                    else "AlwaysRequiresReboot",
                    replaces=None,
                    superseded_by=None,
                    notes=[],
                    created=published,
                )
            )
        chunk = 50_000
        for first in range(0, count, chunk):
            fleet_rows, agent_rows = [], []
            for i in range(first, min(count, first + chunk)):
                sub = subs[i % len(subs)]
                key = (
                    f"/subscriptions/{sub}/resourcegroups/rg/providers/microsoft.compute"
                    f"/virtualmachines/vm{i:07d}"
                )
                in_set = rng.random() < 0.25
                fleet_rows.append(
                    {
                        "id": key,
                        "subscription": sub,
                        "region": rng.choice(regions),
                        "zone": None if in_set else str(rng.randint(1, 3)),
                        "availability_set": f"set{i // 20}" if in_set else None,
                        "update_domain": i % 5 if in_set else None,
                        "time_zone": "UTC",
                        "window": None,
                        "environment": "DevTest" if rng.random() < 0.15 else "Production",
                        "os_type": "Windows",
                        "patch_mode": "AutomaticByPlatform",
                        "assessment_mode": "ImageDefault",
                        "hotpatch": True,
                        "product": PRODUCT,
                        "created": NOW,
                    }
                )
                agent_rows.append(
                    {
                        "resource_id": key,
                        "subscription": sub,
                        "enrolled": NOW,
                        "agent_version": "bench",
                        "health": {"status": "Healthy"},
                        "reported": {},
                        "assessment": None,
                        "installation": None,
                        "baseline": "KB5000000",
                        "hotpatch": None,
                        "rejoin_after": None,
                        "next_assessment": NOW + timedelta(days=3),
                        "upgrade_requested": None,
                    }
                )
            conn.execute(insert(fleet_machines), fleet_rows)
            conn.execute(insert(machines), agent_rows)
            conn.execute(
                insert(presence),
                [{"resource_id": r["resource_id"], "last_seen": NOW} for r in agent_rows],
            )


def _planning(count: int) -> tuple[float, float, float, int, int]:
    """Seconds for the first pass, for a pass over every region, and for reading the fleet."""
    with tempfile.TemporaryDirectory() as scratch:
        clock = ManualClock(NOW)
        catalog = Catalog.open(Path(scratch), clock=clock)
        _fleet(catalog, count)
        orchestrator = Orchestrator(catalog.engine, clock)
        started = time.perf_counter()
        orchestrator.tick()
        first = time.perf_counter() - started
        with catalog.engine.begin() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.release == "KB5000001")).one()
            phases = len(row.phases)
            conn.execute(update(rollouts).where(rollouts.c.id == row.id).values(phase=phases - 1))
        clock.advance(timedelta(minutes=1))
        fresh = Orchestrator(catalog.engine, clock)  # nothing cached: every region is read
        started = time.perf_counter()
        fresh.tick()
        wide = time.perf_counter() - started
        with catalog.engine.connect() as conn:
            started = time.perf_counter()
            rows = conn.execute(
                select(fleet_machines, presence.c.last_seen, machines.c.baseline)
                .join(machines, machines.c.resource_id == fleet_machines.c.id)
                .join(presence, presence.c.resource_id == fleet_machines.c.id)
            ).all()
            read = time.perf_counter() - started
            batches = conn.execute(
                select(rollouts.c.batches).where(rollouts.c.release == "KB5000001")
            ).scalar_one()
        assert len(rows) == count
        catalog.close()
        return first, wide, read, phases, int(batches)


def run(quick: bool) -> Report:
    """Planning and dispatch at scale, then simulated time."""
    report = Report("orchestrator")
    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    table = Table(
        "planning and dispatch (SQLite, one pass each)",
        [
            "machines",
            "plan + dispatch",
            "wide pass (all regions)",
            "read every row (baseline)",
            "plan/read",
            "phases",
            "batches started",
        ],
    )
    for count in sizes:
        first, wide, read, phases, batches = _planning(count)
        table.rows.append(
            [
                f"{count:,}",
                f"{first:.2f} s",
                f"{wide:.2f} s",
                f"{read:.2f} s",
                ratio(first, read),
                str(phases),
                str(batches),
            ]
        )
        report.data[f"plan_{count}"] = round(first, 3)
        report.data[f"wide_{count}"] = round(wide, 3)
        report.data[f"read_{count}"] = round(read, 3)
        if count == 1_000_000:
            report.targets.append(
                Target(
                    "plan + dispatch, 1M machines",
                    f"< {PLAN_TARGET_S:.0f} s",
                    f"{first:.2f} s",
                    first < PLAN_TARGET_S,
                )
            )
    report.tables.append(table)
    runs = [(300, 4, 60)] if quick else [(1000, 6, 365), (10_000, 10, 365)]
    sims = Table(
        "simulated time (hotpatch simulate's engine)",
        [
            "machines",
            "regions",
            "days",
            "wall",
            "passes",
            "installs",
            "restarts taken",
            "restart-based would take",
            "avoided",
        ],
    )
    tables_after: list[Table] = []
    for machines_, regions, days in runs:
        events: list[dict[str, object]] = []
        outcome = simulate(
            Options(machines=machines_, regions=regions, days=days, seed=1), events.append
        )
        summary = summarize(
            events,
            outcome.releases,
            machines=outcome.machines,
            start=outcome.start,
            end=outcome.end,
        )
        sims.rows.append(
            [
                f"{machines_:,}",
                str(regions),
                str(days),
                f"{outcome.wall_seconds:.0f} s",
                str(outcome.passes),
                str(summary.installs),
                str(summary.restarts),
                str(summary.restart_based),
                str(summary.restarts_avoided),
            ]
        )
        report.data[f"sim_{machines_}_{days}"] = round(outcome.wall_seconds, 1)
        parts = time_parts(outcome.orchestrator_times, outcome.simulation_times)
        where = Table(
            f"where the time of {machines_:,} machines over {days} days went",
            ["part", "wall", "share"],
        )
        for name, spent in parts:
            where.rows.append(
                [name, f"{spent:.1f} s", f"{100 * spent / outcome.wall_seconds:.0f} %"]
            )
        tables_after.append(where)
        report.data[f"sim_{machines_}_{days}_parts"] = {k: round(v, 2) for k, v in parts}
        if (machines_, days) == (10_000, 365):
            report.targets.append(
                Target(
                    "simulated year, 10,000 machines",
                    f"< {YEAR_TARGET_S:.0f} s",
                    f"{outcome.wall_seconds:.0f} s",
                    outcome.wall_seconds < YEAR_TARGET_S,
                )
            )
    report.tables.append(sims)
    report.tables.extend(tables_after)
    return report
