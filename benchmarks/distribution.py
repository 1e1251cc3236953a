"""distribution: publishing into the catalog and fetching through TUF, as the history grows.

A catalog on SQLite (and PostgreSQL when it is reachable) publishes one planned baseline and
then a cumulative hotpatch after another. Each publish is timed whole (rules, rows, new
targets/snapshot/timestamp signed in the same transaction) against storing the same package
in the artifact store alone. Then an agent's ``ReleaseFeed`` fetches the newest hotpatch from
a real server on loopback: a cold refresh plus verified download, a warm one, and a plain
HTTP GET of the same bytes as the baseline. The size of the signed targets metadata per
release shows how the repository grows.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from _common import Report, Table, Target, median, ratio

from catalog_fixtures import Publisher, svc, when
from pyhotpatch.catalog import Catalog
from pyhotpatch.catalog.tufclient import ReleaseFeed
from pyhotpatch.clock import ManualClock
from pyhotpatch.server import create_app

PUBLISH_TARGET_MS = 250.0
FETCH_TARGET_MS = 100.0


def _history(catalog: Catalog, root: Path, releases: int) -> list[float]:
    """Publish a baseline then ``releases`` cumulative hotpatches; seconds per publish."""
    pub = Publisher(catalog, root)
    wheels = root / "wheels"
    base = svc(wheels, "1.0.0")
    catalog.publish(pub.baseline("KB5000000", [base], "2026-01-13"))
    times = []
    for n in range(1, releases + 1):
        fixed = svc(wheels, f"1.0.{n}", f"return x + {n}")
        request = pub.hotpatch(f"KB{5000000 + n}", [(base, fixed)], "2026-02-10")
        started = time.perf_counter()
        catalog.publish(request)
        times.append(time.perf_counter() - started)
    return times


def _store_only(catalog: Catalog, root: Path) -> list[float]:
    package = sorted(root.glob("*.hotpatch"))[-1].read_bytes()
    times = []
    for n in range(20):
        started = time.perf_counter()
        catalog.blobs.put_bytes(package + n.to_bytes(2, "big"))
        times.append(time.perf_counter() - started)
    return times


def _serve(catalog: Catalog) -> tuple[str, uvicorn.Server, threading.Thread]:
    app = create_app(catalog, admin_token="b" * 32, refresh_seconds=3600)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", server, thread


def _fetch(catalog: Catalog, root: Path, kb: str) -> dict[str, float]:
    url, server, thread = _serve(catalog)
    try:
        release = catalog.release(kb)
        artifact = release.artifacts[0]
        trusted = catalog.signing.trusted_root()
        plain = []
        with httpx.Client(base_url=url) as client:
            target = (
                f"/hotpatch/tuf/targets/{release.product}/{kb}/{artifact.sha256}.{artifact.name}"
            )
            for _ in range(10):
                started = time.perf_counter()
                assert client.get(target).status_code == 200
                plain.append(time.perf_counter() - started)
        cold, warm = [], []
        for n in range(5):
            feed = ReleaseFeed(url, root / f"agent-{n}", trusted_root=trusted)
            started = time.perf_counter()
            feed.refresh()
            feed.fetch_hotpatch(kb, release.baseline or "")
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            again = ReleaseFeed(url, root / f"agent-{n}")
            again.refresh()
            again.fetch_hotpatch(kb, release.baseline or "")
            warm.append(time.perf_counter() - started)
        return {"plain": median(plain), "cold": median(cold), "warm": median(warm)}
    finally:
        server.should_exit = True
        thread.join(10)


def _databases(work: Path) -> list[tuple[str, str, object]]:
    found: list[tuple[str, str, object]] = [("sqlite", f"sqlite:///{work / 'sqlite.db'}", None)]
    try:
        from databases import postgres_database

        manager = postgres_database()
        url = manager.__enter__()
        found.append(("postgresql", url, manager))
    except BaseException as exc:  # pytest.skip raises an exception derived from BaseException
        print(f"note: PostgreSQL not measured: {exc}")
    return found


def run(quick: bool) -> Report:
    releases = 10 if quick else 60
    report = Report("distribution")
    table = Table(
        f"distribution: publish a cumulative hotpatch after N earlier ones (N up to {releases})",
        [
            "database",
            "publish median",
            "first 10",
            "last 10",
            "store only",
            "ratio",
            "targets.json / release",
        ],
    )
    fetch_table = Table(
        "distribution: an agent fetches the newest hotpatch from a real server (median of 5)",
        ["database", "plain GET", "TUF cold", "TUF warm", "cold / plain", "warm / plain"],
    )
    with tempfile.TemporaryDirectory(prefix="bench-distribution-") as tmp:
        work = Path(tmp)
        for name, url, manager in _databases(work):
            root = work / name
            root.mkdir()
            catalog = Catalog.open(root / "data", url=url, clock=ManualClock(when("2026-12-01")))
            try:
                times = _history(catalog, root, releases)
                store = _store_only(catalog, root)
                size = len(
                    catalog.signing.metadata(f"{catalog.signing.version('targets')}.targets.json")
                    or b""
                )
                per_release = size / (releases + 1)
                table.rows.append(
                    [
                        name,
                        f"{median(times) * 1000:.1f} ms",
                        f"{median(times[:10]) * 1000:.1f} ms",
                        f"{median(times[-10:]) * 1000:.1f} ms",
                        f"{median(store) * 1000:.2f} ms",
                        ratio(median(times), median(store)),
                        f"{per_release:.0f} B",
                    ]
                )
                fetched = _fetch(catalog, root, f"KB{5000000 + releases}")
                fetch_table.rows.append(
                    [
                        name,
                        f"{fetched['plain'] * 1000:.1f} ms",
                        f"{fetched['cold'] * 1000:.1f} ms",
                        f"{fetched['warm'] * 1000:.1f} ms",
                        ratio(fetched["cold"], fetched["plain"]),
                        ratio(fetched["warm"], fetched["plain"]),
                    ]
                )
                last = median(times[-10:]) * 1000
                report.targets.append(
                    Target(
                        f"publish after {releases} releases ({name})",
                        f"< {PUBLISH_TARGET_MS:.0f} ms",
                        f"{last:.1f} ms",
                        last < PUBLISH_TARGET_MS,
                    )
                )
                report.targets.append(
                    Target(
                        f"verified fetch, cold ({name})",
                        f"< {FETCH_TARGET_MS:.0f} ms",
                        f"{fetched['cold'] * 1000:.1f} ms",
                        fetched["cold"] * 1000 < FETCH_TARGET_MS,
                    )
                )
                report.data[name] = {
                    "publish_s": times,
                    "store_s": store,
                    "fetch_s": fetched,
                    "targets_bytes": size,
                }
            finally:
                catalog.close()
                if manager is not None:
                    manager.__exit__(None, None, None)  # type: ignore[attr-defined]
    report.tables += [table, fetch_table]
    report.notes.append(
        "targets metadata lists every artifact ever published, so it grows linearly; hashed-bin "
        "delegations would bound it for catalogs of many thousands of releases"
    )
    return report
