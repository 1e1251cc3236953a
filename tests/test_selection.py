"""installPatches' selection rules, decided the same way on every machine."""

from __future__ import annotations

from typing import Any

import pytest

from pyhotpatch.catalog._selection import kb_digits, reboot_status, select


def patch(
    kb: str, classes: list[str], reboot: str = "NeverReboots", published: str = "2026-02-10"
) -> dict[str, Any]:
    return {
        "kbId": kb,
        "classifications": classes,
        "rebootBehavior": reboot,
        "publishedDate": f"{published}T17:00:00Z",
    }


PATCHES = [
    patch("5000002", ["Security"]),
    patch("5000003", ["Critical"], reboot="AlwaysRequiresReboot"),
    patch("5000004", ["Tools"]),
    patch("5000005", ["Security"], published="2026-03-10"),
]


def test_classifications_select_and_the_rest_is_not_selected() -> None:
    states = select(PATCHES, {"classificationsToInclude": ["Critical", "Security"]})
    assert states == ["Pending", "Pending", "NotSelected", "Pending"]


def test_kb_ids_include_and_exclude_and_exclusion_wins() -> None:
    windows = {
        "classificationsToInclude": ["Security"],
        "kbNumbersToInclude": ["KB5000004", "5000003"],
        "kbNumbersToExclude": ["kb5000002", "KB5000003"],
    }
    assert select(PATCHES, windows) == ["Excluded", "Excluded", "Pending", "Pending"]


def test_patches_that_need_a_restart_can_be_left_out() -> None:
    windows = {
        "classificationsToInclude": ["Critical", "Security"],
        "excludeKbsRequiringReboot": True,
    }
    assert select(PATCHES, windows) == ["Pending", "Excluded", "NotSelected", "Pending"]


def test_later_patches_wait_for_a_later_install() -> None:
    windows = {
        "classificationsToInclude": ["Security"],
        "maxPatchPublishDate": "2026-03-01T00:00:00Z",
    }
    assert select(PATCHES, windows) == ["Pending", "NotSelected", "NotSelected", "NotSelected"]


def test_nothing_chosen_selects_nothing() -> None:
    assert select(PATCHES, {}) == ["NotSelected"] * 4


@pytest.mark.parametrize(
    ("needs", "setting", "status"),
    [
        (False, "IfRequired", "NotNeeded"),
        (True, "IfRequired", "Completed"),
        (True, "Never", "Required"),
        (False, "Never", "NotNeeded"),
        (False, "Always", "Completed"),
    ],
)
def test_reboot_status(needs: bool, setting: str, status: str) -> None:
    assert reboot_status(needs, setting) == status


def test_kb_digits() -> None:
    assert kb_digits(" KB5000002 ") == "5000002"
    assert kb_digits("kb1") == "1"
    assert kb_digits("5000002") == "5000002"
