"""The health signal each heartbeat carries: worker liveness plus the service's own probe.

A machine is ``Healthy`` when every expected worker is alive and the probe (an HTTP
GET or a command, if one is configured) passes; otherwise ``Unhealthy``, with one
reason per failed check. Probing never raises: whatever goes wrong is a failed
probe with a detail saying why, so a broken service can never stop a heartbeat.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from pyhotpatch.errors import AgentError

#: the longest a probe may take, in seconds
MAX_TIMEOUT = 300.0
_DETAIL = 200  # characters of a command's output kept in a probe's detail


@dataclass(frozen=True)
class ProbeSpec:
    """How to ask the service whether it is well: an HTTP(S) URL, a command, or both.

    A URL is healthy when a GET answers 2xx within ``timeout`` seconds; a command
    when it exits 0 within ``timeout`` seconds. ``AgentError`` for a spec that names
    neither, a URL that is not http(s), an empty command or a bad timeout.
    """

    url: str | None = None
    command: tuple[str, ...] | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.url is None and self.command is None:
            raise AgentError("a health probe needs a url or a command")
        if self.url is not None:
            if not isinstance(self.url, str):
                raise AgentError("the health probe's url must be a string")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise AgentError(f"health probe url {self.url!r} is not an http(s) URL")
        if self.command is not None:
            if isinstance(self.command, str) or not isinstance(self.command, (list, tuple)):
                raise AgentError("the health probe's command must be a list of arguments")
            command = tuple(self.command)
            if not command or not all(isinstance(arg, str) and arg for arg in command):
                raise AgentError("the health probe's command must be non-empty strings")
            if any("\0" in arg for arg in command):
                raise AgentError("the health probe's command contains a NUL character")
            object.__setattr__(self, "command", command)
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)):
            raise AgentError("the health probe's timeout must be a number of seconds")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise AgentError(
                f"the health probe's timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds"
            )

    def to_json(self) -> dict[str, Any]:
        """The configuration file form."""
        return {
            "url": self.url,
            "command": list(self.command) if self.command is not None else None,
            "timeout": self.timeout,
        }

    @classmethod
    def from_json(cls, data: Any) -> ProbeSpec:
        """Read the configuration file form; ``AgentError`` says what is wrong."""
        if not isinstance(data, dict):
            raise AgentError("the health probe must be a JSON object")
        unknown = set(data) - {"url", "command", "timeout"}
        if unknown:
            raise AgentError(f"the health probe has unknown fields: {', '.join(sorted(unknown))}")
        command = data.get("command")
        if command is not None and not isinstance(command, list):
            raise AgentError("the health probe's command must be a list of arguments")
        return cls(
            url=data.get("url"),
            command=tuple(command) if command is not None else None,
            timeout=data.get("timeout", 5.0),
        )


def probe(spec: ProbeSpec | None) -> dict[str, Any]:
    """Run the probe: ``{"ok", "detail", "seconds"}``; never raises."""
    started = time.monotonic()
    if spec is None:
        return {"ok": True, "detail": "no probe configured", "seconds": 0.0}
    results = []
    if spec.url is not None:
        results.append(_probe_url(spec.url, spec.timeout))
    if spec.command is not None:
        results.append(_probe_command(spec.command, spec.timeout))
    return {
        "ok": all(ok for ok, _ in results),
        "detail": "; ".join(detail for _, detail in results),
        "seconds": round(time.monotonic() - started, 3),
    }


def _probe_url(url: str, timeout: float) -> tuple[bool, str]:
    try:
        # the service is probed directly, never through a proxy the environment names
        response = httpx.get(url, timeout=timeout, follow_redirects=False, trust_env=False)
    except httpx.TimeoutException:
        return False, f"GET {url}: no answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        return False, f"GET {url}: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a probe reports, it never raises
        return False, f"GET {url}: {type(exc).__name__}: {exc}"
    ok = 200 <= response.status_code < 300
    return ok, f"GET {url}: HTTP {response.status_code}"


def _probe_command(command: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"{command[0]}: still running after {timeout:g} s"
    except OSError as exc:
        return False, f"{command[0]}: cannot run: {exc}"
    if done.returncode == 0:
        return True, f"{command[0]}: exit 0"
    output = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
    last = output[-1][:_DETAIL] if output else ""
    return False, f"{command[0]}: exit {done.returncode}" + (f": {last}" if last else "")


def health(liveness: dict[str, Any], probe_result: dict[str, Any] | None) -> dict[str, Any]:
    """The heartbeat's health document from the supervisor's liveness and a probe result.

    ``Unhealthy`` when fewer workers are alive than expected or the probe failed;
    ``reasons`` says which.
    """
    reasons = []
    expected, alive = int(liveness.get("expected", 0)), int(liveness.get("alive", 0))
    if alive < expected:
        reasons.append(f"{alive} of {expected} workers alive")
    if probe_result is not None and not probe_result.get("ok"):
        reasons.append(f"probe failed: {probe_result.get('detail', 'no detail')}")
    return {
        "status": "Unhealthy" if reasons else "Healthy",
        "workers": liveness,
        "probe": probe_result,
        "reasons": reasons,
    }
