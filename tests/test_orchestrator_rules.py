"""The transition rules: each state change is allowed or refused with its reasons."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleet_fixtures import NOW, machine
from pyhotpatch.server.orchestrator import _rules
from pyhotpatch.server.orchestrator._orchestrator import next_chance
from pyhotpatch.server.orchestrator._rules import (
    ACTIVE,
    BAKING,
    BATCH,
    COMPLETED,
    DEVTEST,
    FAILED,
    HALTED,
    INSTALL,
    INSTALLING,
    PASSED,
    PAUSED,
    PRODUCTION,
    REVERTING,
    ROLLOUT,
    SUCCEEDED,
    Facts,
    Transition,
    TransitionRefused,
    allowed,
    refusals,
    require,
)
from pyhotpatch.server.orchestrator._settings import Settings

MACHINE = machine(zone="1")
_MINUTE = timedelta(minutes=1)
GOOD = Facts(
    now=NOW,
    machine=MACHINE,
    rollout_state=ACTIVE,
    window_left=timedelta(hours=3),
    min_window=timedelta(minutes=30),
    ring=PRODUCTION,
)


def start(facts: Facts, from_state: str | None = None) -> list[str]:
    return refusals(Transition(INSTALL, from_state, INSTALLING, facts))


def test_every_rule_has_a_docstring_and_a_unique_name() -> None:
    names = [r.name for r in _rules.POLICY]
    assert len(names) == len(set(names))
    assert all(r.check.__doc__ for r in _rules.POLICY)


def test_a_good_install_may_start() -> None:
    assert start(GOOD) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rollout_state": PAUSED}, "the rollout is paused"),
        ({"machine": MACHINE._replace(last_seen=NOW - timedelta(hours=1))}, "not running"),
        ({"window_left": None}, "window is closed"),
        ({"window_left": timedelta(minutes=5)}, "too little"),
        ({"phase_open": False}, "phase has not started"),
        ({"ring": DEVTEST}, "DevTest ring has not finished"),
        ({"soak_until": NOW + timedelta(hours=2)}, "still soaking"),
        ({"busy": True}, "another patch operation"),
    ],
)
def test_an_install_is_refused_with_its_reason(change: dict, reason: str) -> None:
    reasons = start(GOOD._replace(**change))
    assert any(reason in r for r in reasons), reasons


def test_devtest_machines_go_first() -> None:
    devtest = GOOD._replace(machine=MACHINE._replace(environment=DEVTEST), ring=DEVTEST)
    assert start(devtest) == []


def test_a_failed_install_waits_for_the_next_window() -> None:
    waiting = GOOD._replace(retry_after=NOW + timedelta(hours=20))
    assert any("next window" in r for r in start(waiting, FAILED))
    assert start(waiting._replace(retry_after=NOW), FAILED) == []


def test_a_refused_machine_is_looked_at_again_when_the_rules_may_admit_it() -> None:
    opening, soak = NOW + timedelta(hours=3), NOW + timedelta(hours=5)
    production, devtest = MACHINE, MACHINE._replace(environment=DEVTEST)
    assert next_chance(devtest, opening, None, soak) == opening
    assert next_chance(production, opening, None, soak) == soak  # still soaking at its opening
    assert next_chance(production, opening, None, NOW - timedelta(hours=1)) == opening
    retry = opening + timedelta(hours=1)
    assert next_chance(devtest, opening, retry, None) == retry
    # the soak rule admits Production from the soak's end on, as the chance assumes
    assert any("still soaking" in r for r in start(GOOD._replace(soak_until=NOW + _MINUTE)))
    assert start(GOOD._replace(soak_until=NOW)) == []


def test_rollouts_open_for_critical_and_security_only() -> None:
    def opens(**kw: object) -> bool:
        return allowed(Transition(ROLLOUT, None, ACTIVE, Facts(now=NOW, **kw)))  # type: ignore[arg-type]

    assert opens(classifications=("Security",))
    assert opens(classifications=("Critical", "Updates"))
    assert not opens(classifications=("Updates",))
    assert not opens(classifications=("Security",), release_halted=True)
    assert not opens(classifications=("Security",), superseded_by="KB2")


def test_final_states_are_final() -> None:
    for state in _rules.ROLLOUT_FINAL:
        with pytest.raises(TransitionRefused):
            require(Transition(ROLLOUT, state, ACTIVE, Facts(now=NOW, rollout_state=state)))


def test_halting_needs_a_reason_and_completion_needs_every_target() -> None:
    assert not allowed(Transition(ROLLOUT, ACTIVE, HALTED, Facts(now=NOW)))
    assert allowed(Transition(ROLLOUT, ACTIVE, HALTED, Facts(now=NOW, reason="sick")))
    assert not allowed(Transition(ROLLOUT, ACTIVE, COMPLETED, Facts(now=NOW, remaining=3)))
    assert allowed(Transition(ROLLOUT, ACTIVE, COMPLETED, Facts(now=NOW)))


def test_pause_and_resume() -> None:
    assert allowed(Transition(ROLLOUT, ACTIVE, PAUSED, Facts(now=NOW)))
    assert not allowed(Transition(ROLLOUT, PAUSED, PAUSED, Facts(now=NOW)))
    assert allowed(Transition(ROLLOUT, PAUSED, ACTIVE, Facts(now=NOW)))
    assert not allowed(Transition(ROLLOUT, ACTIVE, ACTIVE, Facts(now=NOW)))


def test_the_health_gate() -> None:
    baked = Facts(now=NOW, bake_until=NOW, size=10, limit=2, unhealthy=2)
    assert allowed(Transition(BATCH, BAKING, PASSED, baked))
    assert not allowed(Transition(BATCH, BAKING, FAILED, baked))
    sick = baked._replace(unhealthy=3)
    assert not allowed(Transition(BATCH, BAKING, PASSED, sick))
    assert allowed(Transition(BATCH, BAKING, FAILED, sick))
    early = sick._replace(bake_until=NOW + timedelta(minutes=5))
    assert not allowed(Transition(BATCH, BAKING, FAILED, early))


def test_the_failure_gate() -> None:
    gate = Facts(now=NOW, bake_until=NOW, size=2, failed_installs=3, failed_percent=50)
    for failed, finished, passes in (
        (2, 2, True),  # every install failed, but fewer than three
        (3, 3, False),
        (3, 6, True),  # exactly half failed: not more than half
        (4, 7, False),
        (3, 100, True),
    ):
        facts = gate._replace(failed=failed, finished=finished)
        assert allowed(Transition(BATCH, BAKING, PASSED, facts)) is passes, (failed, finished)
        assert allowed(Transition(BATCH, BAKING, FAILED, facts)) is not passes
    (why,) = refusals(Transition(BATCH, BAKING, PASSED, gate._replace(failed=3, finished=3)))
    assert why == "3 of the 3 installs ended so far failed (more than 50 % tolerated once 3 have)"
    off = gate._replace(failed=50, finished=50, failed_percent=100)
    assert allowed(Transition(BATCH, BAKING, PASSED, off))


def test_only_hotpatches_of_halted_rollouts_revert() -> None:
    assert allowed(
        Transition(
            INSTALL, SUCCEEDED, REVERTING, Facts(now=NOW, kind="hotpatch", rollout_state=HALTED)
        )
    )
    assert not allowed(
        Transition(
            INSTALL, SUCCEEDED, REVERTING, Facts(now=NOW, kind="baseline", rollout_state=HALTED)
        )
    )
    assert not allowed(
        Transition(
            INSTALL, SUCCEEDED, REVERTING, Facts(now=NOW, kind="hotpatch", rollout_state=ACTIVE)
        )
    )


def test_settings_round_trip_and_refuse_nonsense() -> None:
    settings = Settings.from_json({"window": "01:00-05:00", "soakHours": 12})
    assert settings.window == "01:00-05:00" and settings.soak == timedelta(hours=12)
    assert Settings.from_json(settings.to_json()) == settings
    for bad in (
        {"window": "25:00-01:00"},
        {"soakHours": "x"},
        {"unhealthyPercent": 120},
        {"nope": 1},
        {"pairs": "eastus:eastus"},
        {"smallSet": 1.5},
        {"failedPercent": 101},
        {"failedInstalls": 0},
    ):
        with pytest.raises(ValueError):
            Settings.from_json(bad)


def test_stored_settings_are_parsed_once_and_keep_their_values_exactly() -> None:
    stored = {"bakeMinutes": 10, "pairs": "eastus:westus"}
    first = Settings.from_json(stored)
    assert Settings.from_json(dict(stored)) is first
    assert first.partners == {"eastus": frozenset({"westus"}), "westus": frozenset({"eastus"})}
    assert isinstance(Settings.from_json({"bakeMinutes": 10.0}).to_json()["bakeMinutes"], float)
    assert isinstance(Settings.from_json({"bakeMinutes": 10}).to_json()["bakeMinutes"], int)
    for _ in range(2):  # a refusal is not remembered as a value
        with pytest.raises(ValueError, match="between"):
            Settings.from_json({"bakeMinutes": -1})
    with pytest.raises(ValueError, match="must be a string"):
        Settings.from_json({"pairs": ["eastus:westus"]})
