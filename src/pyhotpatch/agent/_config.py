"""The agent's configuration and credential, kept in its state directory.

``hotpatch agent connect`` writes both; ``hotpatch agent run`` reads them. The
configuration holds nothing secret (it goes into diagnostics archives as it is);
the credential is a separate 0600 file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyhotpatch.agent._external import EXTERNAL, ExternalSpec
from pyhotpatch.agent._files import read_json, write_atomic, write_json
from pyhotpatch.agent._health import ProbeSpec
from pyhotpatch.agent._supervisor import ServiceSpec
from pyhotpatch.errors import AgentError

#: where ``hotpatch agent`` keeps its state unless told otherwise
DEFAULT_STATE_DIR = Path("/var/lib/pyhotpatch-agent")
CONFIG_FILE, CREDENTIAL_FILE, STATE_FILE = "agent.json", "credential", "state.json"

_MACHINE_RE = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.Compute/virtualMachines/[^/]+$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AgentConfig:
    """Where the control plane is, which machine this is, and the service the agent runs.

    ``heartbeat_seconds`` caps the server's suggested heartbeat interval and
    ``poll_seconds`` is how long each work poll may wait; both are short in tests
    and demos. ``image`` is the machine's stack as ``publisher:offer:sku``; ``python``
    the interpreter its environments are built from (the agent's own by default).
    """

    server: str
    machine: str
    image: str
    service: ServiceSpec | ExternalSpec
    probe: ProbeSpec | None = None
    ca_bundle: str | None = None
    heartbeat_seconds: float = 60.0
    poll_seconds: float = 25.0
    python: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise AgentError(f"server {self.server!r} is not an http(s) URL")
        if not _MACHINE_RE.match(self.machine):
            raise AgentError(
                f"machine {self.machine!r} is not a virtualMachines resource id "
                "(/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/N)"
            )
        if len(self.image.split(":")) != 3 or not all(self.image.split(":")):
            raise AgentError(f"image {self.image!r} is not publisher:offer:sku")
        if not 1 <= self.heartbeat_seconds <= 600:
            raise AgentError("heartbeat_seconds must be between 1 and 600")
        if not 0 <= self.poll_seconds <= 30:
            raise AgentError("poll_seconds must be between 0 and 30")

    @property
    def image_reference(self) -> dict[str, str]:
        """The image as an ARM ``imageReference``."""
        return image_reference(self.image)

    def to_json(self) -> dict[str, Any]:
        """The file form."""
        return {
            "server": self.server,
            "machine": self.machine,
            "image": self.image,
            "service": self.service.to_json(),
            "probe": self.probe.to_json() if self.probe else None,
            "caBundle": self.ca_bundle,
            "heartbeatSeconds": self.heartbeat_seconds,
            "pollSeconds": self.poll_seconds,
            "python": self.python,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> AgentConfig:
        """Read the file form; ``AgentError`` names what is wrong."""
        if not isinstance(data, dict):
            raise AgentError("the agent configuration must be a JSON object")
        try:
            probe = data.get("probe")
            return cls(
                server=str(data["server"]),
                machine=str(data["machine"]),
                image=str(data["image"]),
                service=service_spec(data["service"]),
                probe=ProbeSpec.from_json(probe) if probe else None,
                ca_bundle=data.get("caBundle"),
                heartbeat_seconds=float(data.get("heartbeatSeconds", 60.0)),
                poll_seconds=float(data.get("pollSeconds", 25.0)),
                python=data.get("python"),
                extra=dict(data.get("extra") or {}),
            )
        except KeyError as exc:
            raise AgentError(f"the agent configuration lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise AgentError(f"the agent configuration is malformed: {exc}") from None


def image_reference(image: str) -> dict[str, str]:
    """``publisher:offer:sku`` as an ARM ``imageReference``."""
    publisher, offer, sku = image.split(":")
    return {"publisher": publisher, "offer": offer, "sku": sku}


def service_spec(data: Any) -> ServiceSpec | ExternalSpec:
    """The service's configuration: one the agent runs, or one another manager runs."""
    if isinstance(data, dict) and data.get("manager") == EXTERNAL:
        return ExternalSpec.from_json(data)
    return ServiceSpec.from_json(data)


def prepare_state_dir(state_dir: Path) -> Path:
    """Create the state directory, private to this user."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    return state_dir


def load_config(state_dir: Path) -> AgentConfig:
    """The configuration ``hotpatch agent connect`` wrote."""
    data = read_json(state_dir / CONFIG_FILE)
    if data is None:
        raise AgentError(
            f"{state_dir} holds no agent configuration: run 'hotpatch agent connect' first"
        )
    return AgentConfig.from_json(data)


def save_config(state_dir: Path, config: AgentConfig) -> None:
    """Write the configuration atomically."""
    write_json(prepare_state_dir(state_dir) / CONFIG_FILE, config.to_json())


def load_credential(state_dir: Path) -> str:
    """The machine's Agent token."""
    try:
        token = (state_dir / CREDENTIAL_FILE).read_text().strip()
    except FileNotFoundError:
        raise AgentError(
            f"{state_dir} holds no agent credential: run 'hotpatch agent connect' first"
        ) from None
    if not token:
        raise AgentError(f"the agent credential in {state_dir} is empty")
    return token


def save_credential(state_dir: Path, token: str) -> None:
    """Keep the Agent token, readable by this user only."""
    write_atomic(prepare_state_dir(state_dir) / CREDENTIAL_FILE, token.encode() + b"\n", mode=0o600)
