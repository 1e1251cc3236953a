"""What every ARM route needs: the database, the catalog, the clock and the server's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine

from pyhotpatch.catalog import Catalog
from pyhotpatch.clock import Clock


@dataclass(frozen=True)
class ArmSettings:
    """How the emulated ARM behaves where Azure leaves it to the platform.

    ``feature_delay`` and ``provider_delay``: how long ``Registering`` lasts (Azure says up
    to 15 minutes; a few seconds here by default). ``preview_rules``: whether hotpatch
    needs the seed's preview features registered, as it did before February 2022.
    """

    feature_delay: timedelta = timedelta(seconds=3)
    provider_delay: timedelta = timedelta(seconds=3)
    preview_rules: bool = False
    #: regions refused for hotpatch (Azure Government)
    sovereign_regions: frozenset[str] = field(
        default_factory=lambda: frozenset(
            {
                "usgovvirginia",
                "usgovtexas",
                "usgovarizona",
                "usgoviowa",
                "usdodeast",
                "usdodcentral",
            }
        )
    )


@dataclass(frozen=True)
class ArmContext:
    """Shared by the ARM routers of one server."""

    engine: Engine
    catalog: Catalog
    clock: Clock
    settings: ArmSettings = field(default_factory=ArmSettings)
