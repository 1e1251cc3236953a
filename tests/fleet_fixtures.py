"""A machine as the orchestrator's rules see it, for tests of the rules alone."""

from __future__ import annotations

from datetime import datetime, timezone

from pyhotpatch.server.orchestrator._fleet import Machine

NOW = datetime(2026, 3, 10, 23, 0, tzinfo=timezone.utc)


def machine(
    name: str = "m",
    *,
    sub: str = "s1",
    zone: str | None = None,
    aset: str | None = None,
    domain: int | None = None,
    environment: str = "Production",
    last_seen: datetime = NOW,
) -> Machine:
    """A running, hotpatch-enrolled, automatically patched machine placed as asked."""
    return Machine(
        id=name,
        subscription=sub,
        region="eastus",
        zone=zone,
        availability_set=aset,
        update_domain=domain,
        time_zone="UTC",
        window=None,
        environment=environment,
        os_type="Windows",
        patch_mode="AutomaticByPlatform",
        assessment_mode=None,
        hotpatch=True,
        product="p",
        last_seen=last_seen,
        baseline="KB1000",
        active_hotpatch=None,
        health="Healthy",
    )
