"""Seeded differential tests: random hotpatchable edits, patched process vs fresh import.

For every seed ``generated.mutate.generate`` writes a base package and the package after K
random hotpatchable edits; the builder makes the hotpatch. In a subprocess of each CPython the
base package is imported, references are captured (bound methods, instances, closures,
``from`` copies in a second module, a registry dict, a partial), the hotpatch is applied and a
probe runs through them; a fresh subprocess imports the fixed package and runs the same probe.
Both must agree, and a revert must bring the probe back to the base results. Per seed the
patch arrives directly, as a cumulative package replacing an earlier one (``chain``), or
before the module is imported (``late``, via the import hook). Seeds that also carry an edit
the builder must refuse check its ``path:line: reason``.

``PYHOTPATCH_GENERATED_SEEDS=N`` runs seeds 0..N-1 (default 80, batched 10 per subprocess);
``PYHOTPATCH_GENERATED_ONLY=3,17`` runs just those. ``python tests/generated/mutate.py SEED``
prints a case's edits and diff.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from generated.mutate import HOTPATCHABLE_KINDS, REFUSAL_KINDS, Case, generate
from pyhotpatch.build import build
from pyhotpatch.errors import NotHotpatchable, SourceError
from support import make_release, run_json

RUNNER = Path(__file__).resolve().parent / "generated" / "runner.py"
BATCH = 10


def _seeds() -> list[int]:
    only = os.environ.get("PYHOTPATCH_GENERATED_ONLY", "").replace(",", " ").split()
    if only:
        return [int(s) for s in only]
    return list(range(int(os.environ.get("PYHOTPATCH_GENERATED_SEEDS", "80"))))


def _label(seeds: list[int]) -> str:
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return f"seeds{seeds[0]}-{seeds[-1]}"
    return "seeds" + "_".join(map(str, seeds))


SEEDS = _seeds()
BATCHES = [SEEDS[i : i + BATCH] for i in range(0, len(SEEDS), BATCH)]


@dataclass
class Built:
    """A generated case on disk, with the hotpatches built from it (or why there are none)."""

    case: Case
    base: Path
    final: Path
    mid: Path | None
    site: Path
    hotpatch: Path | None
    mid_hotpatch: Path | None
    problem: str | None


def _build_package(
    old: Path, new: Path, out: Path, patch_id: str
) -> tuple[Path | None, str | None]:
    """Build ``old`` -> ``new`` into ``out``: (package or None if no code changed, problem)."""
    try:
        build(str(old), str(new), patch_id=patch_id).write(out)
    except NotHotpatchable as exc:
        return None, f"builder refused hotpatchable edits ({new.name}):\n  " + "\n  ".join(
            exc.reasons
        )
    except SourceError as exc:
        if "changes no code" in str(exc):
            return None, None
        return None, f"builder failed ({new.name}): {exc}"
    return out, None


class Workspace:
    """Generates, writes and builds each seed once per session (builds do not depend on CPython)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[int, Built] = {}

    def get(self, seed: int) -> Built:
        if seed not in self.built:
            self.built[seed] = self._build(seed)
        return self.built[seed]

    def _build(self, seed: int) -> Built:
        case = generate(seed)
        where = self.root / f"seed{seed}"
        base = make_release(where, case.package, "1.0", case.base)
        final = make_release(where, case.package, "1.2", case.final)
        # the distribution's metadata, so a package applied before the import finds it installed
        info = where / "site" / f"{case.package}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {case.package}\nVersion: 1.0\n"
        )
        hotpatch, problem = _build_package(base, final, where / "fix.hotpatch", f"KB{seed}")
        mid = mid_hotpatch = None
        if case.mid is not None:
            mid = make_release(where, case.package, "1.1", case.mid)
            mid_hotpatch, mid_problem = _build_package(
                base, mid, where / "mid.hotpatch", f"KB{seed}.mid"
            )
            problem = problem or mid_problem
        return Built(case, base, final, mid, where / "site", hotpatch, mid_hotpatch, problem)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("generated"))


