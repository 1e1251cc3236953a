"""The in-process engine: one active hotpatch per process, applied and reverted atomically.

Invariants:
- Planning happens first and changes nothing; a package that does not match
  the running baseline raises before any object is touched.
- The swap writes every slot in one batch; if any write or rebuild fails,
  every slot is restored and the process is exactly as before.
- A cumulative package replaces the active one in the same batch: slots the
  new package no longer touches go back to their baseline values.
- Only one apply or revert runs at a time; a second one gets ``BusyError``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from types import FunctionType, ModuleType

from pyhotpatch.errors import ApplyError, BaselineMismatch, BusyError, NotActive
from pyhotpatch.runtime._log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import CodeType
    from typing import Any

    from pyhotpatch.package import ModulePatch, Package
    from pyhotpatch.runtime._plan import Assign, ModulePlan

# Planning needs the package reader and the compiler helpers; they are imported on the first
# apply, not when the runtime is enabled, so that being ready costs almost nothing.


class ActivePatch:
    """The hotpatch currently applied in this process and how to undo it."""

    def __init__(
        self,
        package: Package,
        assigns: list[Assign],
        caches: list[Any],
        pending: dict[str, ModulePatch],
        functions: int,
        nested: list[tuple[CodeType, CodeType]],
    ) -> None:
        self.package = package
        #: every target module, patched again whenever it is (re)imported
        self.targets = {m.name: m for t in package.manifest.targets for m in t.modules}
        #: modules imported before the patch; later ones may hold copies of patched values
        self.modules_before = frozenset(sys.modules)
        #: fixed nested code -> (fixed, baseline), to undo closures made while active
        self.nested = {id(new): (new, old) for old, new in nested}
        self.assigns = assigns
        self.caches = caches
        self.pending = pending
        self.applied_at = time.time()
        self.functions = functions
        self.errors: list[str] = []


class Engine:
    """Applies, replaces and reverts hotpatches in the running interpreter."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.active: ActivePatch | None = None
        self._draining: list[CodeType] = []

    def before_fork(self) -> None:
        """Hold forks until a running apply or revert has finished (no half-applied child)."""
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        """Let the parent go on after a fork."""
        self._lock.release()

    def reset_after_fork(self) -> None:
        """Give a forked child fresh locks; the active patch is inherited as it is."""
        self._lock = threading.RLock()

    def apply(self, source: str | os.PathLike[str] | bytes | Package) -> dict[str, Any]:
        """Apply a package (replacing the active one); return a report of what changed."""
        from pyhotpatch.package import Package, read_package

        with responsive():
            package = source if isinstance(source, Package) else read_package(source)
        if not self._lock.acquire(blocking=False):
            raise BusyError("another apply or revert is in progress in this process")
        try:
            return self._apply(package)
        finally:
            self._lock.release()

    def revert(self, patch_id: str) -> dict[str, Any]:
        """Return the process to its baseline by undoing the active hotpatch ``patch_id``."""
        if not self._lock.acquire(blocking=False):
            raise BusyError("another apply or revert is in progress in this process")
        try:
            active = self.active
            if active is None or active.package.manifest.id != patch_id:
                current = active.package.manifest.id if active else "none"
                raise NotActive(f"hotpatch {patch_id} is not active here (active: {current})")
            from pyhotpatch.runtime._plan import Assign

            started = time.perf_counter()
            with responsive():
                _adopt_strays(active)
            batch = [Assign(a.target, a.attr, a.old, a.new) for a in active.assigns]
            _commit(batch, [])
            _clear(active.caches)
            pause = time.perf_counter() - started
            self._drain([a.old for a in batch if a.attr == "__code__"])
            self.active = None
            logger().info("hotpatch %s reverted in %.3f ms", patch_id, pause * 1e3)
            return {"id": patch_id, "reverted": True, "pause_ms": round(pause * 1e3, 4)}
        finally:
            self._lock.release()

    def _apply(self, package: Package) -> dict[str, Any]:
        from pyhotpatch.runtime._plan import View, plan_module, plan_order

        manifest = package.manifest
        previous = self.active
        if previous is not None and previous.package.digest == package.digest:
            return {"id": manifest.id, "already_active": True, "pause_ms": 0.0}
        started = time.perf_counter()
        plans: list[ModulePlan] = []
        pending: dict[str, ModulePatch] = {}
        with responsive():
            if previous is not None:
                _adopt_strays(previous)
            view = View(previous.assigns if previous else ())
            shared: dict[str, dict[str, Any]] = {}
            for target in manifest.targets:
                loaded = [m for m in target.modules if m.name in sys.modules]
                _check_distribution(target.distribution, target.baseline_version, bool(loaded))
                for module_patch in plan_order(target.modules, package):
                    module = sys.modules.get(module_patch.name)
                    if not isinstance(module, ModuleType):
                        pending[module_patch.name] = module_patch
                        continue
                    plans.append(plan_module(module, module_patch, package, view, True, shared))
        # the swap below runs with the normal switch interval: it takes microseconds, and
        # no other thread should run between its steps
        prepared = time.perf_counter()
        new_assigns = [a for p in plans for a in p.assigns]
        batch = _net(previous.assigns if previous else [], new_assigns)
        rebuilt = _commit(batch, [r for p in plans for r in p.rebuilds])
        caches = [c for p in plans for c in p.caches]
        _clear(caches + (previous.caches if previous else []))
        swapped = time.perf_counter()
        self._drain([a.old for a in batch if a.attr == "__code__"])
        functions = sum(p.functions for p in plans)
        self.active = ActivePatch(
            package,
            new_assigns + rebuilt,
            caches,
            pending,
            functions,
            [pair for p in plans for pair in p.nested],
        )
        if pending:
            from pyhotpatch.runtime import _importhook

            _importhook.install(self)
        report = {
            "id": manifest.id,
            "title": manifest.title,
            "digest": package.digest,
            "already_active": False,
            "replaced": previous.package.manifest.id if previous else None,
            "modules": [p.name for p in plans],
            "pending_modules": sorted(pending),
            "functions": functions,
            "already_patched": sum(p.skipped for p in plans),
            "definitions": sum(1 for a in new_assigns if a.attr not in _CODE_SLOTS),
            "rebuilt": len(rebuilt),
            "caches_cleared": len(caches),
            "prepare_ms": round((prepared - started) * 1e3, 4),
            "pause_ms": round((swapped - prepared) * 1e3, 4),
        }
        logger().info("hotpatch %s applied: %s", manifest.id, report)
        return report

    def _drain(self, codes: list[CodeType]) -> None:
        """Track code the last swap replaced, keeping earlier swaps' unfinished drains."""
        known = {id(c) for c in self._draining}
        self._draining += [c for c in codes if id(c) not in known]

    def targets(self) -> dict[str, ModulePatch]:
        """Modules the active patch applies to when they are imported (again)."""
        return self.active.targets if self.active is not None else {}

    def patch_imported(self, module: ModuleType) -> None:
        """Apply the active patch to a target module that was just imported."""
        from pyhotpatch.runtime._plan import View, plan_module

        with self._lock:
            active = self.active
            if active is None or module.__name__ not in active.targets:
                return
            module_patch = active.targets[module.__name__]
            active.pending.pop(module.__name__, None)
            try:
                plan = plan_module(
                    module, module_patch, active.package, View(active.assigns), False
                )
                rebuilt = _commit(plan.assigns, plan.rebuilds)
                _clear(plan.caches)
            except Exception as exc:
                message = f"{module.__name__}: imported after install but not patched: {exc}"
                active.errors.append(message)
                logger().error("hotpatch %s: %s", active.package.manifest.id, message)
                return
            active.assigns += plan.assigns + rebuilt
            active.caches += plan.caches
            active.nested.update({id(new): (new, old) for old, new in plan.nested})
            active.functions += plan.functions

    def status(self) -> dict[str, Any]:
        """What is active here and which threads and generators still run replaced code."""
        active = self.active
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "argv": list(sys.argv),
            "active": None,
            "transition": self.transition(),
        }
        if active is not None:
            manifest = active.package.manifest
            info["active"] = {
                "id": manifest.id,
                "title": manifest.title,
                "classification": manifest.classification,
                "digest": active.package.digest,
                "applied_at": active.applied_at,
                "functions": active.functions,
                "pending_modules": sorted(active.pending),
                "errors": list(active.errors),
                "targets": [
                    {
                        "distribution": t.distribution,
                        "baseline_version": t.baseline_version,
                        "fixed_version": t.fixed_version,
                    }
                    for t in manifest.targets
                ],
            }
        return info

    def transition(self) -> dict[str, Any]:
        """Report frames and suspended generators that still execute replaced code."""
        old = {id(c): c for c in self._draining}
        if not old:
            return {"complete": True, "threads": [], "suspended": 0}
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        threads = []
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            f: Any = frame
            while f is not None:
                if id(f.f_code) in old and f.f_code is old[id(f.f_code)]:
                    threads.append(
                        {"thread": names.get(ident, str(ident)), "function": _qual(f.f_code)}
                    )
                    break
                f = f.f_back
        suspended = 0
        for obj in gc.get_objects():
            attr = _SUSPENDABLE.get(type(obj).__name__)
            suspended_frame = getattr(obj, attr, None) if attr else None
            if suspended_frame is not None and id(suspended_frame.f_code) in old:
                suspended += 1
        complete = not threads and not suspended
        if complete:
            self._draining = []
        return {"complete": complete, "threads": threads, "suspended": suspended}


