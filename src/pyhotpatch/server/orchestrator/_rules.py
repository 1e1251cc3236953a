"""Every state change of a rollout, a batch and an install, as small named rules.

The orchestrator never sets a state directly: it proposes a ``Transition`` (which thing,
from which state, to which state, with the ``Facts`` it decided on) and ``refusals`` runs
the rules registered for that change. A rule is a function that yields the sentences that
say why the change may not happen, and nothing when it may; its docstring says why the
rule exists. A change happens only when every rule is silent, so each refusal can be
shown to an operator as it is.

Batches are composed by a second kind of rule, the admission rules: each looks at the
batch drafted so far and one more machine and says why that machine may not join it.
They are where availability-first lives (one zone, one update domain, a share of a set
and of a subscription at a time).

States:

- rollout: ``active`` → ``paused`` ⇄ ``active``; → ``halted`` (the health gate),
  ``canceled`` (an operator), ``superseded`` (a newer release of its line took over),
  which are final; → ``completed`` (every target has the release), which goes back to
  ``active`` when machines that lack the release appear (enrolled later, or back on).
- batch: ``installing`` → ``baking`` → ``passed`` | ``failed``; ``canceled``.
- install: (new) → ``installing`` → ``succeeded`` | ``failed``; ``failed`` →
  ``installing`` (a retry in a later window); ``succeeded`` → ``reverting`` →
  ``reverted`` (after a halt); ``installing`` → ``canceled``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from pyhotpatch.errors import HotpatchError
from pyhotpatch.server.orchestrator._fleet import Machine

ROLLOUT, BATCH, INSTALL = "rollout", "batch", "install"

# rollout states
ACTIVE, PAUSED, HALTED, CANCELED, COMPLETED, SUPERSEDED = (
    "active",
    "paused",
    "halted",
    "canceled",
    "completed",
    "superseded",
)
ROLLOUT_FINAL = (HALTED, CANCELED, SUPERSEDED)
# batch states
INSTALLING, BAKING, PASSED, FAILED = "installing", "baking", "passed", "failed"
BATCH_OPEN = (INSTALLING, BAKING)
# install states (INSTALLING, FAILED and CANCELED are shared with batches)
SUCCEEDED, REVERTING, REVERTED = "succeeded", "reverting", "reverted"
INSTALL_STATES = (INSTALLING, SUCCEEDED, FAILED, REVERTING, REVERTED, CANCELED)

DEVTEST, PRODUCTION = "DevTest", "Production"
#: the classifications that install automatically
AUTOMATIC = ("Critical", "Security")


class TransitionRefused(HotpatchError):
    """A proposed state change broke a rule; ``reasons`` says which, one sentence each."""

    def __init__(self, transition: Transition, reasons: list[str]) -> None:
        self.transition = transition
        self.reasons = reasons
        super().__init__(
            f"{transition.entity} {transition.from_state or '(new)'} → "
            f"{transition.to_state} refused: " + "; ".join(reasons)
        )


class Facts(NamedTuple):
    """What the orchestrator knew when it proposed a change; each rule reads what it needs.

    A named tuple rather than a frozen dataclass: a region look builds one per machine
    that lacks the release, and a tuple is built in a sixth of the time.

    Times are aware UTC. ``window_left`` is how long the machine's off-peak window stays
    open (None: closed). ``ring``, ``soak_until`` and ``phase_open`` describe the
    machine's region in its rollout. ``remaining`` counts a rollout's targets without the
    release; ``unhealthy`` and ``size`` a judged batch; ``limit`` the health gate's
    threshold. ``failed`` and ``finished`` count the rollout's installs that failed and
    that ended so far; ``failed_installs`` and ``failed_percent`` are the failure gate's.
    """

    now: datetime
    machine: Machine | None = None
    rollout_state: str | None = None
    classifications: tuple[str, ...] = ()
    release_halted: bool = False
    superseded_by: str | None = None
    window_left: timedelta | None = None
    min_window: timedelta = timedelta(0)
    retry_after: datetime | None = None
    ring: str | None = None
    soak_until: datetime | None = None
    phase_open: bool = True
    busy: bool = False
    kind: str | None = None
    remaining: int = 0
    installs_open: int = 0
    bake_until: datetime | None = None
    unhealthy: int = 0
    size: int = 0
    limit: int = 0
    failed: int = 0
    finished: int = 0
    failed_installs: int = 0
    failed_percent: float = 100.0
    reason: str | None = None


@dataclass(frozen=True)
class Transition:
    """A proposed change of ``entity`` from ``from_state`` (None: it is new) to ``to_state``."""

    entity: str
    from_state: str | None
    to_state: str
    facts: Facts


RuleFunction = Callable[[Facts], Iterator[str]]


@dataclass(frozen=True)
class Rule:
    """A rule and the changes it governs."""

    entity: str
    from_states: tuple[str | None, ...]
    to_states: tuple[str, ...]
    check: RuleFunction = field(compare=False)

    @property
    def name(self) -> str:
        """The rule's function name, which says what it enforces."""
        return self.check.__name__

    def applies(self, transition: Transition) -> bool:
        """Whether this rule governs ``transition``."""
        return (
            transition.entity == self.entity
            and transition.from_state in self.from_states
            and transition.to_state in self.to_states
        )


