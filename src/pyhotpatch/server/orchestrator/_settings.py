"""The orchestrator's settings: the knobs Azure keeps to itself, ours explicit and stored.

One ``Settings`` value holds every limit of automatic patching, with its unit in its
name. It is kept as JSON in ``catalog_settings`` (key ``orchestrator``) so that every
server process and the simulator read the same values, and each rollout copies the
settings it starts with, so that changing them never moves the goalposts of a rollout
already under way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, select

from pyhotpatch.server.orchestrator._regions import AZURE_PAIRS, paired, parse_pairs
from pyhotpatch.server.orchestrator._windows import DEFAULT_WINDOW, Window
from pyhotpatch.storage._tables import settings as settings_table

KEY = "orchestrator"


@dataclass(frozen=True)
class Settings:
    """Every limit of automatic assessment and installation.

    ``window``: the fleet's off-peak window in each machine's local time (a machine's own
    ``hotpatch-maintenance-window`` tag overrides it). ``soak_hours``: how long a region's
    healthy DevTest ring runs before its Production machines start. ``bake_minutes``: how
    long after a batch's last install its health is judged. ``first_batch_unhealthy`` and
    ``unhealthy_percent``: the health gate halts a rollout when more machines than that are
    unhealthy in its first batch (a count) or in any later batch (a share).
    ``failed_installs`` and ``failed_percent``: the failure gate halts a rollout, after a
    batch, once at least that many of its installs failed and they are more than that share
    of its installs that ended (100 turns the gate off). ``set_percent``:
    the share of an availability set patched at once (sets smaller than ``small_set`` go one
    machine at a time); ``subscription_percent``: the share of a subscription's machines
    patched at once. ``assess_hours`` and ``assess_platform_hours``: how often machines are
    assessed, with ``assessmentMode`` ``ImageDefault`` and ``AutomaticByPlatform``;
    ``assess_cycle_minutes``: how often the orchestrator looks for machines due (a machine
    that was off is assessed at the first cycle after it is back).
    ``deadline_days``: every machine gets a release within this many days of its publish
    date. ``pairs``: the geo-paired regions that never share a phase, as "a:b,c:d".
    ``min_window_minutes``: the least time left in a window for an install to start.
    """

    window: str = str(DEFAULT_WINDOW)
    soak_hours: float = 24.0
    bake_minutes: float = 10.0
    first_batch_unhealthy: int = 0
    unhealthy_percent: float = 20.0
    failed_installs: int = 3
    failed_percent: float = 50.0
    set_percent: float = 20.0
    small_set: int = 10
    subscription_percent: float = 20.0
    assess_hours: float = 72.0
    assess_platform_hours: float = 24.0
    assess_cycle_minutes: float = 60.0
    deadline_days: float = 30.0
    min_window_minutes: float = 30.0
    pairs: str = ",".join(f"{a}:{b}" for a, b in AZURE_PAIRS)

    def __post_init__(self) -> None:
        Window.parse(self.window)
        parse_pairs(self.pairs)
        limits = {
            "soak_hours": (0, 24 * 30),
            "bake_minutes": (0, 24 * 30),
            "min_window_minutes": (0, 24 * 60),
            "unhealthy_percent": (0, 100),
            "failed_percent": (0, 100),
            "failed_installs": (1, 1_000_000),
            "set_percent": (0, 100),
            "subscription_percent": (0, 100),
            "deadline_days": (1, 90),
            "assess_hours": (1, 24 * 10),
            "assess_platform_hours": (1, 24 * 10),
            "assess_cycle_minutes": (1, 24 * 60),
            "first_batch_unhealthy": (0, 1_000_000),
            "small_set": (1, 1000),
        }
        for name, (low, high) in limits.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{_camel(name)} must be between {low} and {high}")

    @property
    def fleet_window(self) -> Window:
        """The fleet's default off-peak window."""
        return Window.parse(self.window)

    @property
    def partners(self) -> Mapping[str, frozenset[str]]:
        """Each region -> the regions it never shares a phase with, from ``pairs``."""
        return _partners(self.pairs)

    @property
    def soak(self) -> timedelta:
        """The DevTest soak time."""
        return timedelta(hours=self.soak_hours)

    @property
    def bake(self) -> timedelta:
        """How long a batch runs before the health gate judges it."""
        return timedelta(minutes=self.bake_minutes)

    @property
    def deadline(self) -> timedelta:
        """How long after its publish date every machine has a release."""
        return timedelta(days=self.deadline_days)

    @property
    def min_window(self) -> timedelta:
        """The least time left in a window for an install to start."""
        return timedelta(minutes=self.min_window_minutes)

    def assess_every(self, assessment_mode: str | None) -> timedelta:
        """How often a machine with this ``assessmentMode`` is assessed."""
        hours = (
            self.assess_platform_hours
            if assessment_mode == "AutomaticByPlatform"
            else self.assess_hours
        )
        return timedelta(hours=hours)

    def to_json(self) -> dict[str, Any]:
        """The API's (and the database's) representation, in camelCase."""
        return {_camel(k): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, body: Any, *, base: Settings | None = None) -> Settings:
        """Settings from an API body; fields left out keep ``base``'s values.

        ``ValueError`` names an unknown field or a bad value.
        """
        if not isinstance(body, dict):
            raise ValueError("the orchestrator settings are a JSON object")
        if base is None and cls is Settings:
            # every pass reads the fleet's and each rollout's copy: the same few values
            try:
                return _stored(tuple(sorted((k, type(v).__name__, v) for k, v in body.items())))
            except TypeError:  # a value that cannot be a key (a list, say) is refused below
                pass
        return cls._parse(body, base)

    @classmethod
    def _parse(cls, body: dict[str, Any], base: Settings | None) -> Settings:
        known = {_camel(f.name): f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in body.items():
            found = known.get(key)
            if found is None:
                raise ValueError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            kind = found.type
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
            if kind in ("int", "float") and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValueError(f"{key} must be a number")
            if kind == "int" and value != int(value):
                raise ValueError(f"{key} must be a whole number")
            changes[found.name] = int(value) if kind == "int" else value
        return replace(base or cls(), **changes)


@lru_cache(maxsize=64)
def _stored(items: tuple[tuple[str, str, Any], ...]) -> Settings:
    # the type's name is in the key so that 10 and 10.0 stay what they were
    return Settings._parse({key: value for key, _, value in items}, None)


@cache
def _partners(pairs: str) -> Mapping[str, frozenset[str]]:
    return MappingProxyType(paired(parse_pairs(pairs)))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def load(conn: Connection) -> Settings:
    """The stored settings, or the defaults when none were ever stored."""
    row = conn.execute(select(settings_table.c.value).where(settings_table.c.key == KEY)).first()
    return Settings.from_json(row.value) if row is not None else Settings()


def save(conn: Connection, value: Settings) -> None:
    """Store ``value`` as the fleet's settings."""
    body = value.to_json()
    updated = conn.execute(
        settings_table.update().where(settings_table.c.key == KEY).values(value=body)
    )
    if updated.rowcount == 0:
        conn.execute(settings_table.insert().values(key=KEY, value=body))
