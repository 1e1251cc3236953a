"""``hotpatch release`` against a real control plane, and its HTTP API's contract."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from catalog_fixtures import dep, svc, svc_new_layout
from pyhotpatch.catalog.tufclient import ReleaseFeed
from servers import TOKEN, ServerProcess, hotpatch


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path_factory.mktemp("control-plane"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    w = tmp_path_factory.mktemp("wheels")
    return {
        "svc-1.0.0": svc(w, "1.0.0"),
        "svc-1.0.1": svc(w, "1.0.1", "return x + 1"),
        "svc-1.0.2": svc_new_layout(w, "1.0.2"),
        "dep-2.0.0": dep(w, "2.0.0"),
        "dep-2.0.1": dep(w, "2.0.1", "return s.strip()"),
    }


def remote(server: ServerProcess) -> list[str]:
    return ["--server", server.url, "--token", TOKEN]


def api(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})


def test_publish_history_and_calendar(
    server: ServerProcess, wheels: dict[str, Path], tmp_path: Path
) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "".join(
            f"{p.name.split('-')[0]}=={p.name.split('-')[1]} --hash=sha256:{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
            for p in (wheels["svc-1.0.0"], wheels["dep-2.0.0"])
        )
    )
    done = hotpatch(
        "release",
        "publish",
        wheels["svc-1.0.0"].as_posix(),
        wheels["dep-2.0.0"].as_posix(),
        "--lock",
        str(lock),
        "--product",
        "pyhotpatch-demo",
        "--kb",
        "KB5000001",
        "--title",
        "January baseline",
        "--classification",
        "UpdateRollUp",
        "--date",
        "2026-01-13",
        *remote(server),
    )
    assert done.returncode == 0, done.stderr
    assert "published KB5000001: planned baseline (restart)" in done.stdout

    # the fix builds into a hotpatch on the current baseline
    done = hotpatch(
        "release",
        "publish",
        "--fix",
        str(wheels["svc-1.0.1"]),
        "--product",
        "pyhotpatch-demo",
        "--kb",
        "KB5000002",
        "--title",
        "svc: fix handle()",
        "--cve",
        "CVE-2026-1111",
        "--date",
        "2026-02-10",
        *remote(server),
    )
    assert done.returncode == 0, done.stderr
    assert "published KB5000002: hotpatch 1 on baseline KB5000001, no restart" in done.stdout

    # the next fix changes a class layout: it ships as an unplanned baseline, with the reasons
    done = hotpatch(
        "release",
        "publish",
        "--fix",
        str(wheels["svc-1.0.2"]),
        "--product",
        "pyhotpatch-demo",
        "--kb",
        "KB5000003",
        "--title",
        "svc: zero-day",
        "--classification",
        "Critical",
        "--date",
        "2026-03-12",
        "--json",
        *remote(server),
    )
    assert done.returncode == 0, done.stderr
    assert "carrying the fixes of KB5000002 (cumulative)" in done.stderr
    assert "the builder refused 1 change(s): shipping as an unplanned baseline" in done.stderr
    unplanned = json.loads(done.stdout)
    assert unplanned["kind"] == "unplanned-baseline"
    assert unplanned["replaces"] == "2026-03"
    assert unplanned["rebootBehavior"] == "AlwaysRequiresReboot"
    assert any("__slots__" in note for note in unplanned["notes"])
    names = sorted(a["name"] for a in unplanned["artifacts"])
    assert names == [
        "dep-2.0.0-py3-none-any.whl",
        "requirements.lock",
        "svc-1.0.2-py3-none-any.whl",
    ]

    # a hotpatch built for January's baseline is now refused, with the reason
    built = tmp_path / "KB5000004.hotpatch"
    done = hotpatch(
        "build",
        str(wheels["svc-1.0.0"]),
        str(wheels["svc-1.0.1"]),
        "-o",
        str(built),
        "--id",
        "KB5000004",
    )
    assert done.returncode == 0, done.stderr
    done = hotpatch(
        "release",
        "publish",
        str(built),
        "--product",
        "pyhotpatch-demo",
        "--date",
        "2026-04-01",
        *remote(server),
    )
    assert done.returncode == 4, done.stderr
    assert "was built for baseline KB5000001, which KB5000003 superseded" in done.stderr.replace(
        "\n", " "
    )

    done = hotpatch("release", "list", "--json", *remote(server))
    listed = json.loads(done.stdout)
    assert [(r["kbId"], r["kind"], r["supersededBy"]) for r in listed] == [
        ("KB5000001", "planned-baseline", "KB5000003"),
        ("KB5000002", "hotpatch", "KB5000003"),
        ("KB5000003", "unplanned-baseline", None),
    ]
    done = hotpatch("release", "show", "KB5000002", *remote(server))
    assert done.returncode == 0 and "CVE-2026-1111" in done.stdout and "NeverReboots" in done.stdout

    svg = tmp_path / "calendar.svg"
    done = hotpatch(
        "release", "calendar", "--year", "2026", "--json", "--svg", str(svg), *remote(server)
    )
    assert done.returncode == 0, done.stderr
    months = json.loads(done.stdout)
    assert [m["month"] for m in months] == list(range(1, 13))
    assert set(months[0]) == {"month", "date", "kind", "releases"}
    assert [(m["date"], m["kind"]) for m in months[:4]] == [
        ("2026-01-13", "planned-baseline"),
        ("2026-02-10", "hotpatch"),
        ("2026-03-10", "unplanned-baseline"),
        ("2026-04-14", "planned-baseline"),
    ]
    assert [r["kbId"] for r in months[2]["releases"]] == ["KB5000003"]
    tree = ET.parse(svg)
    assert "KB5000003" in ET.tostring(tree.getroot(), encoding="unicode")

    table = hotpatch("release", "calendar", "--year", "2026", *remote(server))
    assert "unplanned baseline (restart)" in table.stdout and "2026-03-10" in table.stdout


def test_agents_verify_what_was_published(server: ServerProcess, tmp_path: Path) -> None:
    with api(server) as client:
        if not client.get("/hotpatch/releases/KB5000002").is_success:
            pytest.skip("needs test_publish_history_and_calendar's releases")
    root = tmp_path / "root.json"
    assert hotpatch("release", "root", "-o", str(root), *remote(server)).returncode == 0
    feed = ReleaseFeed(server.url, tmp_path / "agent", trusted_root=root.read_bytes())
    feed.refresh()
    targets = feed.targets()
    hotpatch_target = targets["pyhotpatch-demo/KB5000002/KB5000002.hotpatch"]
    assert hotpatch_target.custom["baseline"] == "KB5000001"
    path = feed.fetch_hotpatch("KB5000002", running_baseline="KB5000001")
    assert path.read_bytes()[:2] == b"PK"


def test_api_errors_have_arm_shape(server: ServerProcess) -> None:
    anonymous = httpx.get(f"{server.url}/hotpatch/releases")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "AuthenticationFailed"
    wrong = httpx.get(f"{server.url}/hotpatch/releases", headers={"Authorization": "Bearer nope"})
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationToken"
    with api(server) as client:
        missing = client.get("/hotpatch/releases/KB4000000")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NotFound")
        bad = client.post("/hotpatch/releases", content=b"{not json")
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "InvalidRequestContent")
        bad = client.post("/hotpatch/releases", json={"kind": "hotpatch"})
        assert bad.status_code == 400 and "product" in bad.json()["error"]["message"]
        upload = client.put(f"/hotpatch/artifacts/{'0' * 64}", content=b"hello")
        assert upload.status_code == 400 and "not 0000" in upload.json()["error"]["message"]
        year = client.get("/hotpatch/calendar", params={"year": "soon"})
        assert year.status_code == 400 and year.json()["error"]["code"] == "InvalidRequestContent"
        assert client.get("/openapi.json").json()["info"]["title"] == "pyhotpatch control plane"


def test_wrong_token_is_one_clear_line(server: ServerProcess) -> None:
    done = hotpatch("release", "list", "--server", server.url, "--token", "wrong-token-wrong-token")
    assert done.returncode == 1
    assert "InvalidAuthenticationToken: The access token is invalid." in done.stderr


def test_local_calendar_without_a_server(tmp_path: Path) -> None:
    done = hotpatch(
        "release", "calendar", "--year", "2027", "--json", "--data-dir", str(tmp_path / "d")
    )
    assert done.returncode == 0, done.stderr
    months = json.loads(done.stdout)
    assert [m["kind"] for m in months].count("planned-baseline") == 4
    assert months[0] == {
        "month": 1,
        "date": "2027-01-12",
        "kind": "planned-baseline",
        "releases": [],
    }


def test_settings_and_thresholds(tmp_path: Path) -> None:
    local = ["--data-dir", str(tmp_path / "d")]
    done = hotpatch("release", "settings", "--baseline-months", "3,6,9,12", *local)
    assert done.returncode == 0 and "March, June, September, December" in done.stdout
    done = hotpatch("release", "calendar", "--year", "2026", "--json", *local)
    assert [m["kind"] for m in json.loads(done.stdout)][2] == "planned-baseline"
    done = hotpatch("release", "settings", "--baseline-months", "0,13", *local)
    assert done.returncode == 1 and "baseline month" in done.stderr

    running = ServerProcess(
        tmp_path / "cp", "--tuf-threshold", "root=2", "--tuf-threshold", "timestamp=2"
    )
    try:
        root = json.loads(hotpatch("release", "root", *remote(running)).stdout)
        roles = root["signed"]["roles"]
        assert (roles["root"]["threshold"], len(roles["root"]["keyids"])) == (2, 2)
        assert (roles["timestamp"]["threshold"], len(roles["timestamp"]["keyids"])) == (2, 2)
        assert len(root["signatures"]) == 2
        keys = sorted((tmp_path / "cp" / "keys").glob("*.pem"))
        assert len(keys) == 6 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    finally:
        running.stop()


def test_rotate_keys_on_the_control_plane_host(tmp_path: Path) -> None:
    local = ["--data-dir", str(tmp_path / "d")]
    before = json.loads(hotpatch("release", "root", *local).stdout)
    done = hotpatch("release", "rotate-keys", "timestamp", *local)
    assert done.returncode == 0, done.stderr
    assert "timestamp now signs with 1 new key(s)" in done.stdout
    after = json.loads(hotpatch("release", "root", *local).stdout)
    assert after["signed"]["version"] == before["signed"]["version"] + 1
    old, new = before["signed"]["roles"]["timestamp"], after["signed"]["roles"]["timestamp"]
    assert set(old["keyids"]).isdisjoint(new["keyids"])
    assert list((tmp_path / "d" / "keys" / "retired").glob("*.pem"))
    done = hotpatch("release", "rotate-keys", "everything", *local)
    assert done.returncode == 1 and "everything" in done.stderr