#: every transition rule, in the order they are checked
POLICY: list[Rule] = []


def rule(
    entity: str, from_states: tuple[str | None, ...], to_states: tuple[str, ...]
) -> Callable[[RuleFunction], RuleFunction]:
    """Register a function as a rule for changes of ``entity`` between these states."""

    def register(check: RuleFunction) -> RuleFunction:
        POLICY.append(Rule(entity, from_states, to_states, check))
        return check

    return register


_governing: dict[tuple[str, str | None, str, int], tuple[Rule, ...]] = {}


def governing(transition: Transition) -> tuple[Rule, ...]:
    """The rules that govern ``transition``, in policy order (looked up once per kind)."""
    key = (transition.entity, transition.from_state, transition.to_state, len(POLICY))
    found = _governing.get(key)
    if found is None:
        found = _governing[key] = tuple(r for r in POLICY if r.applies(transition))
    return found


def refusals(transition: Transition) -> list[str]:
    """Why ``transition`` may not happen, from every rule that governs it; empty if it may."""
    reasons: list[str] = []
    for each in governing(transition):
        reasons.extend(each.check(transition.facts))
    return reasons


def allowed(transition: Transition) -> bool:
    """Whether every rule governing ``transition`` is silent (stops at the first refusal)."""
    facts = transition.facts
    for each in governing(transition):
        for _ in each.check(facts):
            return False
    return True


def require(transition: Transition) -> None:
    """Raise ``TransitionRefused`` unless ``transition`` may happen."""
    reasons = refusals(transition)
    if reasons:
        raise TransitionRefused(transition, reasons)


# --- rollouts ------------------------------------------------------------------------------

_ANY_ROLLOUT = (None, ACTIVE, PAUSED, *ROLLOUT_FINAL)


@rule(ROLLOUT, ROLLOUT_FINAL, (ACTIVE, PAUSED, *ROLLOUT_FINAL))
def final_states_are_final(f: Facts) -> Iterator[str]:
    """A halted, cancelled, completed or superseded rollout never moves again."""
    yield f"the rollout is {f.rollout_state} and cannot change any more"


@rule(ROLLOUT, (None,), (ACTIVE,))
def only_critical_and_security_install_automatically(f: Facts) -> Iterator[str]:
    """Automatic patching installs Critical and Security releases only; the rest wait."""
    if not set(f.classifications) & set(AUTOMATIC):
        yield (
            "only Critical and Security releases install automatically; this one is "
            + ", ".join(f.classifications or ("unclassified",))
        )


@rule(ROLLOUT, (None, PAUSED), (ACTIVE,))
def halted_releases_do_not_roll_out(f: Facts) -> Iterator[str]:
    """A release whose rollout halted reaches no more machines automatically."""
    if f.release_halted:
        yield "the release was halted by the health gate"


@rule(ROLLOUT, (None, ACTIVE, PAUSED), (ACTIVE,))
def superseded_releases_do_not_roll_out(f: Facts) -> Iterator[str]:
    """A newer cumulative release of the same line replaces an older one's rollout."""
    if f.superseded_by:
        yield f"the release is superseded by {f.superseded_by}"


@rule(ROLLOUT, (ACTIVE, PAUSED), (HALTED, CANCELED, SUPERSEDED))
def stopping_says_why(f: Facts) -> Iterator[str]:
    """Operators are told why a rollout stopped: halting, cancelling or superseding needs one."""
    if not f.reason:
        yield "a rollout is only stopped with a reason"


@rule(ROLLOUT, (ACTIVE,), (COMPLETED,))
def complete_when_every_target_has_it(f: Facts) -> Iterator[str]:
    """A rollout completes when no target is without the release and nothing is in flight."""
    if f.remaining:
        yield f"{f.remaining} machines still need the release"
    if f.installs_open:
        yield f"{f.installs_open} installs are still running"


@rule(ROLLOUT, (COMPLETED,), (ACTIVE,))
def reopen_for_machines_that_lack_it(f: Facts) -> Iterator[str]:
    """A completed rollout takes up again the machines enrolled or switched on since."""
    if not f.remaining:
        yield "every target has the release"


@rule(ROLLOUT, (COMPLETED,), (PAUSED, CANCELED, HALTED))
def completed_rollouts_only_reopen(f: Facts) -> Iterator[str]:
    """A completed rollout has nothing to pause, cancel or halt until it reopens."""
    yield "the rollout is completed"


@rule(ROLLOUT, (PAUSED,), (PAUSED,))
def pause_once(f: Facts) -> Iterator[str]:
    """Pausing a paused rollout is a mistake worth reporting."""
    yield "the rollout is already paused"