_SWITCH_INTERVAL = 0.0002  # seconds, while the engine works; CPython's default is 0.005


@contextlib.contextmanager
def responsive() -> Iterator[None]:
    """Let application threads take the GIL back quickly while the engine reads and plans.

    Reading a package and planning hold the GIL in many short steps; with CPython's
    default 5 ms switch interval a request thread could wait that long for each. A
    short interval bounds the stall it sees, and the cyclic collector waits until the
    engine is done; both are restored after.
    """
    interval = sys.getswitchinterval()
    collecting = gc.isenabled()
    sys.setswitchinterval(min(interval, _SWITCH_INTERVAL))
    gc.disable()  # a full collection triggered by parsing would stall every thread at once
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        sys.setswitchinterval(interval)


_CODE_SLOTS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__bases__"})
#: values that can be the same object by coincidence (interned), never tracked as copies
_SHARED_VALUES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)
_SUSPENDABLE = {"generator": "gi_frame", "coroutine": "cr_frame", "async_generator": "ag_frame"}


def _qual(code: CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))


def _adopt_strays(active: ActivePatch) -> None:
    """Record what the active patch reached after it was applied, so undoing it covers that too.

    Closures made from fixed nested code, and ``from m import NAME`` copies of replaced
    objects taken by modules imported while the patch was active, are added to its
    assignments with their baseline values.
    """
    from pyhotpatch.runtime._plan import MISSING, Assign

    known = {a.key for a in active.assigns}
    extra: list[Assign] = []
    if active.nested:
        for obj in gc.get_objects():
            if type(obj) is FunctionType:
                pair = active.nested.get(id(obj.__code__))
                if (
                    pair is not None
                    and obj.__code__ is pair[0]
                    and (id(obj), "__code__") not in known
                ):
                    extra.append(Assign(obj, "__code__", pair[0], pair[1]))
    copies: dict[int, list[Assign]] = {}
    for a in active.assigns:
        if a.attr not in _CODE_SLOTS and a.new is not MISSING and a.old is not MISSING:
            copies.setdefault(id(a.new), []).append(a)
    if copies:
        for module_name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if module_name in active.modules_before or not isinstance(namespace, dict):
                continue
            for name, value in list(namespace.items()):
                if (id(module), name) in known:
                    continue
                # small ints and strings can be the same object by coincidence: for those,
                # only a copy under the same name counts
                same = [a for a in copies.get(id(value), ()) if a.new is value]
                if isinstance(value, _SHARED_VALUES):
                    same = [a for a in same if a.attr == name]
                if same:
                    extra.append(Assign(module, name, value, same[0].old))
    active.assigns += extra


