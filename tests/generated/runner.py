"""Run generated cases in this interpreter and print their probe results as one JSON line.

Usage: ``python runner.py JOB.json``. The job names a mode and a list of cases. In
``fresh`` mode each case's package (whichever release ``root`` holds) is imported,
references are captured and the probe runs once (``fresh``). In ``patch`` mode the BASE
package is patched following the case's flow:

- ``direct``: import, capture references, probe (``base``), apply base -> final, probe
  through the same references (``patched``), revert, probe (``reverted``);
- ``chain``: like ``direct``, but base -> mid is applied first and probed (``mid``), and the
  cumulative base -> final package then replaces it;
- ``late``: apply base -> final before the module is imported (the distribution's metadata
  sits in ``site``), import, capture, probe (``patched``), revert, probe (``reverted``).

Cases run one after the other in one process; each imports its own package.

Stdlib only (plus ``pyhotpatch`` from ``PYTHONPATH``): it runs under every supported CPython.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

XS = (-3, -1, 0, 1, 2, 5, 9)
TEXTS = ("ab1 abc22 Xy x9y", "Hello World 42", "ababab cab9 zz", "no digits", "x1y xy 7 AbC")


def plain(value: Any) -> Any:
    """A JSON-able, process-independent rendering of a probe value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return ["?", type(value).__name__]


def guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or the exception's type name."""
    try:
        return plain(fn(*args))
    except Exception as exc:  # an exception is a probe result too
        return ["!", type(exc).__name__]


def each(fn: Any, inputs: Any = XS) -> list[Any]:
    """``fn`` applied to every input, each call guarded."""
    return [guarded(fn, x) for x in inputs]


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends to its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended")


def capture(case: dict[str, Any], core: Any, user: Any) -> dict[str, Any]:
    """Evaluate the case's capture expressions: the references held before any patch."""
    refs: dict[str, Any] = {}
    ns = {"core": core, "user": user, "refs": refs, "functools": functools}
    for name, expr in case["capture"]:
        try:
            refs[name] = eval(expr, ns)
        except Exception as exc:
            refs[name] = ["!", type(exc).__name__]
    return refs


def probe(case: dict[str, Any], core: Any, user: Any, refs: dict[str, Any]) -> dict[str, Any]:
    """Evaluate every probe expression."""
    ns = {
        "core": core,
        "user": user,
        "refs": refs,
        "each": each,
        "guarded": guarded,
        "drive": drive,
        "XS": XS,
        "TEXTS": TEXTS,
        "functools": functools,
    }
    out = {}
    for label, expr in case["probe"]:
        out[label] = guarded(lambda e=expr: eval(e, ns))
    return out


def _import(case: dict[str, Any]) -> tuple[Any, Any]:
    core = importlib.import_module(case["package"] + ".core")
    user = importlib.import_module(case["package"] + ".user")
    if not str(core.__file__).startswith(case["root"]):
        raise RuntimeError(f"imported {core.__file__}, expected a module under {case['root']}")
    return core, user


def _apply(result: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    """Apply the package at ``path``; record its report (or error) under ``key``."""
    import pyhotpatch

    try:
        report = pyhotpatch.apply(Path(path).read_bytes())
    except pyhotpatch.HotpatchError as exc:
        result["apply_error"] = f"{key}: {type(exc).__name__}: {exc}"
        return None
    fields = (
        "id",
        "replaced",
        "functions",
        "definitions",
        "rebuilt",
        "caches_cleared",
        "already_patched",
        "pending_modules",
    )
    result[key] = {k: report.get(k) for k in fields}
    return report


def _revert(result: dict[str, Any], patch_id: str) -> bool:
    import pyhotpatch

    try:
        pyhotpatch.revert(patch_id)
    except pyhotpatch.HotpatchError as exc:
        result["revert_error"] = f"{type(exc).__name__}: {exc}"
        return False
    result["active_after_revert"] = pyhotpatch.status()["active"]
    return True


def run_case(case: dict[str, Any], mode: str) -> dict[str, Any]:
    """One case in ``mode``; see the module docstring."""
    if mode == "fresh":
        core, user = _import(case)
        return {"fresh": probe(case, core, user, capture(case, core, user))}
    result: dict[str, Any] = {}
    if case["flow"] == "late":
        # the package goes in first; the import hook must patch the module as it loads
        report = _apply(result, "report", case["hotpatch"])
        if report is None:
            return result
        core, user = _import(case)
        refs = capture(case, core, user)
        result["patched"] = probe(case, core, user, refs)
        if _revert(result, report["id"]):
            result["reverted"] = probe(case, core, user, refs)
        return result
    core, user = _import(case)
    refs = capture(case, core, user)
    result["base"] = probe(case, core, user, refs)
    if case["flow"] == "chain":
        if case["mid_hotpatch"] is None:  # the first edits changed no code
            result["mid"] = result["base"]
        else:
            if _apply(result, "mid_report", case["mid_hotpatch"]) is None:
                return result
            result["mid"] = probe(case, core, user, refs)
    if case["hotpatch"] is None:  # the edits cancel out: nothing to apply
        result["patched"] = result["reverted"] = result["base"]
        return result
    report = _apply(result, "report", case["hotpatch"])
    if report is None:
        return result
    result["patched"] = probe(case, core, user, refs)
    if _revert(result, report["id"]):
        result["reverted"] = probe(case, core, user, refs)
    return result


def main(argv: list[str]) -> int:
    """Run the job file named by ``argv[1]``; print one JSON object keyed by seed."""
    job = json.loads(Path(argv[1]).read_text())
    out: dict[str, Any] = {}
    if job["mode"] == "patch":
        import pyhotpatch

        # as in a service: the import hook is what patches modules imported after an apply
        pyhotpatch.enable(control=False)
    for case in job["cases"]:
        paths = [case["root"], *([case["site"]] if case.get("site") else [])]
        sys.path[:0] = paths
        try:
            out[str(case["seed"])] = run_case(case, job["mode"])
        except BaseException:  # one broken case must not hide the others
            out[str(case["seed"])] = {"crash": f"{job['mode']} mode: {traceback.format_exc()}"}
        finally:
            for path in paths:
                sys.path.remove(path)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