def _run(python: str, mode: str, roots: dict[int, Path], built: list[Built], tmp: Path) -> Any:
    """Run the cases of ``built`` whose seed has a root, in ``mode``; results by seed."""
    cases = [
        {
            "seed": b.case.seed,
            "package": b.case.package,
            "root": str(roots[b.case.seed]),
            "site": str(b.site),
            "flow": b.case.flow,
            "hotpatch": str(b.hotpatch) if b.hotpatch else None,
            "mid_hotpatch": str(b.mid_hotpatch) if b.mid_hotpatch else None,
            "capture": b.case.capture,
            "probe": b.case.probe,
        }
        for b in built
        if b.case.seed in roots
    ]
    if not cases:
        return {}
    job = tmp / f"{mode}-{len(list(tmp.iterdir()))}.json"
    job.write_text(json.dumps({"mode": mode, "cases": cases}))
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['runner', {str(job)!r}]\n"
        f"runpy.run_path({str(RUNNER)!r}, run_name='__main__')\n"
    )
    result = run_json(python, code, timeout=120, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert isinstance(result, dict)
    return {int(k): v for k, v in result.items()}


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _differences(left: dict[str, Any], right: dict[str, Any], names: tuple[str, str]) -> list[str]:
    out = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            out.append(
                f"    {key}: {names[0]}={_short(left.get(key))} {names[1]}={_short(right.get(key))}"
            )
    return out


def _compare(case: Case, got: dict[str, Any], want: dict[str, Any], what: str) -> str | None:
    diff = _differences(got, want, ("patched", "fresh"))
    if not diff:
        return None
    return f"{case.describe()}\n  {what}:\n" + "\n".join(diff)


def _check(b: Built, got: dict[str, Any], fresh: dict[str, dict[str, Any]]) -> list[str]:
    """Everything wrong with one case's patched run, given the fresh imports' probes."""
    case = b.case
    problems: list[str | None] = []
    crashes = [r["crash"] for r in (got, *fresh.values()) if "crash" in r]
    if crashes:
        return [f"{case.describe()}\n  runner crashed:\n" + "\n".join(crashes)]
    for key in ("apply_error", "revert_error"):
        if key in got:
            problems.append(f"{case.describe()}\n  {key}: {got[key]}")
    if got.get("active_after_revert") is not None:
        problems.append(
            f"{case.describe()}\n  still active after revert: {got['active_after_revert']}"
        )
    report = got.get("report", {})
    chained = case.flow == "chain" and b.mid_hotpatch and b.hotpatch and "patched" in got
    if chained and report.get("replaced") != f"KB{case.seed}.mid":
        problems.append(
            f"{case.describe()}\n  cumulative package did not replace the mid one: {report}"
        )
    late = case.flow == "late" and "report" in got
    if late and report.get("pending_modules") != [f"{case.package}.core"]:
        problems.append(f"{case.describe()}\n  applied before import, yet not pending: {report}")
    if "mid" in got:
        problems.append(
            _compare(
                case,
                got["mid"],
                fresh["mid"]["fresh"],
                f"after base -> mid ({got.get('mid_report')}) the process differs "
                "from a fresh import of mid",
            )
        )
    if "patched" in got:
        problems.append(
            _compare(
                case,
                got["patched"],
                fresh["final"]["fresh"],
                f"patched process ({report}) differs from a fresh import of the fixed release",
            )
        )
    if "reverted" in got:
        base = got["base"] if "base" in got else fresh["base"]["fresh"]
        undo = _differences(got["reverted"], base, ("reverted", "base"))
        if undo:
            problems.append(
                f"{case.describe()}\n  revert did not restore the base behaviour:\n"
                + "\n".join(undo)
            )
    return [p for p in problems if p]


@pytest.mark.parametrize("seeds", BATCHES, ids=_label)
def test_patched_process_matches_fresh_import(
    python: str, seeds: list[int], workspace: Workspace, tmp_path: Path
) -> None:
    built = [workspace.get(seed) for seed in seeds]
    problems = [f"{b.case.describe()}\n  {b.problem}" for b in built if b.problem]
    runnable = [b for b in built if not b.problem]
    patched = _run(python, "patch", {b.case.seed: b.base for b in runnable}, runnable, tmp_path)
    fresh = {
        "final": _run(
            python, "fresh", {b.case.seed: b.final for b in runnable}, runnable, tmp_path
        ),
        "mid": _run(
            python, "fresh", {b.case.seed: b.mid for b in runnable if b.mid}, runnable, tmp_path
        ),
        "base": _run(
            python,
            "fresh",
            {b.case.seed: b.base for b in runnable if b.case.flow == "late"},
            runnable,
            tmp_path,
        ),
    }
    observable = 0
    for b in runnable:
        seed = b.case.seed
        got = patched[seed]
        mine = {k: v[seed] for k, v in fresh.items() if seed in v}
        problems += _check(b, got, mine)
        base = got.get("base") or mine.get("base", {}).get("fresh")
        observable += base is not None and mine["final"].get("fresh") != base
    if problems:
        pytest.fail(f"{len(problems)} problem(s):\n\n" + "\n\n".join(problems), pytrace=False)
    if len(runnable) >= 5:
        # the edits must be visible to the probe, or this test could not fail
        assert observable >= len(runnable) // 2, f"only {observable} seeds changed the probe"


def _reason_problem(case: Case, reasons: list[str]) -> str | None:
    refusal = case.refusal
    assert refusal is not None
    where = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<why>.+)$", re.S)
    wanted = f"{refusal.path}:{refusal.first}-{refusal.last}"
    hits = 0
    for reason in reasons:
        match = where.match(reason)
        if match is None:
            return f"reason not in path:line: reason form: {reason!r}"
        line = int(match["line"])
        if match["path"] != refusal.path or not refusal.first <= line <= refusal.last:
            return f"reason {reason!r} does not point at the refused edit ({wanted})"
        hits += refusal.keyword.lower() in match["why"].lower()
    if not hits:
        return f"no reason mentions {refusal.keyword!r}: {reasons}"
    return None


