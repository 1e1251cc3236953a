"""The admission rules: availability-first batches, one rule at a time and composed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_fixtures import machine
from pyhotpatch.server.orchestrator._batches import (
    Draft,
    compose,
    refusal,
    set_limit,
    subscription_limit,
)


def draft(
    limit: int = 100, sets: dict[str, int] | None = None, subs: dict[str, int] | None = None
) -> Draft:
    return Draft(
        size_limit=limit,
        set_percent=20,
        small_set=10,
        subscription_percent=20,
        set_sizes=sets or {},
        subscription_sizes=subs or {"s1": 1000},
    )


def test_limits() -> None:
    assert [set_limit(n, 20, 10) for n in (1, 9, 10, 14, 15, 30)] == [1, 1, 2, 2, 3, 6]
    assert [subscription_limit(n, 20) for n in (1, 2, 4, 5, 10, 11)] == [1, 1, 1, 1, 2, 2]


def test_one_zone_per_batch() -> None:
    chosen = compose(
        [machine("a", zone="2"), machine("b", zone="1"), machine("c", zone="1")], draft()
    )
    assert [m.id for m in chosen] == ["b", "c"]


def test_no_zone_is_its_own_zone() -> None:
    chosen = compose([machine("a"), machine("b", zone="1")], draft())
    assert [m.zone for m in chosen] == ["1"]


def test_small_set_one_at_a_time_and_one_update_domain() -> None:
    members = [machine(f"m{i}", aset="as1", domain=i % 3) for i in range(6)]
    chosen = compose(members, draft(sets={"as1": 6}))
    assert len(chosen) == 1 and chosen[0].update_domain == 0


def test_large_set_twenty_percent_in_one_update_domain() -> None:
    members = [machine(f"m{i:02d}", aset="as1", domain=i % 2) for i in range(30)]
    chosen = compose(members, draft(sets={"as1": 30}))
    assert len(chosen) == 6
    assert {m.update_domain for m in chosen} == {0}


def test_in_flight_elsewhere_counts() -> None:
    d = draft(sets={"as1": 30})
    d.set_busy["as1"] = 6
    d.set_domains["as1"] = 1
    assert refusal(d, machine("x", aset="as1", domain=1)) is not None
    d.set_busy["as1"] = 2
    assert refusal(d, machine("x", aset="as1", domain=0)) is not None  # another domain
    assert refusal(d, machine("x", aset="as1", domain=1)) is None


def test_subscription_never_all_at_once() -> None:
    members = [machine(f"m{i}", sub="small") for i in range(3)]
    chosen = compose(members, draft(subs={"small": 3}))
    assert len(chosen) == 1


def test_slow_start() -> None:
    members = [machine(f"m{i}", sub=f"s{i}") for i in range(10)]
    subs = {f"s{i}": 100 for i in range(10)}
    assert len(compose(members, draft(limit=1, subs=subs))) == 1
    assert len(compose(members, draft(limit=4, subs=subs))) == 4


fleets = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]),
        st.sampled_from([None, "1", "2", "3"]),
        st.sampled_from([None, "as1", "as2"]),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(fleets, st.integers(1, 64))
def test_composed_batches_keep_every_rule(rows: list, limit: int) -> None:
    members = []
    for i, (sub, zone, aset, domain) in enumerate(rows):
        members.append(
            machine(
                f"m{i:03d}",
                sub=sub,
                zone=None if aset else zone,
                aset=aset,
                domain=domain if aset else None,
            )
        )
    subs: dict[str, int] = {}
    sets: dict[str, int] = {}
    for m in members:
        subs[m.subscription] = subs.get(m.subscription, 0) + 1
        if m.availability_set:
            sets[m.availability_set] = sets.get(m.availability_set, 0) + 1
    chosen = compose(members, draft(limit=limit, sets=sets, subs=subs))
    assert chosen, "a non-empty candidate list always yields a batch"
    assert len(chosen) <= limit
    assert len({m.zone for m in chosen}) == 1
    for aset, size in sets.items():
        in_set = [m for m in chosen if m.availability_set == aset]
        assert len(in_set) <= set_limit(size, 20, 10)
        assert len({m.update_domain for m in in_set}) <= 1
    for sub, size in subs.items():
        taken = sum(m.subscription == sub for m in chosen)
        assert taken <= subscription_limit(size, 20)
        if size > 1:
            assert taken < size
