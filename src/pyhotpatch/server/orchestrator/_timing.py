"""Where the time of a loop goes: seconds per step and counts of what the steps did.

The orchestrator keeps one ``StepTimes`` for all its passes and the simulator one for its
simulated agents, so that ``hotpatch simulate`` can say which part of a long run took the
time (a capacity question operators and developers both ask) without a profiler.
"""

from __future__ import annotations

import time


class StepTimes:
    """Wall seconds spent in each named step, and counts of named things, since creation."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._mark = time.perf_counter()

    def start(self) -> None:
        """Start timing the next step from now."""
        self._mark = time.perf_counter()

    def lap(self, step: str) -> None:
        """Charge the time since the last ``start`` or ``lap`` to ``step``."""
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._mark
        self._mark = now

    def count(self, name: str, how_many: int = 1) -> None:
        """Add ``how_many`` to the count ``name``."""
        self.counts[name] = self.counts.get(name, 0) + how_many
