"""The node agent's pure parts: what it offers, its durable state, backoff, redaction."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pyhotpatch.agent._config import AgentConfig
from pyhotpatch.agent._daemon import Backoff
from pyhotpatch.agent._diagnose import REDACTED, redact
from pyhotpatch.agent._machine import resumed_result
from pyhotpatch.agent._releases import applicable, offers
from pyhotpatch.agent._state import StateStore
from pyhotpatch.agent._supervisor import ServiceSpec
from pyhotpatch.catalog.tufclient import TargetInfo
from pyhotpatch.errors import AgentError

NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


def target(
    kb: str, kind: str, baseline: str, sequence: int, published: str, role: str
) -> TargetInfo:
    return TargetInfo(
        path=f"demo/{kb}/{role}",
        length=1,
        sha256="0" * 64,
        custom={
            "kbId": kb,
            "product": "demo",
            "kind": kind,
            "baseline": baseline,
            "sequence": sequence,
            "classifications": ["Security"],
            "rebootBehavior": "NeverReboots" if kind == "hotpatch" else "AlwaysRequiresReboot",
            "title": f"{kb} title",
            "publishedDate": published,
            "availableDate": published,
            "role": role,
        },
    )


CATALOG = offers(
    {
        t.path: t
        for t in (
            target("KB1", "planned-baseline", "KB1", 0, "2026-07-14T00:00:00Z", "lock"),
            target("KB2", "hotpatch", "KB1", 1, "2026-08-11T00:00:00Z", "hotpatch"),
            target("KB3", "hotpatch", "KB1", 2, "2026-09-08T00:00:00Z", "hotpatch"),
            target("KB4", "planned-baseline", "KB4", 0, "2026-10-13T00:00:00Z", "lock"),
            target("KB5", "hotpatch", "KB4", 1, "2026-12-08T00:00:00Z", "hotpatch"),
        )
    }
)


def kbs(**state: str | None) -> list[str]:
    return [
        o.kb
        for o in applicable(
            CATALOG,
            product="demo",
            baseline=state.get("baseline"),
            active_hotpatch=state.get("active"),
            now=NOW,
        )
    ]


def test_only_the_newest_cumulative_hotpatch_and_the_newest_baseline_are_offered() -> None:
    assert kbs(baseline="KB1") == ["KB3", "KB4"]
    assert kbs(baseline="KB1", active="KB2") == ["KB3", "KB4"]
    assert kbs(baseline="KB1", active="KB3") == ["KB4"]
    # KB5 is not available until December
    assert kbs(baseline="KB4") == []
    assert kbs(baseline=None) == ["KB4"]


def test_offers_carry_their_signed_fields() -> None:
    kb3 = next(o for o in CATALOG if o.kb == "KB3")
    patch = kb3.patch()
    assert patch["publishedDate"] == "2026-09-08T00:00:00Z"
    assert patch["rebootBehavior"] == "NeverReboots"
    assert kb3.patch(restart_based=True)["rebootBehavior"] == "AlwaysRequiresReboot"


def test_state_is_durable_and_the_outbox_keeps_one_result_per_item(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.update(baseline="KB1", journal={"op": "hotpatch", "kb": "KB2"})
    store.post({"item": 7, "body": {"status": "Failed"}})
    store.post({"item": 7, "body": {"status": "Succeeded"}})
    again = StateStore(tmp_path / "state.json")
    assert again.state.baseline == "KB1" and again.state.journal == {"op": "hotpatch", "kb": "KB2"}
    assert [e["body"]["status"] for e in again.state.outbox] == ["Succeeded"]
    again.delivered(7)
    assert StateStore(tmp_path / "state.json").state.outbox == ()
    assert not list(tmp_path.glob(".state.json.*"))  # no temporary file left behind
    # a newer agent's fields survive an older one's rewrite
    data = json.loads((tmp_path / "state.json").read_text())
    data["future"] = 1
    (tmp_path / "state.json").write_text(json.dumps(data))
    StateStore(tmp_path / "state.json").update(baseline="KB4")
    assert json.loads((tmp_path / "state.json").read_text())["extra"]["future"] == 1


def test_backoff_grows_with_full_jitter_up_to_its_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    waits = [backoff.next() for _ in range(50)]
    assert all(0.1 <= w <= 8.0 for w in waits)
    assert max(waits[10:]) > 4.0  # it does grow
    backoff.reset()
    assert backoff.next() <= 2.0


def test_diagnostics_redact_secret_fields_and_tokens() -> None:
    found = redact(
        {
            "server": "https://cp",
            "token": "abc",
            "nested": [{"adminPassword": "x", "note": "Bearer hp_abcdefghijkl used"}],
        }
    )
    assert found["token"] == REDACTED and found["server"] == "https://cp"
    assert found["nested"][0]["adminPassword"] == REDACTED
    assert "hp_abcdefghijkl" not in found["nested"][0]["note"]


def test_a_resumed_operation_reports_what_recovery_did() -> None:
    done = resumed_result(
        {
            "op": "hotpatch",
            "kb": "KB2",
            "finished": True,
            "journal": {"patch": {"name": "n", "kbId": "KB2"}},
        }
    )
    assert done["output"]["patches"][0]["installationState"] == "Installed"
    undone = resumed_result({"op": "baseline", "kb": "KB4", "finished": False, "journal": {}})
    assert undone["output"]["patches"][0]["installationState"] == "Failed"
    assert undone["output"]["error"]["code"] == "Interrupted"


def test_configuration_is_validated() -> None:
    spec = ServiceSpec(command=("{python}", "-m", "demo"))
    good = dict(
        server="https://cp",
        machine="/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/m",
        image="p:o:s",
        service=spec,
    )
    assert AgentConfig.from_json(AgentConfig(**good).to_json()) == AgentConfig(**good)  # type: ignore[arg-type]
    for bad in ({"server": "ftp://x"}, {"machine": "m"}, {"image": "p:o"}):
        with pytest.raises(AgentError):
            AgentConfig(**{**good, **bad})  # type: ignore[arg-type]
    with pytest.raises(AgentError, match="lacks 'server'"):
        AgentConfig.from_json({})


def test_an_external_service_s_configuration_round_trips() -> None:
    from pyhotpatch.agent._external import ExternalSpec

    spec = ExternalSpec(processes=4, restart_command=("systemctl", "restart", "app"))
    config = AgentConfig(
        server="https://cp",
        machine="/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/m",
        image="p:o:s",
        service=spec,
    )
    again = AgentConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again.service == spec and again.service.workers == 4
    with pytest.raises(AgentError):
        ExternalSpec(processes=0)
    with pytest.raises(AgentError):
        ExternalSpec(restart_command=("",))
