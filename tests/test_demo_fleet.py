"""``hotpatch demo``, the main job, end to end: a real fleet patched by the orchestrator.

The command runs as a user would run it, at twice its default speed and with a short soak,
so that the suite stays short: the control plane on SQLite, six real agents with their
services under load, a hotpatch and then a baseline rolled out availability-first. What it
prints must show the story held, and nothing it started may outlive it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HOTPATCH = [sys.executable, "-c", "from pyhotpatch.cli import main; main()"]


def _alive_under(root: Path) -> list[str]:
    """Command lines of running processes that mention ``root`` (agents, workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "status").read_text()
        except OSError:
            continue
        if str(root) in command and "State:\tZ" not in state:
            found.append(command)
    return found


def test_the_demo_patches_a_fleet_availability_first_without_failed_requests(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYHOTPATCH", "HOTPATCH_"))}
    done = subprocess.run(
        [*HOTPATCH, "demo", "--workdir", str(tmp_path), "--speed", "60", "--soak-hours", "0.1"],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**env, "COLUMNS": "160"},
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert re.search(r"portal: http://127\.0\.0\.1:\d+/portal", out), out
    assert "leaks a secret on 6 of 6 machines" in out
    assert "now refused on 6 of 6 machines" in out
    hotpatch = re.search(
        r"KB5070101 \(hotpatch\): 6 machines patched .*services restarted: (\d+); "
        r"requests: ([\d,]+) served, (\d+) failed",
        out,
    )
    assert hotpatch is not None, out
    assert hotpatch[1] == "0" and hotpatch[3] == "0", out
    assert int(hotpatch[2].replace(",", "")) > 100, out
    baseline = re.search(
        r"KB5070110 \(baseline\): 6 machines patched .*services restarted: (\d+)", out
    )
    assert baseline is not None and baseline[1] == "6", out
    assert "rollout of KB5070101 completed" in out and "rollout of KB5070110 completed" in out
    # the baseline is cumulative: once published, it supersedes the hotpatch's rollout
    assert re.search(r"rollout \d+ of KB5070101: superseded", out), out
    assert re.search(r"rollout \d+ of KB5070110: completed", out), out

    # DevTest before Production in every region: the order machines got the hotpatch
    part = out.split("1. hotpatch", 1)[1].split("2. baseline", 1)[0]
    order = re.findall(
        r"(\S+)\s+\((DevTest|Production), local [\d:]+\): \S+ \S+, hotpatch KB", part
    )
    names = [name for name, _ in order]
    assert names.index("web-eus-1") < names.index("web-eus-2"), out
    assert names.index("app-wus-1") < min(names.index("app-wus-2"), names.index("app-wus-3")), out

    assert _alive_under(tmp_path) == []


def test_ctrl_c_stops_the_fleet_and_the_control_plane(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYHOTPATCH", "HOTPATCH_"))}
    demo = subprocess.Popen(
        [*HOTPATCH, "demo", "--workdir", str(tmp_path), "--speed", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    seen = []
    assert demo.stdout is not None
    for line in demo.stdout:  # until the fleet serves, under load
        seen.append(line)
        if "machines serving demo app" in line:
            break
    assert any("machines serving demo app" in line for line in seen), "".join(seen)
    assert len(_alive_under(tmp_path)) >= 6
    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130, "".join(seen) + rest
    assert "interrupted: stopping the fleet and the control plane" in rest
    assert _alive_under(tmp_path) == []