def _net(previous: list[Assign], new: list[Assign]) -> list[Assign]:
    """One batch that takes the process from the previous patch straight to the new one."""
    from pyhotpatch.runtime._plan import Assign

    batch: dict[tuple[int, str], Assign] = {}
    for a in previous:
        batch.setdefault(a.key, Assign(a.target, a.attr, a.old, a.new))
    for a in new:
        current = batch[a.key].old if a.key in batch else a.old
        batch[a.key] = Assign(a.target, a.attr, a.new, current)
    return [a for a in batch.values() if a.new is not a.old]


def _commit(batch: list[Assign], rebuilds: list[Any]) -> list[Assign]:
    """Write ``batch`` then run ``rebuilds``; on any failure restore every slot and raise."""
    from pyhotpatch.runtime._plan import apply_assigns

    rebuilt: list[Assign] = []
    first: dict[tuple[int, str], Assign] = {}
    try:
        apply_assigns(batch)
        for rebuild in rebuilds:
            made = rebuild.run()
            apply_assigns(made)
            for a in made:
                if a.key in first:
                    # a name rebuilt in steps: undoing it must go back to the value before
                    # the first step, not to what an earlier step bound
                    a.old = first[a.key].old
                else:
                    first[a.key] = a
            rebuilt += made
    except BaseException as exc:
        _restore(rebuilt)
        _restore(batch)
        if isinstance(exc, (ApplyError, BaselineMismatch)):
            raise
        raise ApplyError(f"swap failed and was rolled back: {exc!r}") from exc
    return rebuilt


def _restore(batch: list[Assign]) -> None:
    from pyhotpatch.runtime._plan import MISSING

    for a in reversed(batch):
        try:
            if a.old is MISSING:
                if a.attr in a.target.__dict__:
                    delattr(a.target, a.attr)
            else:
                setattr(a.target, a.attr, a.old)
        except Exception:
            logger().exception("could not restore %r.%s", a.target, a.attr)


def _clear(caches: list[Any]) -> None:
    for cache in caches:
        try:
            cache.cache_clear()
        except Exception:
            logger().exception("could not clear cache %r", cache)


def _check_distribution(distribution: str, version: str, loaded: bool) -> None:
    """Refuse a package for a distribution this process cannot be running at the baseline.

    When target modules are loaded, their live code is checked by fingerprint, which is
    what counts (the files on disk may already be newer than the code in memory). When
    none is, the modules will be imported from disk, so the installed version must be
    the baseline.
    """
    if loaded:
        return
    from importlib import metadata

    try:
        installed = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        raise BaselineMismatch(
            f"distribution {distribution} is not installed in this process's environment"
        ) from None
    if installed != version:
        raise BaselineMismatch(
            f"{distribution} {installed} is installed here; the package is for {distribution} {version}"
        )


ENGINE = Engine()
