"""A service that something else runs (a systemd unit, say), patched by the agent all the same.

The service's own manager starts it with the runtime enabled and pointed at the agent's
state directory (``PYHOTPATCH=1``, ``PYHOTPATCH_RUN_DIR=<state>/run``,
``PYHOTPATCH_PACKAGE=<state>/active.hotpatch``) and runs it on the current baseline's
interpreter, ``<state>/envs/current/bin/python``. The agent then reaches every process
through its control socket as usual. What it cannot do is restart the processes one by
one: a baseline takes effect through ``restart_command`` (``systemctl restart app``),
with whatever interruption that manager's restart brings, and liveness is counting the
processes that serve a control socket against the number expected.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyhotpatch.errors import AgentError
from pyhotpatch.runtime import client

log = logging.getLogger("pyhotpatch.agent.external")
EXTERNAL = "external"


@dataclass(frozen=True)
class ExternalSpec:
    """A service run by another manager: how many processes it has and how to restart it."""

    processes: int = 1
    restart_command: tuple[str, ...] | None = None
    restart_timeout: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.processes, bool) or not isinstance(self.processes, int):
            raise AgentError("the service's process count must be a whole number")
        if not 1 <= self.processes <= 1024:
            raise AgentError("the service's process count must be between 1 and 1024")
        if self.restart_command is not None:
            command = tuple(self.restart_command)
            if not command or not all(isinstance(a, str) and a for a in command):
                raise AgentError("the restart command must be one or more non-empty strings")
            object.__setattr__(self, "restart_command", command)

    @property
    def workers(self) -> int:
        """The processes expected (named as the agent's own workers are, for time estimates)."""
        return self.processes

    def to_json(self) -> dict[str, Any]:
        """The configuration file form."""
        return {
            "manager": EXTERNAL,
            "processes": self.processes,
            "restartCommand": list(self.restart_command) if self.restart_command else None,
            "restartTimeout": self.restart_timeout,
        }

    @classmethod
    def from_json(cls, data: Any) -> ExternalSpec:
        """Read the configuration file form; ``AgentError`` says what is wrong."""
        if not isinstance(data, dict) or data.get("manager") != EXTERNAL:
            raise AgentError("an external service's configuration must say manager: external")
        command = data.get("restartCommand")
        if command is not None and not isinstance(command, list):
            raise AgentError("the restart command must be a list of arguments")
        return cls(
            processes=data.get("processes", 1),
            restart_command=tuple(command) if command else None,
            restart_timeout=float(data.get("restartTimeout", 300.0)),
        )


class ExternalService:
    """The agent's view of a service it does not run: the supervisor's interface, within limits."""

    def __init__(self, spec: ExternalSpec, *, run_dir: Path) -> None:
        self.spec = spec
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def start(self, python: Path) -> None:
        """Nothing to start: the service's manager runs it."""
        log.info("the service is run by its own manager; its interpreter is %s", python)

    def check(self) -> list[dict[str, Any]]:
        """Nothing to restart: the service's manager keeps it running."""
        return []

    def pids(self) -> list[int]:
        """The service's processes: those serving a control socket in the run directory."""
        return client.processes(self.run_dir)

    def liveness(self) -> dict[str, Any]:
        """How many processes serve against how many are expected."""
        pids = self.pids()
        return {
            "expected": self.spec.processes,
            "alive": len(pids),
            "restarts": 0,
            "pids": pids,
        }

    def rolling_restart(
        self, python: Path, progress: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Restart the service through its manager and wait for a full set of new processes."""
        if self.spec.restart_command is None:
            raise AgentError(
                "the service is run by its own manager and no restart command is configured: "
                "restart it to take up the installed release"
            )
        old = set(self.pids())
        done = subprocess.run(
            list(self.spec.restart_command),
            capture_output=True,
            text=True,
            timeout=self.spec.restart_timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AgentError(
                f"the restart command failed with exit code {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        deadline = time.monotonic() + self.spec.restart_timeout
        while True:
            new = [pid for pid in self.pids() if pid not in old]
            if len(new) >= self.spec.processes and not old & set(self.pids()):
                break
            if time.monotonic() > deadline:
                raise AgentError(
                    f"after the restart command, {len(new)} of {self.spec.processes} new "
                    "processes serve a control socket"
                )
            time.sleep(0.05)
        event = {"old": sorted(old), "new": sorted(new), "python": str(python)}
        if progress is not None:
            progress(event)
        return [event]

    def stop(self) -> None:
        """Leave the service to its manager."""

    def detach(self) -> None:
        """Leave the service to its manager."""
