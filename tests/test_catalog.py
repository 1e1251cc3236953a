"""The catalog's rules, history and signing, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from catalog_fixtures import Publisher, dep, svc, svc_new_layout, when
from pyhotpatch.catalog import ArtifactRef, Catalog, Kind, PublishRequest
from pyhotpatch.clock import ManualClock
from pyhotpatch.errors import CatalogError, NotFound, PublishRefused


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(when("2026-12-01"))


@pytest.fixture
def catalog(tmp_path: Path, database_url: str, clock: ManualClock) -> Iterator[Catalog]:
    opened = Catalog.open(tmp_path / "data", url=database_url, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def pub(catalog: Catalog, tmp_path: Path) -> Publisher:
    return Publisher(catalog, tmp_path)


@pytest.fixture
def wheels(tmp_path: Path) -> dict[str, Path]:
    w = tmp_path / "wheels"
    return {
        "svc-1.0.0": svc(w, "1.0.0"),
        "svc-1.0.1": svc(w, "1.0.1", "return x + 1"),
        "svc-1.0.2": svc(w, "1.0.2", "return x + 2"),
        "svc-1.1.0": svc(w, "1.1.0", "return x * 10"),
        "svc-1.1.1": svc(w, "1.1.1", "return x * 11"),
        "svc-1.1.2": svc_new_layout(w, "1.1.2"),
        "dep-2.0.0": dep(w, "2.0.0"),
        "dep-2.0.1": dep(w, "2.0.1", "return s.strip()"),
    }


def refused(excinfo: pytest.ExceptionInfo[PublishRefused]) -> str:
    return "\n".join(excinfo.value.reasons)


def test_default_products(catalog: Catalog) -> None:
    names = {p.name for p in catalog.products()}
    assert {
        "pyhotpatch-demo",
        "windows-server-2022-azure-edition",
        "windows-server-2025-azure-edition",
    } <= names
    found = catalog.product_for_image(
        "microsoftwindowsserver", "WindowsServer", "2022-datacenter-azure-edition-hotpatch"
    )
    assert found is not None and found.name == "windows-server-2022-azure-edition"
    for sku in ("2025-datacenter-azure-edition", "2025-datacenter-azure-edition-core-smalldisk"):
        assert catalog.product_for_image("MicrosoftWindowsServer", "WindowsServer", sku) is not None
    assert catalog.product_for_image("Canonical", "ubuntu", "22_04-lts") is None
    legacy = catalog.product("pyhotpatch-demo-legacy")
    assert not legacy.hotpatch and legacy.upgrade_to == "pyhotpatch-demo"
    with pytest.raises(NotFound):
        catalog.product("nope")


def test_a_year_of_releases(catalog: Catalog, pub: Publisher, wheels: dict[str, Path]) -> None:
    w = wheels
    jan = catalog.publish(pub.baseline("KB5000001", [w["svc-1.0.0"], w["dep-2.0.0"]], "2026-01-13"))
    assert (jan.kind, jan.baseline, jan.sequence, jan.reboot_behavior) == (
        Kind.PLANNED_BASELINE,
        "KB5000001",
        0,
        "AlwaysRequiresReboot",
    )

    feb = catalog.publish(
        pub.hotpatch("KB5000002", [(w["svc-1.0.0"], w["svc-1.0.1"])], "2026-02-10")
    )
    assert (feb.kind, feb.baseline, feb.sequence, feb.reboot_behavior) == (
        Kind.HOTPATCH,
        "KB5000001",
        1,
        "NeverReboots",
    )
    assert feb.title == "KB5000002 fix" and feb.classifications == ("Security",)

    # March must carry February's fix too: dep alone is not cumulative
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.hotpatch("KB5000003", [(w["dep-2.0.0"], w["dep-2.0.1"])], "2026-03-10"))
    assert "not cumulative: KB5000002 fixed svc 1.0.1" in refused(excinfo)
    mar = catalog.publish(
        pub.hotpatch(
            "KB5000003",
            [(w["svc-1.0.0"], w["svc-1.0.2"]), (w["dep-2.0.0"], w["dep-2.0.1"])],
            "2026-03-10",
        )
    )
    assert mar.sequence == 2
    assert catalog.release("KB5000002").superseded_by == "KB5000003"

    apr = catalog.publish(pub.baseline("KB5000004", [w["svc-1.1.0"], w["dep-2.0.1"]], "2026-04-14"))
    assert catalog.current_baseline("pyhotpatch-demo") == apr
    assert catalog.release("KB5000001").superseded_by == "KB5000004"
    assert catalog.release("KB5000003").superseded_by == "KB5000004"

    # built for January's baseline, which April's superseded
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.hotpatch("KB5000005", [(w["svc-1.0.0"], w["svc-1.0.1"])], "2026-05-12"))
    assert (
        "KB5000005 was built for baseline KB5000001, which KB5000004 superseded; "
        "rebuild it against the current baseline KB5000004"
    ) in refused(excinfo)

    may_hp = catalog.publish(
        pub.hotpatch("KB5000005", [(w["svc-1.1.0"], w["svc-1.1.1"])], "2026-05-12")
    )
    # a zero-day the builder cannot hotpatch: it ships as an unplanned baseline in May
    may = catalog.publish(
        pub.baseline(
            "KB5000006",
            [w["svc-1.1.2"], w["dep-2.0.1"]],
            "2026-05-20",
            kind=Kind.UNPLANNED_BASELINE,
            classifications=("Critical",),
        )
    )
    assert may.replaces == "2026-05"
    assert catalog.release(may_hp.kb).superseded_by == "KB5000006"

    june = catalog.publish(
        pub.hotpatch("KB5000007", [(w["dep-2.0.1"], w["dep-2.0.0"])], "2026-06-09")
    )  # a revert of dep is still a code change on the May baseline
    assert (june.baseline, june.sequence) == ("KB5000006", 1)

    months = catalog.calendar(2026)
    assert [m.kind for m in months][:7] == [
        "planned-baseline",
        "hotpatch",
        "hotpatch",
        "planned-baseline",
        "unplanned-baseline",
        "hotpatch",
        "planned-baseline",
    ]
    assert [r.kb for r in months[4].releases] == ["KB5000005", "KB5000006"]
    assert months[1].to_json()["date"] == "2026-02-10"
    assert [r.kb for r in catalog.releases(kind=Kind.HOTPATCH)] == [
        "KB5000002",
        "KB5000003",
        "KB5000005",
        "KB5000007",
    ]

    # every artifact is a signed target carrying the release's fields
    signed = catalog.signing.signed_targets()
    target = signed["pyhotpatch-demo/KB5000003/KB5000003.hotpatch"]
    assert target.custom["kbId"] == "KB5000003"
    assert target.custom["baseline"] == "KB5000001"
    assert target.custom["sequence"] == 2
    assert target.custom["classifications"] == ["Security"]
    assert len(signed) == sum(len(r.artifacts) for r in catalog.releases())


def test_baseline_rules(catalog: Catalog, pub: Publisher, wheels: dict[str, Path]) -> None:
    w = wheels
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.baseline("KB5000001", [w["svc-1.0.0"]], "2026-02-10"))
    assert "planned baselines ship in January, April, July, October" in refused(excinfo)

    catalog.set_baseline_months([2, 5, 8, 11])
    catalog.publish(pub.baseline("KB5000001", [w["svc-1.0.0"]], "2026-02-10"))
    assert [m.kind for m in catalog.calendar(2026)][:3] == [
        "hotpatch",
        "planned-baseline",
        "hotpatch",
    ]

    lock = "svc==1.1.0\ndep==2.0.0\n"
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.baseline(
                "KB5000002", [w["svc-1.1.0"], w["dep-2.0.1"]], "2026-05-12", lock_text=lock
            )
        )
    text = refused(excinfo)
    assert "wheel dep-2.0.1-py3-none-any.whl is version 2.0.1, but the lock pins dep==2.0.0" in text
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.baseline("KB5000002", [w["svc-1.1.0"]], "2026-05-12", lock_text=lock))
    assert "the lock pins dep==2.0.0 but no wheel for it was published" in refused(excinfo)
    bad_hash = "svc==1.1.0 --hash=sha256:" + "0" * 64 + "\n"
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.baseline("KB5000002", [w["svc-1.1.0"]], "2026-05-12", lock_text=bad_hash)
        )
    assert "which the lock does not allow" in refused(excinfo)
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.baseline("KB5000002", [w["svc-1.1.0"]], "2026-05-12", lock_text="svc>=1\n")
        )
    assert "not an exact pin" in refused(excinfo)

    # not a security fix: an unplanned baseline is refused
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.baseline("KB5000002", [w["svc-1.1.0"]], "2026-03-10", kind=Kind.UNPLANNED_BASELINE)
        )
    assert "unplanned baselines ship Critical or Security fixes" in refused(excinfo)
    # dated before the current baseline
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.baseline(
                "KB5000002",
                [w["svc-1.1.0"]],
                "2026-01-10",
                kind=Kind.UNPLANNED_BASELINE,
                classifications=("Security",),
            )
        )
    assert "before the current baseline KB5000001" in refused(excinfo)
    # in the future
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.baseline("KB5000002", [w["svc-1.1.0"]], "2027-02-09"))
    assert "which is in the future" in refused(excinfo)


def test_hotpatch_rules(catalog: Catalog, pub: Publisher, wheels: dict[str, Path]) -> None:
    w = wheels
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.hotpatch("KB5000002", [(w["svc-1.0.0"], w["svc-1.0.1"])], "2026-02-10"))
    assert "has no baseline yet" in refused(excinfo)
    catalog.publish(pub.baseline("KB5000001", [w["svc-1.0.0"], w["dep-2.0.0"]], "2026-01-13"))

    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(
            pub.hotpatch(
                "KB5000002",
                [(w["svc-1.0.0"], w["svc-1.0.1"])],
                "2026-02-10",
                classification="FeaturePack",
            )
        )
    assert "only Critical and Security fixes ship as hotpatches" in refused(excinfo)

    # built from a release the baseline does not lock
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(pub.hotpatch("KB5000002", [(w["svc-1.1.0"], w["svc-1.1.1"])], "2026-02-10"))
    assert (
        "does not build on the current baseline KB5000001: it patches svc 1.1.0, but the baseline "
        "locks svc==1.0.0"
    ) in refused(excinfo)

    good = pub.hotpatch("KB5000002", [(w["svc-1.0.0"], w["svc-1.0.1"])], "2026-02-10")
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(replace(good, kb="KB5999999"))
    assert "the package's id is KB5000002, not KB5999999" in refused(excinfo)
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(replace(good, baseline="KB4999999"))
    assert "says it builds on KB4999999" in refused(excinfo)
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(replace(good, product="pyhotpatch-demo-legacy"))
    assert (
        "is not hotpatch-capable: ship a baseline instead; upgrade machines to pyhotpatch-demo"
        in refused(excinfo)
    )

    first = catalog.publish(good)
    assert catalog.publish(good) == first  # a retry returns the release unchanged
    other = replace(good, artifacts=(*good.artifacts, pub.ref(w["svc-1.0.1"], "wheel")))
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(other)
    assert "already published with other content" in refused(excinfo)


def test_other_updates_wait_for_a_baseline_month(
    catalog: Catalog, pub: Publisher, tmp_path: Path
) -> None:
    notes = tmp_path / "tools.txt"
    notes.write_text("diagnostic tools\n")
    request = PublishRequest(
        product="pyhotpatch-demo",
        kind=Kind.OTHER_UPDATE,
        artifacts=(pub.ref(notes, "file"),),
        kb="KB5000010",
        title="Diagnostic tools",
        classifications=("Tools",),
        published=when("2026-05-20"),
    )
    held = catalog.publish(request)
    assert held.available == when("2026-07-14")
    assert held.reboot_behavior == "CanRequestReboot"
    assert [r.kb for r in catalog.calendar(2026)[6].releases] == ["KB5000010"]
    with pytest.raises(PublishRefused) as excinfo:
        catalog.publish(replace(request, kb="KB5000011", classifications=("Security",)))
    assert "a security fix ships as a hotpatch or an unplanned baseline" in refused(excinfo)


def test_requests_are_validated(catalog: Catalog, pub: Publisher, tmp_path: Path) -> None:
    blob = tmp_path / "x.txt"
    blob.write_text("x")
    ref = pub.ref(blob, "file")
    base = {
        "product": "pyhotpatch-demo",
        "kind": "other-update",
        "kbId": "KB5000010",
        "name": "x",
        "classifications": ["Tools"],
        "artifacts": [{"name": ref.name, "role": ref.role, "sha256": ref.sha256}],
    }
    assert PublishRequest.from_json(base).kb == "KB5000010"
    cases = {
        "kind": ("baseline", "kind must be one of"),
        "kbId": ("5000010", "is not a KB id"),
        "classifications": (["Urgent"], "unknown classification 'Urgent'"),
        "cves": (["not a cve"], "is not an advisory id"),
        "severity": ("Huge", "severity must be one of"),
        "publishedDate": ("yesterday", "is not ISO 8601"),
        "surprise": (1, "unknown field 'surprise'"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(CatalogError, match=message):
            catalog.publish(PublishRequest.from_json({**base, key: value}))
    missing = {**base, "artifacts": [{"name": "y", "role": "file", "sha256": "a" * 64}]}
    with pytest.raises(CatalogError, match="has not been uploaded"):
        catalog.publish(PublishRequest.from_json(missing))
    with pytest.raises(NotFound):
        catalog.publish(PublishRequest.from_json({**base, "product": "nope"}))
    with pytest.raises(PublishRefused, match="not a plain file name"):
        catalog.publish(
            replace(
                PublishRequest.from_json(base), artifacts=(ArtifactRef("../x", "file", ref.sha256),)
            )
        )
    assert catalog.releases() == []


def test_release_survives_reopen(
    tmp_path: Path, database_url: str, clock: ManualClock, wheels: dict[str, Path]
) -> None:
    first = Catalog.open(tmp_path / "data", url=database_url, clock=clock)
    Publisher(first, tmp_path).baseline  # noqa: B018
    published = first.publish(
        Publisher(first, tmp_path).baseline("KB5000001", [wheels["svc-1.0.0"]], "2026-01-13")
    )
    root = first.signing.trusted_root()
    first.close()
    again = Catalog.open(tmp_path / "data", url=database_url, clock=clock)
    try:
        assert again.release("KB5000001") == published
        assert again.signing.trusted_root() == root
    finally:
        again.close()