@rule(ROLLOUT, (ACTIVE,), (ACTIVE,))
def resume_only_paused(f: Facts) -> Iterator[str]:
    """Only a paused rollout resumes."""
    yield "the rollout is not paused"


# --- installs ------------------------------------------------------------------------------


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def rollout_must_be_active(f: Facts) -> Iterator[str]:
    """Paused, halted and finished rollouts start no installs."""
    if f.rollout_state != ACTIVE:
        yield f"the rollout is {f.rollout_state}"


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def machine_must_be_running(f: Facts) -> Iterator[str]:
    """Azure patches running machines only; one that is off is patched when it is back."""
    if f.machine is None or not f.machine.running(f.now):
        yield "the machine is not running"


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def inside_the_off_peak_window(f: Facts) -> Iterator[str]:
    """Automatic installs start only inside the machine's off-peak window, with time to finish."""
    if f.window_left is None:
        yield "the machine's off-peak window is closed"
    elif f.window_left < f.min_window:
        yield "too little of the machine's off-peak window is left"


@rule(INSTALL, (FAILED,), (INSTALLING,))
def retry_in_a_later_window(f: Facts) -> Iterator[str]:
    """A failed or unfinished install is retried in the next window, not at once."""
    if f.retry_after is not None and f.now < f.retry_after:
        yield "a failed install is retried in the next window"


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def phase_must_have_started(f: Facts) -> Iterator[str]:
    """Regions go in phases: a region's machines wait until its phase starts."""
    if not f.phase_open:
        yield "the region's phase has not started"


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def production_after_the_devtest_soak(f: Facts) -> Iterator[str]:
    """Production machines start after their region's DevTest ring is healthy and has soaked."""
    if f.machine is None or f.machine.environment != PRODUCTION:
        return
    if f.ring == DEVTEST:
        yield "the region's DevTest ring has not finished"
    elif f.soak_until is not None and f.now < f.soak_until:
        yield "the region's DevTest ring is still soaking"


@rule(INSTALL, (None, FAILED), (INSTALLING,))
def one_patch_operation_at_a_time(f: Facts) -> Iterator[str]:
    """A machine runs one patch operation at a time, as Azure's do."""
    if f.busy:
        yield "another patch operation is running on the machine"


@rule(INSTALL, (SUCCEEDED,), (REVERTING,))
def only_hotpatches_revert(f: Facts) -> Iterator[str]:
    """Only a hotpatch release is reverted (a baseline is not), and only after a halt.

    That covers a hotpatch installed by restart on a machine with hotpatch turned off: the
    agent takes it back off the same way it takes off one applied in memory.
    """
    if f.kind not in ("hotpatch", "restart"):
        yield f"a {f.kind} install cannot be reverted automatically"
    if f.rollout_state != HALTED:
        yield "installs are reverted only when their rollout halted"


# --- batches -------------------------------------------------------------------------------


@rule(BATCH, (INSTALLING,), (BAKING,))
def bake_after_every_install_ended(f: Facts) -> Iterator[str]:
    """A batch is judged on all its machines: it bakes once every install ended."""
    if f.installs_open:
        yield f"{f.installs_open} installs of the batch are still running"


@rule(BATCH, (BAKING,), (PASSED, FAILED))
def judge_after_baking(f: Facts) -> Iterator[str]:
    """Health is judged once the bake time after the last install is over."""
    if f.bake_until is not None and f.now < f.bake_until:
        yield "the batch is still baking"


def too_many_failed(f: Facts) -> bool:
    """Whether the rollout's failed installs are past the failure gate's threshold."""
    return f.failed >= f.failed_installs and f.failed * 100 > f.failed_percent * f.finished


@rule(BATCH, (BAKING,), (PASSED,))
def pass_within_the_threshold(f: Facts) -> Iterator[str]:
    """A batch passes only with no more unhealthy machines than the gate tolerates."""
    if f.unhealthy > f.limit:
        yield f"{f.unhealthy} of {f.size} machines are unhealthy (at most {f.limit} tolerated)"


@rule(BATCH, (BAKING,), (PASSED,))
def pass_while_installs_mostly_succeed(f: Facts) -> Iterator[str]:
    """A release that fails to install wherever it goes is stopped, though nothing is sick.

    A failed install leaves the service as it was, so no machine turns unhealthy; without
    this gate such a release would fail on every machine of the fleet, window after window.
    """
    if too_many_failed(f):
        yield (
            f"{f.failed} of the {f.finished} installs ended so far failed (more than "
            f"{f.failed_percent:g} % tolerated once {f.failed_installs} have)"
        )


@rule(BATCH, (BAKING,), (FAILED,))
def fail_past_the_threshold(f: Facts) -> Iterator[str]:
    """A batch fails, and halts its rollout, only past one of the gates' thresholds."""
    if f.unhealthy <= f.limit and not too_many_failed(f):
        yield (
            f"{f.unhealthy} unhealthy machines are within the threshold of {f.limit}, "
            f"and {f.failed} failed installs of {f.finished} within the failure gate's"
        )
