"""Real upstream security fixes: each bug shows in a live process, the hotpatch removes it there.

For every case of the development corpus the vulnerable release is installed (cached), a fresh
interpreter imports it and builds long-lived objects, the bug is shown, the package built from
the two real releases is applied in that same process, and the bug is gone through the objects
created before the patch; revert brings it back. Cases that must ship as baselines are refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus.cases import CASES, Case
from corpus.envs import ensure_env
from pyhotpatch.build import build
from pyhotpatch.errors import NotHotpatchable
from support import SRC

pytestmark = pytest.mark.corpus
CORPUS = Path(__file__).resolve().parent / "corpus"

_RUNNER = """
import importlib, json, os, sys
import pyhotpatch
check = importlib.import_module("checks." + sys.argv[1])
ctx = check.prepare()
before = check.exploited(ctx)
report = pyhotpatch.apply(sys.argv[2])
after = check.exploited(ctx)
again = pyhotpatch.apply(sys.argv[2])
reverted = pyhotpatch.revert(report["id"])
back = check.exploited(ctx)
print(json.dumps({"before": before, "after": after, "back": back, "report": report,
                  "again": again["already_active"], "pid": os.getpid()}))
"""


def _run(case: Case, package: Path) -> dict[str, object]:
    env_dir = ensure_env(case.distribution, case.vulnerable, case.extra_requirements)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYHOTPATCH")}
    environ["PYTHONPATH"] = os.pathsep.join([str(SRC), str(env_dir), str(CORPUS)])
    done = subprocess.run(
        [sys.executable, "-s", "-c", _RUNNER, case.check, str(package)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, f"{case.key}:\n{done.stdout}\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("case", [c for c in CASES if c.hotpatchable], ids=lambda c: c.key)
def test_fix_applies_to_live_process(case: Case, tmp_path: Path) -> None:
    result = build(
        case.requirement(case.vulnerable),
        case.requirement(case.fixed),
        patch_id="KB9000001",
        cves=(case.cve,),
    )
    package = tmp_path / f"{case.key}.hotpatch"
    result.write(package)
    outcome = _run(case, package)
    assert outcome["before"] is True, "the check must see the bug before the patch"
    assert outcome["after"] is False, f"bug still present after the hotpatch: {outcome['report']}"
    assert outcome["again"] is True, "applying the same package twice is a no-op"
    assert outcome["back"] is True, "revert must return the process to its baseline"


@pytest.mark.parametrize("case", [c for c in CASES if not c.hotpatchable], ids=lambda c: c.key)
def test_unsafe_release_is_refused(case: Case) -> None:
    with pytest.raises(NotHotpatchable) as info:
        build(case.requirement(case.vulnerable), case.requirement(case.fixed))
    assert info.value.reasons
    for reason in info.value.reasons:
        path, line, text = reason.split(":", 2)
        assert path.endswith((".py", ".pem")) and line.isdigit() and text.strip()
