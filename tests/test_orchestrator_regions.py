"""Region pairs and rollout phases: canary first, doubling, geo-pairs never together."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyhotpatch.server.arm._providers import REGIONS
from pyhotpatch.server.orchestrator._regions import (
    AZURE_PAIRS,
    paired,
    parse_pairs,
    plan_phases,
)

AZURE = paired(AZURE_PAIRS)


def check_plan(counts: dict[str, int], partners: dict[str, frozenset[str]]) -> list[list[str]]:
    phases = plan_phases(counts, partners)
    placed = [region for phase in phases for region in phase]
    assert sorted(placed) == sorted(region for region, count in counts.items() if count > 0)
    assert all(phases)
    for phase in phases:
        for region in phase:
            assert partners.get(region, frozenset()).isdisjoint(phase)
    assert all(len(phase) <= 2**index for index, phase in enumerate(phases))
    return phases


def test_azure_pairs_name_known_regions() -> None:
    for first, second in AZURE_PAIRS:
        assert first in REGIONS and second in REGIONS
        assert first != second
    assert len(set(map(frozenset, AZURE_PAIRS))) == len(AZURE_PAIRS)


def test_azure_pairs_include_the_well_known_ones() -> None:
    assert AZURE["eastus"] == {"westus", "westus3"}
    assert AZURE["westus3"] == {"eastus"}
    assert AZURE["eastus2"] == {"centralus"}
    assert AZURE["northeurope"] == {"westeurope"}
    assert AZURE["southcentralus"] == {"northcentralus", "brazilsouth"}
    assert AZURE["southindia"] == {"centralindia", "westindia"}
    for unpaired in ("italynorth", "polandcentral", "swedencentral", "newzealandnorth"):
        assert unpaired not in AZURE


def test_paired_is_symmetric_and_refuses_self_pairs() -> None:
    partners = paired([("a", "b"), ("c", "a")])
    assert partners == {
        "a": frozenset({"b", "c"}),
        "b": frozenset({"a"}),
        "c": frozenset({"a"}),
    }
    with pytest.raises(ValueError, match="itself"):
        paired([("a", "a")])


def test_parse_pairs() -> None:
    assert parse_pairs("eastus:westus,northeurope:westeurope") == (
        ("eastus", "westus"),
        ("northeurope", "westeurope"),
    )
    assert parse_pairs(" EastUS : WestUS ,\tNorthEurope:westeurope, ") == (
        ("eastus", "westus"),
        ("northeurope", "westeurope"),
    )
    assert parse_pairs("") == ()
    assert parse_pairs(",".join(f"{a}:{b}" for a, b in AZURE_PAIRS)) == AZURE_PAIRS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eastus", "not two ARM region names"),
        ("eastus:westus:centralus", "not two ARM region names"),
        ("eastus:", "not two ARM region names"),
        (":westus", "not two ARM region names"),
        ("eastus;westus", "not two ARM region names"),
        ("eastus:west-us", "not two ARM region names"),
        ("eastus:westus,uksouth", "'uksouth'"),
        ("eastus:EastUS", "with itself"),
    ],
)
def test_parse_pairs_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pairs(text)


def test_plan_phases_canary_then_doubling() -> None:
    counts = {"a": 5, "b": 1, "c": 3, "d": 2, "e": 8, "f": 13, "g": 21, "h": 34}
    assert plan_phases(counts, {}) == [["b"], ["d", "c"], ["a", "e", "f", "g"], ["h"]]


def test_plan_phases_ties_break_by_name_and_zero_is_left_out() -> None:
    counts = {"z": 2, "y": 2, "x": 2, "empty": 0}
    assert plan_phases(counts, {}) == [["x"], ["y", "z"]]
    assert plan_phases({"empty": 0}, {}) == []


def test_plan_phases_keeps_pairs_apart() -> None:
    counts = {"eastus": 1, "westus": 2, "westus3": 3, "northeurope": 4, "westeurope": 5}
    phases = check_plan(counts, AZURE)
    # westeurope fits phase 3 by size but not beside northeurope, so it gets a phase of its own
    assert phases == [["eastus"], ["westus", "westus3"], ["northeurope"], ["westeurope"]]


def test_plan_phases_fills_earlier_phases_with_room() -> None:
    partners = paired([("a", "b")])
    # b may not join a, so it opens phase 3; c still fills phase 2 and d goes beside b
    assert plan_phases({"x": 1, "a": 2, "b": 3, "c": 4, "d": 5}, partners) == [
        ["x"],
        ["a", "c"],
        ["b", "d"],
    ]


def test_plan_phases_is_deterministic_whatever_the_mapping_order() -> None:
    counts = {region: len(region) % 4 for region in REGIONS}
    backwards = dict(reversed(list(counts.items())))
    assert plan_phases(counts, AZURE) == plan_phases(backwards, AZURE)
    check_plan(counts, AZURE)


names = st.sampled_from(sorted(REGIONS))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(names, st.integers(0, 50), max_size=40),
    st.lists(st.tuples(names, names).filter(lambda pair: pair[0] != pair[1]), max_size=60),
)
def test_property_plans(counts: dict[str, int], pairs: list[tuple[str, str]]) -> None:
    partners = paired(pairs)
    phases = check_plan(counts, partners)
    assert phases == plan_phases(dict(reversed(list(counts.items()))), partners)
    # earliest phase: every phase before a region's was full or held one of its partners
    where = {region: index for index, phase in enumerate(phases) for region in phase}
    for region, index in where.items():
        for number, earlier in enumerate(phases[:index]):
            full = len(earlier) == 2**number
            assert full or not partners.get(region, frozenset()).isdisjoint(earlier)
