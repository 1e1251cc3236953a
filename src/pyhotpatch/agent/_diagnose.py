"""``hotpatch agent diagnose``: one archive with what a support case needs, secrets removed.

It holds the agent's configuration and state, the supervisor's record, the recent
agent and service logs, and the live patch status of every process of the service.
The credential file is never read; values under keys that name secrets (token,
password, secret, key, authorization) are replaced wherever they appear, and so is
anything that looks like one of the project's bearer tokens in the logs.
"""

from __future__ import annotations

import io
import json
import platform
import re
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from pyhotpatch import __version__
from pyhotpatch.agent._files import read_json
from pyhotpatch.errors import HotpatchError
from pyhotpatch.runtime import client

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|password|secret|authorization|credential|key$", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(hp_[A-Za-z0-9_-]{8,}|Bearer\s+\S+)")
#: how much of the end of each log goes into the archive
LOG_TAIL = 256 * 1024


def redact(value: Any) -> Any:
    """``value`` with every secret-looking field and token replaced."""
    if isinstance(value, dict):
        return {
            k: REDACTED if _SECRET_KEY.search(str(k)) and v else redact(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_TEXT.sub(REDACTED, value)
    return value


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def processes(run_dir: Path) -> list[dict[str, Any]]:
    """The engine status of every process of the service (or why it could not be read)."""
    found = []
    for pid in client.processes(run_dir):
        try:
            found.append(client.status(pid, run_dir, timeout=5.0))
        except HotpatchError as exc:
            found.append({"pid": pid, "error": str(exc)})
    return found


def diagnose(state_dir: Path, output: Path) -> list[str]:
    """Write the archive to ``output``; the names of its members."""
    members: dict[str, str] = {
        "summary.json": json.dumps(
            {
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "agentVersion": __version__,
                "python": sys.version,
                "platform": platform.platform(),
                "stateDir": str(state_dir),
            },
            indent=2,
        ),
        "agent.json": json.dumps(redact(read_json(state_dir / "agent.json", {})), indent=2),
        "state.json": json.dumps(redact(read_json(state_dir / "state.json", {})), indent=2),
        "service.json": json.dumps(redact(read_json(state_dir / "service.json", {})), indent=2),
        "processes.json": json.dumps(redact(processes(state_dir / "run")), indent=2),
    }
    for log in sorted((state_dir / "logs").glob("*.log*")):
        members[f"logs/{log.name}"] = _SECRET_TEXT.sub(REDACTED, _tail(log))
    envs = state_dir / "envs"
    markers = {p.parent.name: read_json(p, {}) for p in envs.glob("*/pyhotpatch-env.json")}
    members["environments.json"] = json.dumps(redact(markers), indent=2)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(output, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pyhotpatch-diagnostics/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            archive.addfile(info, io.BytesIO(data))
    output.chmod(0o600)
    return sorted(members)
