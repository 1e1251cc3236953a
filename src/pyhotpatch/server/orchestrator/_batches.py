"""Composing a batch: which of the machines that may install now go together.

A batch is what one region installs at once, and what the health gate then judges. The
admission rules below say why a machine may not join the batch drafted so far; together
they are the availability-first rules of Azure's automatic guest patching:

- one availability zone per batch, and (the dispatcher's rule) one batch per region at a
  time, so machines in different zones of a region are never patched together;
- within an availability set one update domain at a time, at most ``set_percent`` of the
  set at once, and one machine at a time in sets smaller than ``small_set``;
- at most ``subscription_percent`` of a subscription's machines at once (at least one), so
  that no subscription with more than one machine is patched all at once;
- batches start small and double (1, 2, 4, …) per region, so a bad release meets one
  machine first.

Counts of what other batches (of any rollout) have in flight come in with the draft, so the
limits hold across regions and rollouts, not only within a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pyhotpatch.server.orchestrator._fleet import Machine


@dataclass
class Draft:
    """A batch being composed, and what is already in flight elsewhere.

    ``size_limit``: the most machines this batch may hold. ``set_sizes`` and
    ``subscription_sizes``: machines per availability set and per subscription.
    ``set_domains``: the update domain each set has in flight (from other batches, then
    this one); ``set_busy`` and ``subscription_busy``: machines in flight per set and per
    subscription (other batches, then this one too).
    """

    size_limit: int
    set_percent: float
    small_set: int
    subscription_percent: float
    set_sizes: dict[str, int]
    subscription_sizes: dict[str, int]
    set_domains: dict[str, int] = field(default_factory=dict)
    set_busy: dict[str, int] = field(default_factory=dict)
    subscription_busy: dict[str, int] = field(default_factory=dict)
    machines: list[Machine] = field(default_factory=list)

    def add(self, machine: Machine) -> None:
        """Take ``machine`` into the batch and count it as in flight."""
        self.machines.append(machine)
        if machine.availability_set is not None:
            key = machine.availability_set
            self.set_busy[key] = self.set_busy.get(key, 0) + 1
            self.set_domains[key] = machine.update_domain or 0
        sub = machine.subscription
        self.subscription_busy[sub] = self.subscription_busy.get(sub, 0) + 1


def set_limit(size: int, percent: float, small_set: int) -> int:
    """How many machines of an availability set of ``size`` may be patched at once."""
    if size < small_set:
        return 1
    return max(1, math.floor(size * percent / 100))


def subscription_limit(size: int, percent: float) -> int:
    """How many of a subscription's ``size`` machines may be patched at once."""
    return max(1, math.floor(size * percent / 100))


AdmissionRule = Callable[[Draft, Machine], "str | None"]


def batch_is_full(draft: Draft, machine: Machine) -> str | None:
    """Batches start at one machine and double per batch in a region (slow start)."""
    if len(draft.machines) >= draft.size_limit:
        return f"the batch is full at {draft.size_limit} machines"
    return None


def one_zone_per_batch(draft: Draft, machine: Machine) -> str | None:
    """Machines in different availability zones are never patched together."""
    if draft.machines and machine.zone != draft.machines[0].zone:
        return f"the batch patches zone {draft.machines[0].zone or '(none)'}"
    return None


def one_update_domain_per_set(draft: Draft, machine: Machine) -> str | None:
    """An availability set is patched one update domain at a time."""
    key = machine.availability_set
    if key is None or not draft.set_busy.get(key):
        return None
    if draft.set_domains.get(key) != (machine.update_domain or 0):
        return f"update domain {draft.set_domains.get(key)} of its set is being patched"
    return None


def share_of_the_set(draft: Draft, machine: Machine) -> str | None:
    """At most a share (20%) of a set at once; sets under ten machines one at a time."""
    key = machine.availability_set
    if key is None:
        return None
    limit = set_limit(draft.set_sizes.get(key, 1), draft.set_percent, draft.small_set)
    if draft.set_busy.get(key, 0) >= limit:
        return f"{limit} machines of its availability set are already being patched"
    return None


def share_of_the_subscription(draft: Draft, machine: Machine) -> str | None:
    """No subscription is patched all at once: at most a share (20%) of its machines."""
    sub = machine.subscription
    limit = subscription_limit(draft.subscription_sizes.get(sub, 1), draft.subscription_percent)
    if draft.subscription_busy.get(sub, 0) >= limit:
        return f"{limit} machines of its subscription are already being patched"
    return None


ADMISSION: tuple[AdmissionRule, ...] = (
    batch_is_full,
    one_zone_per_batch,
    one_update_domain_per_set,
    share_of_the_set,
    share_of_the_subscription,
)


def refusal(draft: Draft, machine: Machine) -> str | None:
    """The first admission rule that keeps ``machine`` out of the draft, if any."""
    for check in ADMISSION:
        reason = check(draft, machine)
        if reason is not None:
            return reason
    return None


def order(candidates: Iterable[Machine]) -> list[Machine]:
    """Candidates in the order batches take them: zone by zone, update domain by domain."""
    return sorted(
        candidates,
        key=lambda m: (
            m.zone is None,
            m.zone or "",
            m.update_domain or 0,
            m.availability_set or "",
            m.id,
        ),
    )


def compose(candidates: Iterable[Machine], draft: Draft) -> list[Machine]:
    """The machines of the next batch, taken in ``order`` as long as every rule admits them."""
    for machine in order(candidates):
        if len(draft.machines) >= draft.size_limit:
            break
        if refusal(draft, machine) is None:
            draft.add(machine)
    return draft.machines
