"""The benchmark runner still works: a quick run of the pause benchmark prints its figures."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from support import ROOT


def test_quick_pause_benchmark_prints_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--json",
            str(out),
            "pause",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "=== pause" in text and "crashed" not in text, text + done.stderr
    figure = r"\d+\.\d{3} / \d+\.\d{3}"  # median / p95
    for size in (1, 10, 100):
        assert re.search(rf"^{size}\s+{figure}\s+{figure}\s", text, re.M), text
    assert re.search(
        r"^pause\s+longest stall during apply, 10 functions .*(PASS|FAIL)$", text, re.M
    ), text
    (report,) = json.loads(out.read_text())
    sizes = report["data"]["sizes"]
    assert sorted(sizes, key=int) == ["1", "10", "100"]
    for runs in sizes.values():
        assert len(runs["pause"]) == 3 and all(v > 0 for v in runs["pause"])
        assert all(v > 0 for v in runs["gap_base"])


def test_quick_distribution_benchmark_prints_figures(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--json",
            str(out),
            "distribution",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "=== distribution" in done.stdout and "crashed" not in done.stdout, (
        done.stdout + done.stderr
    )
    assert re.search(r"^sqlite\s+\d+\.\d ms\s+\d+\.\d ms", done.stdout, re.M), done.stdout
    (report,) = json.loads(out.read_text())
    assert len(report["data"]["sqlite"]["publish_s"]) == 10
    assert report["data"]["sqlite"]["fetch_s"]["cold"] > 0
