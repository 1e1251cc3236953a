"""What the machine runs, as the agent last made it so: durable across crashes.

Every change is written before it is acted on and the write is atomic
(``_files.write_json``), so after a ``SIGKILL`` the agent reads either the state
before a step or after it. An operation in progress leaves a **journal** naming
its steps; on start-up the agent finishes or undoes it (``_machine.Machine.resume``).
Results that could not be delivered wait in the **outbox** until the server is back.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pyhotpatch.agent._files import read_json, write_json
from pyhotpatch.errors import AgentError


@dataclass(frozen=True)
class AgentState:
    """The machine's installed releases and the agent's unfinished business.

    ``baseline`` is the KB id of the environment the service runs; ``pending_baseline``
    one that is installed and waits for the service's next restart (``rebootSetting``
    ``Never``). ``active_hotpatch`` is applied in every process and recorded for new
    ones; ``previous_hotpatch`` is kept so that a revert returns to it rather than to a
    bare baseline with its earlier fixes undone.
    """

    product: str | None = None
    image: str | None = None
    baseline: str | None = None
    pending_baseline: str | None = None
    active_hotpatch: str | None = None
    previous_hotpatch: str | None = None
    journal: dict[str, Any] | None = None
    outbox: tuple[dict[str, Any], ...] = ()
    last_assessment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The file form."""
        data = asdict(self)
        data["outbox"] = list(self.outbox)
        return data

    @classmethod
    def from_json(cls, data: Any) -> AgentState:
        """Read the file form; unknown keys are kept under ``extra`` for newer agents."""
        if not isinstance(data, dict):
            raise AgentError("the agent state must be a JSON object")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["outbox"] = tuple(values.get("outbox") or ())
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        extra.update(data.get("extra") or {})
        return cls(**values, extra=extra)


class StateStore:
    """The state file and a lock for the threads that update it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._state = AgentState.from_json(read_json(path, {}))

    @property
    def state(self) -> AgentState:
        """The current state."""
        return self._state

    def update(self, **changes: Any) -> AgentState:
        """Change some fields and make the change durable before returning it."""
        with self._lock:
            new = replace(self._state, **changes)
            write_json(self.path, new.to_json())
            self._state = new
            return new

    def post(self, entry: dict[str, Any]) -> None:
        """Keep a result for delivery (replacing an older one for the same work item)."""
        with self._lock:
            kept = tuple(e for e in self._state.outbox if e.get("item") != entry.get("item"))
            self.update(outbox=(*kept, entry))

    def delivered(self, item: int) -> None:
        """Forget a result the server has acknowledged."""
        with self._lock:
            self.update(outbox=tuple(e for e in self._state.outbox if e.get("item") != item))