def test_refused_edits_name_the_edited_line(workspace: Workspace) -> None:
    cases = [workspace.get(seed).case for seed in SEEDS]
    refused = [c for c in cases if c.refusal is not None]
    if len(SEEDS) >= 20:
        assert len(refused) >= 3, "too few refusal cases to test anything"
    problems = []
    for case in refused:
        assert case.refusal is not None
        built = workspace.get(case.seed)
        target = make_release(
            built.base.parent / "refused", case.package, "1.2", case.refusal.files
        )
        try:
            build(str(built.base), str(target))
        except NotHotpatchable as exc:
            problem = _reason_problem(case, exc.reasons)
            if problem:
                problems.append(f"{case.describe()}\n  {problem}")
        else:
            problems.append(
                f"{case.describe()}\n  built a hotpatch; NotHotpatchable expected "
                f"({case.refusal.kind})"
            )
    if problems:
        pytest.fail(f"{len(problems)} problem(s):\n\n" + "\n\n".join(problems), pytrace=False)


def test_generator_is_seeded_and_covers_every_edit_kind() -> None:
    assert generate(7) == generate(7)
    assert generate(7).final != generate(8).final
    kinds: set[str] = set()
    refusals: set[str] = set()
    flows: set[str] = set()
    for seed in range(150):
        case = generate(seed)
        assert case.final != case.base, f"seed {seed} made no edit"
        assert len(case.kinds) == len(case.edits) >= 1
        kinds.update(case.kinds)
        if case.refusal is not None:
            refusals.add(case.refusal.kind)
        flows.add(case.flow)
        if case.flow == "chain":
            assert case.mid is not None and 0 < case.mid_edits < len(case.edits)
    assert kinds == set(HOTPATCHABLE_KINDS)
    assert refusals == set(REFUSAL_KINDS)
    assert flows == {"direct", "chain", "late"}
